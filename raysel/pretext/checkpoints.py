"""Files of a pretext run: epoch checkpoints and the trained model (local or s3://).

Everything is a dict of tensors and plain values, saved with `torch.save` and
read with `torch.load(weights_only=True)`, so a file cannot run code.

The trained model file (`raysel pretext train --out MODEL`):

    {
      "model": state_dict of `timm.create_model(name)`: the trained backbone; the
               model's default classifier (if it has one) is zeros, it was never trained.
               `raysel featurize --model NAME --weights MODEL` loads this entry.
      "rotation_head": {"weight": [4, F], "bias": [4]},
      "pretext": {"format", "model_name", "image_size", "mean", "std", "epochs",
                  "history", "identity", "featurize_compatible", ...},
    }

An epoch checkpoint (`CHECKPOINTS/epoch-000003.pt`, 3 epochs done) holds
`backbone`, `rotation_head`, `optimizer`, `epoch`, `history`, `identity`.
"""
from __future__ import annotations

import io
import os
import pickle
from typing import Any

import timm
import torch

from raysel import storage
from raysel.embed.backbone import InputSpec
from raysel.pretext.rotation import PretextError, RotationNet, create_backbone, feature_dim
from raysel.storage import StorageOptions

MODEL_FORMAT = "raysel-pretext-model-v1"
CHECKPOINT_FORMAT = "raysel-pretext-checkpoint-v1"
CHECKPOINT_PREFIX = "epoch-"
IDENTITY_FILE = "_identity.json"  # what the checkpoints in a directory were trained with


def absolute_uri(uri: str) -> str:
    """s3:// URIs as they are; local paths made absolute (Ray workers run in other directories)."""
    if storage.is_s3(uri) or ("://" in uri and not uri.startswith("file://")):
        return uri
    return os.path.abspath(os.path.expanduser(uri[len("file://") :] if uri.startswith("file://") else uri))


def save(payload: dict[str, Any], uri: str, options: StorageOptions | None = None) -> None:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    storage.write_bytes_atomic(uri, buffer.getvalue(), options)


def load(uri: str, options: StorageOptions | None = None) -> dict[str, Any]:
    """A torch file read with weights_only=True; PretextError naming the problem otherwise."""
    try:
        data = storage.read_bytes(uri, options)
    except FileNotFoundError as exc:
        raise PretextError(f"{uri} does not exist") from exc
    except OSError as exc:
        raise PretextError(f"cannot read {uri}: {exc}") from exc
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise PretextError(
            f"refusing to load {uri}: it holds objects other than tensors and plain containers "
            f"(raysel only loads torch.load(weights_only=True) files) ({exc})"
        ) from exc
    except Exception as exc:
        raise PretextError(f"{uri} is not a torch file: {type(exc).__name__}: {exc}") from exc
    if not isinstance(payload, dict):
        raise PretextError(f"{uri} holds a {type(payload).__name__}, not a raysel pretext file")
    return payload


# --- epoch checkpoints ---
def checkpoint_name(epochs_done: int) -> str:
    return f"{CHECKPOINT_PREFIX}{epochs_done:06d}.pt"


def checkpoint_uris(directory: str, options: StorageOptions | None = None) -> list[str]:
    """Epoch checkpoints under `directory`, oldest first."""
    names = storage.list_files(directory, options, suffix=".pt")
    return [u for u in names if u.rsplit("/", 1)[-1].startswith(CHECKPOINT_PREFIX)]


def epochs_of(checkpoint_uri: str) -> int:
    return int(checkpoint_uri.rsplit("/", 1)[-1][len(CHECKPOINT_PREFIX) : -len(".pt")])


def prune_checkpoints(directory: str, keep: int, options: StorageOptions | None = None) -> None:
    for uri in checkpoint_uris(directory, options)[:-keep]:
        fs, path = storage.filesystem(uri, options)
        fs.rm(path)


# --- the trained model ---
def export_model(net: RotationNet, model_name: str, spec: InputSpec, meta: dict[str, Any]) -> dict[str, Any]:
    """The model file's payload: backbone in the layout of `timm.create_model(model_name)`, head, metadata."""
    with torch.device("meta"):
        default = timm.create_model(model_name, pretrained=False).state_dict()
    trained = {k: v.detach().cpu().clone() for k, v in net.backbone.state_dict().items()}
    compatible = True
    model_state: dict[str, torch.Tensor] = {}
    for key, reference in default.items():
        if key in trained:
            model_state[key] = trained.pop(key)
            compatible &= tuple(model_state[key].shape) == tuple(reference.shape)
        else:  # the default classifier, absent from the headless backbone
            model_state[key] = torch.zeros(reference.shape, dtype=reference.dtype)
    model_state.update(trained)  # keys only the headless model has (none for timm models we know)
    compatible &= not trained
    return {
        "model": model_state,
        "rotation_head": {k: v.detach().cpu().clone() for k, v in net.head.state_dict().items()},
        "pretext": {
            **meta,
            "format": MODEL_FORMAT,
            "model_name": model_name,
            "image_size": spec.image_size,
            "mean": list(spec.mean),
            "std": list(spec.std),
            "featurize_compatible": bool(compatible),
        },
    }


def load_model(uri: str, options: StorageOptions | None = None) -> tuple[RotationNet, InputSpec, dict[str, Any]]:
    """A trained pretext model file -> (RotationNet in eval mode on the CPU, its input spec, its metadata)."""
    payload = load(uri, options)
    meta = payload.get("pretext")
    if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
        raise PretextError(
            f"{uri} is not a raysel pretext model (train one with `raysel pretext train SOURCE --out MODEL`)"
        )
    backbone = create_backbone(meta["model_name"], int(meta["image_size"]))
    expected = backbone.state_dict()
    state = {k: v for k, v in payload["model"].items() if k in expected}
    missing = sorted(set(expected) - set(state))
    if missing:
        raise PretextError(f"{uri}: the backbone weights lack {missing[:10]}")
    try:
        backbone.load_state_dict(state, strict=True)
        net = RotationNet(backbone, feature_dim(backbone))
        net.head.load_state_dict(payload["rotation_head"], strict=True)
    except RuntimeError as exc:
        raise PretextError(f"{uri} does not fit {meta['model_name']}: {exc}") from exc
    net.eval()
    net.requires_grad_(False)
    spec = InputSpec(image_size=int(meta["image_size"]), mean=tuple(meta["mean"]), std=tuple(meta["std"]))
    return net, spec, meta
