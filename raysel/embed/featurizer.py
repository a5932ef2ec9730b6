"""Ray Data model stage: decoded images -> embedding + kept patch features.

`map_batches(Featurizer, compute=ActorPoolStrategy(...), num_gpus=...)`: each
actor loads the backbone once and runs one forward pass per batch (GPU when the
actor has one, else CPU). K-Means runs later on its own actors
(`raysel.cluster.knowledge_clusters`), so this stage ships each image's kept
patches only (a [n_i, D] array per image, by descending attention) in
`kept_features`: ~n_i / P of the padded [P, D] tokens (with tau = 0.5 a ViT-S/16
keeps a few dozen of 196). On a GPU the actor can instead run the batched
K-Means itself (`kmeans=KMeansSettings(...)`) and ship only the [K, D] clusters.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import numpy as np
import torch

from raysel import schema
from raysel.cluster.kmeans import batched_kmeans, image_seed, needs_seeds
from raysel.cluster.knowledge_clusters import KEPT_FEATURES
from raysel.embed.backbone import input_spec, load_backbone
from raysel.embed.knowledge import extract_tokens, normalize_images, pack_kept_patches
from raysel.storage import StorageOptions

# Input column from the decode stage, [B, S, S, 3] uint8 RGB at the model's image size; not passed on.
IMAGE = "image"

FEATURE_DTYPES = {"float16": torch.float16, "float32": torch.float32}
# bfloat16 autocast of the forward pass: "auto" = on CUDA only (CPU autocast is slower than float32 there).
AUTOCAST_MODES = ("auto", "bfloat16", "off")
# `featurize --precision`: None = "auto" above; 'bf16' / 'float32' force one (float32 also ships float32 patches).
PRECISIONS = (None, "bf16", "float32")


@dataclass(frozen=True)
class KMeansSettings:
    """Knowledge-cluster K-Means run inside the model actor (GPU clusters): only [K, D] clusters leave it."""

    clusters: int
    max_iters: int = 100
    tol: float = 1e-4
    init: str = "kmeans++"  # FeaturizeConfig.kmeans_init / kmeans_stop / kmeans_empty
    stop: str = "max-shift"
    empty: str = "keep"
    seed: int = 0


def ragged_rows(values: torch.Tensor, counts: torch.Tensor) -> np.ndarray:
    """[B, P, D] rows packed first + [B] counts -> object array of B arrays [counts[b], D] (copies only the kept rows)."""
    host = values.cpu().numpy()
    rows = np.empty(len(host), dtype=object)
    for index, count in enumerate(counts.tolist()):
        rows[index] = np.ascontiguousarray(host[index, :count])
    return rows


class Featurizer:
    """Callable class for `Dataset.map_batches` on the model actor pool.

    Input columns: `uri`, `image` [B, S, S, 3] uint8 (S = the model's image size),
    and any others (e.g. `error`, `chunk_id`), which pass through; `image` is dropped.
    Output adds `embedding` [B, D] float32, `num_kept_patches` [B] int32 and
    either `kept_features` (`feature_dtype`; each image's kept patches by
    descending attention: an object array of B arrays [n_b, D] when `compact`,
    else [B, P, D] with zeros after the kept rows) or, with `kmeans`, `clusters`
    [B, K, D] float32.
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
        kmeans: KMeansSettings | None = None,
        autocast: str = "auto",
        compact: bool = True,
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
        if precision is not None:
            autocast = "bfloat16" if precision == "bf16" else "off"
        if autocast not in AUTOCAST_MODES:
            raise ValueError(f"autocast must be one of {AUTOCAST_MODES}, got {autocast!r}")
        self.bf16 = autocast == "bfloat16" or (autocast == "auto" and self.device.type == "cuda")
        self.autocast_dtype = torch.bfloat16 if self.bf16 else None
        self.kmeans = kmeans
        self.compact = compact

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = np.asarray(batch[IMAGE])
        size = self.spec.image_size
        if images.ndim != 4 or images.shape[1:] != (size, size, 3) or images.dtype != np.uint8:
            raise ValueError(f"'{IMAGE}' must be [B, {size}, {size}, 3] uint8, got {images.shape} {images.dtype}")
        # Class-token attention and tau stay float32 inside (knowledge.class_token_attention).
        autocast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        )
        with torch.inference_mode():
            with autocast:
                pixels = torch.from_numpy(np.require(images, requirements=["C", "W"])).to(self.device, non_blocking=True)  # Ray hands read-only arrays
                tokens = extract_tokens(self.model, normalize_images(pixels, self.spec.mean, self.spec.std))
                kept_features, num_kept = pack_kept_patches(tokens.patch_features, tokens.cls_attention, self.tau)
            kept_features = kept_features.to(self.feature_dtype)
            out = {key: value for key, value in batch.items() if key != IMAGE}
            out[schema.EMBEDDING] = tokens.embedding.float().cpu().numpy()
            out[schema.NUM_KEPT_PATCHES] = num_kept.to(torch.int32).cpu().numpy()
            if self.kmeans is not None:
                # The clusters are computed where the patches are; only [B, K, D] leaves the actor.
                mask = torch.arange(kept_features.shape[1], device=self.device)[None, :] < num_kept[:, None]
                rule = self.kmeans
                seeds = None
                if needs_seeds(rule.init, rule.empty):  # random draws come from each image's uri and --seed
                    seeds = [image_seed(str(uri), rule.seed) for uri in batch[schema.URI]]
                centers = batched_kmeans(
                    kept_features, mask, rule.clusters, rule.max_iters, rule.tol,
                    init=rule.init, stop=rule.stop, empty=rule.empty, seeds=seeds,
                )
                out[schema.CLUSTERS] = centers.cpu().numpy()
            elif self.compact:
                out[KEPT_FEATURES] = ragged_rows(kept_features, num_kept)
            else:
                out[KEPT_FEATURES] = kept_features.cpu().numpy()
        return out
