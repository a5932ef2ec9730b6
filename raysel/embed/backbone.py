"""Loading the ViT backbone (timm) and the image size and normalisation it expects.

GEAL needs a ViT with a class token: the class token's attention picks the
patches worth keeping. Weights come from the timm hub (the default), from a
checkpoint file (local or s3://, read with `weights_only=True` so a checkpoint
cannot run code), or from a seeded random init (tests, benchmarks). A missing
hub is never silently replaced by random weights.
"""
from __future__ import annotations

import io
import os
import pickle
import socket
import urllib.parse
from dataclasses import dataclass
from typing import Any

import timm
import torch
from timm.models.vision_transformer import VisionTransformer

from raysel import storage
from raysel.storage import StorageOptions


class BackboneError(ValueError):
    """A model that cannot be used: unknown, not a class-token ViT, or weights that cannot be loaded."""


@dataclass(frozen=True)
class InputSpec:
    """What the model expects: square RGB images of `image_size` pixels, scaled to 0..1, then `mean` / `std`."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def load_backbone(
    model_name: str,
    weights: str | None = None,
    random_init: bool = False,
    options: StorageOptions | None = None,
    seed: int = 0,
) -> VisionTransformer:
    """A timm ViT in eval mode, on the CPU, with gradients off.

    Args:
        model_name: timm model name, e.g. "vit_small_patch16_224.dino".
        weights: checkpoint to load instead of the hub's weights: a local path or
            s3:// URI holding a state_dict, bare or under "model" / "state_dict".
        random_init: use randomly initialised weights (seeded by `seed`, so every
            model actor builds the same network).
        options: how to reach s3:// for `weights`.
        seed: seed of the random init.

    Raises:
        BackboneError: unknown name, not a ViT with a class token, unreachable hub,
            or weights that are unsafe, unreadable or do not fit the model.
    """
    if weights is not None and random_init:
        raise BackboneError("pass either --weights or --random-init, not both")
    if not timm.is_model(model_name):
        raise BackboneError(
            f"unknown timm model {model_name!r}; list the available ones with timm.list_models('vit_*')"
        )
    # Check the architecture on the meta device first: free, and before any download.
    with torch.device("meta"):
        check_vit(timm.create_model(model_name, pretrained=False), model_name)

    if weights is None and not random_init:
        model = _from_hub(model_name)
    else:
        # Seeding a private RNG stream keeps the caller's global RNG untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = timm.create_model(model_name, pretrained=False)
        if weights is not None:
            _load_weights(model, weights, options)
    model.eval()
    model.requires_grad_(False)
    return model


def check_vit(model: torch.nn.Module, model_name: str = "") -> None:
    """Raise BackboneError unless `model` is a timm VisionTransformer whose class-token attention we can read."""
    name = model_name or type(model).__name__
    if not isinstance(model, VisionTransformer):
        raise BackboneError(
            f"{name} is a {type(model).__name__}, not a timm VisionTransformer: GEAL needs a ViT with a class "
            "token (e.g. vit_small_patch16_224.dino)"
        )
    if model.cls_token is None:
        raise BackboneError(f"{name} has no class token: GEAL ranks patches by the class token's attention")
    if len(model.blocks) < 2:
        raise BackboneError(f"{name} has {len(model.blocks)} block(s): GEAL reads the second-to-last block")
    last_block = model.blocks[-1]
    attention = getattr(last_block, "attn", None)
    attention_parts = ("qkv", "num_heads", "head_dim", "scale", "q_norm", "k_norm")
    if not hasattr(last_block, "norm1") or not all(hasattr(attention, part) for part in attention_parts):
        raise BackboneError(
            f"{name}: the last block has no standard timm Attention (norm1 + fused qkv projection), "
            "so its class-token attention cannot be read"
        )


def input_spec(model: torch.nn.Module) -> InputSpec:
    """Image size and normalisation from the model's pretrained config (timm's data config)."""
    data_config = timm.data.resolve_model_data_config(model)
    _, height, width = data_config["input_size"]
    if height != width:
        raise BackboneError(f"raysel resizes to square images; the model expects {height}x{width}")
    return InputSpec(
        image_size=int(height),
        mean=tuple(float(v) for v in data_config["mean"]),
        std=tuple(float(v) for v in data_config["std"]),
    )


def _from_hub(model_name: str) -> VisionTransformer:
    import huggingface_hub.constants as hub_constants

    # huggingface_hub retries an unreachable host 5 times with backoff (~45 s).
    # Without a route to the hub, ask it for its local cache only: cached
    # weights still load, anything else fails at once with our message.
    offline = hub_constants.HF_HUB_OFFLINE or not _hub_reachable(hub_constants.ENDPOINT)
    previous, hub_constants.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE, offline
    try:
        return timm.create_model(model_name, pretrained=True)
    except Exception as exc:  # hub errors come in many types (HTTP, offline mode, missing file)
        raise BackboneError(
            f"could not get the pretrained weights of {model_name!r} from the timm / Hugging Face hub "
            f"({'unreachable from here' if offline else 'download failed'}, and not in the local cache): "
            f"{type(exc).__name__}: {exc}. "
            "Pass --weights PATH_OR_S3_URI with a saved state_dict, or --random-init for random weights."
        ) from exc
    finally:
        hub_constants.HF_HUB_OFFLINE = previous


def _hub_reachable(endpoint: str, timeout_s: float = 3.0) -> bool:
    """Whether a TCP connection to the hub opens; assumed True behind a proxy, which we cannot probe."""
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urllib.parse.urlsplit(endpoint)
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _load_weights(model: torch.nn.Module, weights: str, options: StorageOptions | None) -> None:
    try:
        data = storage.read_bytes(weights, options)
    except FileNotFoundError as exc:
        raise BackboneError(f"weights file {weights} does not exist") from exc
    except OSError as exc:
        raise BackboneError(f"cannot read weights {weights}: {exc}") from exc
    try:
        checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch reports both unsafe objects and non-pickle bytes this way; its
        # message is long, so keep only the line that names the problem.
        reason = next((line for line in str(exc).splitlines() if "Unsupported" in line), str(exc).splitlines()[0])
        if "Unsupported global" in reason:
            raise BackboneError(
                f"refusing to load {weights}: it holds objects other than tensors and plain containers "
                f"({reason.strip()}), and raysel loads checkpoints with torch.load(weights_only=True) so that "
                "a file cannot run code. Re-save it with torch.save(model.state_dict(), path)."
            ) from exc
        raise BackboneError(f"{weights} is not a torch checkpoint: {reason.strip()}") from exc
    except Exception as exc:
        raise BackboneError(f"{weights} is not a torch checkpoint: {type(exc).__name__}: {exc}") from exc

    state_dict = _state_dict_of(checkpoint, weights)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong_shape = [
        f"{key}: checkpoint {tuple(state_dict[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in sorted(set(expected) & set(state_dict))
        if tuple(state_dict[key].shape) != tuple(expected[key].shape)
    ]
    if missing or unexpected or wrong_shape:
        problems = []
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong_shape)):
            if keys:
                shown = ", ".join(keys[:10]) + (f", ... ({len(keys)} in all)" if len(keys) > 10 else "")
                problems.append(f"{label}: {shown}")
        raise BackboneError(f"weights {weights} do not fit the model: " + "; ".join(problems))
    model.load_state_dict(state_dict, strict=True)


def _state_dict_of(checkpoint: Any, weights: str) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint: a bare state_dict, or one nested under "model" or "state_dict"."""
    if isinstance(checkpoint, dict):
        for key in ("model", "state_dict"):
            if isinstance(checkpoint.get(key), dict):
                checkpoint = checkpoint[key]
                break
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise BackboneError(
            f"{weights} is not a state_dict (a dict of tensors, bare or under 'model' / 'state_dict')"
        )
    return checkpoint
