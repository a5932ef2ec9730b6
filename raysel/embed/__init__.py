"""The model side of GEAL: backbone loading, per-image tokens and attention, the Ray Data model stage."""
from __future__ import annotations

from raysel.embed.backbone import BackboneError, InputSpec, input_spec, load_backbone
from raysel.embed.knowledge import (
    TokenOutputs,
    extract_tokens,
    kept_patch_mask,
    kept_patch_order,
    normalize_images,
    pack_kept_patches,
)

__all__ = [
    "BackboneError",
    "InputSpec",
    "TokenOutputs",
    "extract_tokens",
    "input_spec",
    "kept_patch_mask",
    "kept_patch_order",
    "load_backbone",
    "normalize_images",
    "pack_kept_patches",
]
