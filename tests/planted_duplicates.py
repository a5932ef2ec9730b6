"""Embeddings with planted near-duplicate groups (tests and benchmarks/bench_dedup.py).

Scenes: unit vectors around a few hundred "topics" (so K-Means has structure to find, as real
embeddings do); each planted group is a scene plus copies within a small angle of it (bursts,
re-encodes). Everything else is far from everything at the thresholds used (cosine ~0.5-0.8).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa


def planted_pool(images: int, dim: int, groups: int, copies: int, seed: int = 0,
                 copy_noise: float = 0.02, topics: int = 256, spread: float = 0.08) -> tuple[pa.Table, dict[str, int]]:
    """(store table uri + embedding [images, dim] float32, {uri: planted group id} of the grouped images).

    `groups` scenes get `copies` extra copies each (so groups x (copies + 1) images are grouped).
    """
    rng = np.random.default_rng(seed)
    topic_centers = rng.standard_normal((topics, dim)).astype(np.float32)
    topic_centers /= np.linalg.norm(topic_centers, axis=1, keepdims=True)
    scenes = images - groups * copies
    vectors = np.empty((images, dim), np.float32)
    topic_of = rng.integers(topics, size=scenes)
    for start in range(0, scenes, 65536):
        stop = min(scenes, start + 65536)
        part = topic_centers[topic_of[start:stop]] + spread * rng.standard_normal((stop - start, dim)).astype(np.float32)
        vectors[start:stop] = part / np.linalg.norm(part, axis=1, keepdims=True)
    group_of: dict[int, int] = {}
    row = scenes
    for group in range(groups):
        scene = group * (scenes // max(groups, 1))
        group_of[scene] = group
        for _ in range(copies):
            noisy = vectors[scene] + copy_noise * rng.standard_normal(dim).astype(np.float32)
            vectors[row] = noisy / np.linalg.norm(noisy)
            group_of[row] = group
            row += 1
    order = rng.permutation(images)  # copies are not next to their scene in the store
    uris = [f"/pool/img-{i:08d}.jpg" for i in range(images)]
    table = pa.table({
        "uri": pa.array([uris[i] for i in order], pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors[order].reshape(-1)), dim),
    })
    planted = {uris[i]: group for i, group in group_of.items()}
    return table, planted
