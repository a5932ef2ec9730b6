"""Sparse delta-ball neighbourhoods with faiss (exact, brute force, float32 distances).

`ball_neighbours` returns, for every point, the other points closer than delta
(strictly), as CSR arrays: memory O(edges), never N x N. The graph is made
symmetric by construction: each pair is found once (from its lower row) and
stored in both directions, so rounding cannot make y a neighbour of x but not x of y.
"""
from __future__ import annotations

import faiss
import numpy as np

QUERY_BLOCK = 4096  # query rows per faiss call: bounds the transient result size


def ball_neighbours(vectors: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Neighbours within Euclidean distance < delta, the point itself left out.

    Args:
        vectors: [N, D] float.
        delta: the ball radius, > 0.

    Returns:
        indptr [N + 1] int64 and indices [edges] (int32 below 2^31 points): the neighbours of
        row i are indices[indptr[i]:indptr[i + 1]], ascending.
    """
    points = np.ascontiguousarray(vectors, dtype=np.float32)
    count = len(points)
    index = faiss.IndexFlatL2(points.shape[1])
    index.add(points)
    index_dtype = np.int32 if count < 2**31 else np.int64
    sources, targets = [], []
    for start in range(0, count, QUERY_BLOCK):
        lims, _, found = index.range_search(points[start : start + QUERY_BLOCK], float(delta) ** 2)
        rows = np.repeat(np.arange(start, start + len(lims) - 1, dtype=np.int64), np.diff(lims.astype(np.int64)))
        upper = found > rows  # each pair once, from its lower row; drops the point itself
        sources.append(rows[upper].astype(index_dtype))
        targets.append(found[upper].astype(index_dtype))
    source = np.concatenate([np.concatenate(sources), np.concatenate(targets)]) if sources else np.zeros(0, index_dtype)
    target = np.concatenate([np.concatenate(targets), np.concatenate(sources)]) if sources else np.zeros(0, index_dtype)
    order = np.lexsort((target, source))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(source, minlength=count))]).astype(np.int64)
    return indptr, target[order]


def gather(indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The neighbour lists of `rows`, concatenated."""
    rows = np.asarray(rows, dtype=np.int64)
    lengths = indptr[rows + 1] - indptr[rows]
    if not len(rows) or not lengths.sum():
        return np.zeros(0, dtype=indices.dtype)
    offsets = np.repeat(indptr[rows] - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
    return indices[offsets]


def distance_to_other_cluster(vectors: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """[N] float64 Euclidean distance from each point to the nearest point of another cluster (inf: none)."""
    points = np.ascontiguousarray(vectors, dtype=np.float32)
    labels = np.asarray(labels)
    distance = np.full(len(points), np.inf)
    for cluster in np.unique(labels):
        inside = labels == cluster
        if inside.all():
            continue
        index = faiss.IndexFlatL2(points.shape[1])
        index.add(points[~inside])
        squared, _ = index.search(points[inside], 1)
        distance[inside] = np.sqrt(np.maximum(squared[:, 0].astype(np.float64), 0.0))
    return distance
