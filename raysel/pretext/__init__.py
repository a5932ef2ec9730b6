"""PT4AL's pretext task: a rotation-prediction model trained on the unlabeled pool, and per-image losses.

- `rotation`: the model (any timm backbone + a 4-way head) and the loss; pure torch.
- `checkpoints`: epoch checkpoints and the trained model file (weights_only torch files).
- `data`: the pool as Ray Data rows (list_images + DecodeBatch, as featurize reads it); torch-free.
- `training`: `train_pretext`, data-parallel on Ray Train (`raysel pretext train`).
- `scorer`: `PretextScorer`, the Ray Data stage behind `raysel featurize --pretext MODEL`.

Names are imported on first use, so Ray Data tasks that only need `data` do not import torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ROTATIONS": "rotation",
    "PretextError": "rotation",
    "RotationNet": "rotation",
    "build_rotation_net": "rotation",
    "rotated_views": "rotation",
    "load_model": "checkpoints",
    "PretextScorer": "scorer",
    "PretextSummary": "training",
    "train_pretext": "training",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'raysel.pretext' has no attribute {name!r}")
    return getattr(importlib.import_module(f"raysel.pretext.{_EXPORTS[name]}"), name)
