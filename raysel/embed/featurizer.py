"""Ray Data model stage: decoded images -> embedding + kept patch features.

`map_batches(Featurizer, compute=ActorPoolStrategy(...), num_gpus=...)`: each
actor loads the backbone once and runs one forward pass per batch (GPU when the
actor has one, else CPU). K-Means runs later on its own actors
(`raysel.cluster.knowledge_clusters`), so this stage ships each image's kept
patches, packed first, in `kept_features`.
"""
from __future__ import annotations

import contextlib
import os

import numpy as np
import torch

from raysel import schema
from raysel.cluster.knowledge_clusters import KEPT_FEATURES
from raysel.embed.backbone import input_spec, load_backbone
from raysel.embed.knowledge import extract_tokens, normalize_images, pack_kept_patches
from raysel.storage import StorageOptions

# Input column from the decode stage, [B, S, S, 3] uint8 RGB at the model's image size; not passed on.
IMAGE = "image"

FEATURE_DTYPES = {"float16": torch.float16, "float32": torch.float32}
# None: bfloat16 autocast on GPU, float32 on CPU (CPU autocast is slower); 'bf16' / 'float32' force one.
PRECISIONS = (None, "bf16", "float32")


class Featurizer:
    """Callable class for `Dataset.map_batches` on the model actor pool.

    Input columns: `uri`, `image` [B, S, S, 3] uint8 (S = the model's image size),
    and any others (e.g. `error`, `chunk_id`), which pass through; `image` is dropped.
    Output adds `embedding` [B, D] float32, `kept_features` [B, P, D]
    (`feature_dtype`: each image's kept patches by descending attention, zeros
    after) and `num_kept_patches` [B] int32.
    """

    def __init__(
        self,
        model_name: str,
        weights: str | None,
        random_init: bool,
        tau: float,
        storage_options: StorageOptions,
        feature_dtype: str = "float16",
        seed: int = 0,
        torch_threads: int | None = None,
        precision: str | None = None,
    ):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS[1:]} or None, got {precision!r}")
        if precision == "float32":
            feature_dtype = "float32"  # float32 end to end, as the released code: no float16 hop to K-Means
        if feature_dtype not in FEATURE_DTYPES:
            raise ValueError(f"feature_dtype must be one of {sorted(FEATURE_DTYPES)}, got {feature_dtype!r}")
        if not 0.0 < tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1], got {tau}")
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.type == "cpu":
            # Ray pins OMP_NUM_THREADS to the actor's num_cpus (1); a CPU model actor is the
            # node's main consumer, and decode tasks are light, so let torch use the cores.
            torch.set_num_threads(torch_threads or os.cpu_count() or 1)
        self.model = load_backbone(model_name, weights, random_init, storage_options, seed=seed).to(self.device)
        self.spec = input_spec(self.model)
        self.tau = tau
        self.feature_dtype = FEATURE_DTYPES[feature_dtype]
        self.autocast_dtype = torch.bfloat16 if self.device.type == "cuda" and precision != "float32" else None
        if precision == "bf16" and self.device.type == "cpu":
            self.autocast_dtype = torch.bfloat16  # asked for: the numbers of a GPU run, slower on CPU

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = np.asarray(batch[IMAGE])
        size = self.spec.image_size
        if images.ndim != 4 or images.shape[1:] != (size, size, 3) or images.dtype != np.uint8:
            raise ValueError(f"'{IMAGE}' must be [B, {size}, {size}, 3] uint8, got {images.shape} {images.dtype}")
        autocast = (
            torch.autocast(self.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            pixels = torch.from_numpy(np.require(images, requirements=["C", "W"])).to(self.device, non_blocking=True)  # Ray hands read-only arrays
            tokens = extract_tokens(self.model, normalize_images(pixels, self.spec.mean, self.spec.std))
            kept_features, num_kept = pack_kept_patches(tokens.patch_features, tokens.cls_attention, self.tau)
        out = {key: value for key, value in batch.items() if key != IMAGE}
        out[schema.EMBEDDING] = tokens.embedding.float().cpu().numpy()
        out[KEPT_FEATURES] = kept_features.to(self.feature_dtype).cpu().numpy()
        out[schema.NUM_KEPT_PATCHES] = num_kept.to(torch.int32).cpu().numpy()
        return out
