"""Ray Data stage: kept patch features -> knowledge clusters (K-Means per image, a batch at a time).

Runs on its own actor pool after the model stage (`map_batches(KnowledgeClusterer,
compute=ActorPoolStrategy(...))`), so the GPU never waits on K-Means. The math
is `raysel.cluster.kmeans.batched_kmeans`; this class only converts columns.
"""
from __future__ import annotations

import numpy as np
import torch

from raysel import schema
from raysel.cluster.kmeans import batched_kmeans, image_seed, needs_seeds

# Intermediate column between the model stage and this one; never stored.
# [B, P, D] float16/float32: each image's kept patches first, zero padding after.
KEPT_FEATURES = "kept_features"

# Images per K-Means group on a CPU: a group's points then stay in cache, and
# count-sorted groups pad less. ~1.5x faster than one 256-image group on a
# 2-core machine (benchmarks/results/kmeans.md). GPUs take the batch whole.
CPU_GROUP_SIZE = 64


class KnowledgeClusterer:
    """Callable class for `Dataset.map_batches`: adds `clusters`, drops `kept_features`.

    Input columns: `uri`, `embedding` [B, D] float32, `kept_features` ([B, P, D]
    padded, or B arrays [n_b, D] of the kept patches only, as the Featurizer ships them),
    `num_kept_patches` [B] int32, and any others (e.g. `pretext_loss`, `error`),
    which pass through unchanged.
    Output: the same columns without `kept_features`, plus `clusters` [B, K, D]
    float32, each image's K knowledge clusters (see `batched_kmeans` for images
    with fewer than K kept patches).
    """

    def __init__(
        self,
        clusters: int,
        max_iters: int,
        tol: float,
        group_size: int | None = None,
        init: str = "kmeans++",  # featurize's default (FeaturizeConfig.kmeans_init)
        stop: str = "max-shift",
        empty: str = "keep",
        seed: int = 0,
    ):
        if clusters < 1:
            raise ValueError(f"clusters must be >= 1, got {clusters}")
        self.clusters = clusters
        self.max_iters = max_iters
        self.tol = tol
        # Random draws (init random / kmeans++, empty reseed) come from each image's uri and `seed`.
        self.init, self.stop, self.empty, self.seed = init, stop, empty, seed
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if group_size is None and self.device.type == "cpu":
            group_size = CPU_GROUP_SIZE
        self.group_size = group_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        num_kept = np.asarray(batch[schema.NUM_KEPT_PATCHES]).astype(np.int64)
        kept_features = padded_kept_features(batch[KEPT_FEATURES], num_kept)
        if kept_features.ndim != 3 or num_kept.shape != kept_features.shape[:1]:
            raise ValueError(
                f"expected {KEPT_FEATURES} [B, P, D] and {schema.NUM_KEPT_PATCHES} [B]; "
                f"got {kept_features.shape} and {num_kept.shape}"
            )
        if len(num_kept) and (num_kept.min() < 0 or num_kept.max() > kept_features.shape[1]):
            raise ValueError(f"{schema.NUM_KEPT_PATCHES} must be in 0..{kept_features.shape[1]}")
        points = torch.from_numpy(np.ascontiguousarray(kept_features)).to(self.device)
        counts = torch.from_numpy(num_kept).to(self.device)
        mask = torch.arange(points.shape[1], device=self.device)[None, :] < counts[:, None]
        seeds = None
        if needs_seeds(self.init, self.empty):
            seeds = [image_seed(str(uri), self.seed) for uri in batch[schema.URI]]
        centers = batched_kmeans(
            points, mask, self.clusters, self.max_iters, self.tol, group_size=self.group_size,
            init=self.init, stop=self.stop, empty=self.empty, seeds=seeds,
        )
        out = {key: value for key, value in batch.items() if key != KEPT_FEATURES}
        out[schema.CLUSTERS] = centers.cpu().numpy()
        return out


def padded_kept_features(column, num_kept: np.ndarray) -> np.ndarray:
    """`kept_features` as [B, W, D], padded with zeros: a dense array as is, ragged rows [n_b, D] packed.

    Ray Data hands ragged rows as an object array of arrays (or as one dense
    array when every row of a batch has the same length).
    """
    if isinstance(column, np.ndarray) and column.dtype != object:
        return column
    rows = [np.asarray(row) for row in column]
    if not rows:
        return np.zeros((0, 1, 1), dtype=np.float16)
    dim = next((r.shape[-1] for r in rows if r.ndim == 2), 1)
    width = max([int(r.shape[0]) for r in rows] + [1])
    dense = np.zeros((len(rows), width, dim), dtype=rows[0].dtype)
    for index, row in enumerate(rows):
        if row.ndim != 2 or row.shape[1] != dim or row.shape[0] != num_kept[index]:
            raise ValueError(
                f"{KEPT_FEATURES} row {index} has shape {row.shape}; expected [{int(num_kept[index])}, {dim}]"
            )
        dense[index, : row.shape[0]] = row
    return dense
