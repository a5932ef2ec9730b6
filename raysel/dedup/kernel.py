"""The math of near-duplicate removal, on numpy arrays (no Ray): shared by the actors and the reference.

Vectors are L2-normalized float32 embeddings. Similarities are float32 dot products computed
block by block with shapes that depend only on the data (a store file's rows from its start, a
cluster's members sorted by uri), so the distributed run and the single-process reference do the
same floating-point operations and agree bit for bit.

Spherical K-Means step (per store file): each row goes to the center of largest dot product (ties:
the lowest center index); the file returns its per-center sums (float64, in row order) and counts;
the driver adds the files' sums in file order and normalizes them into the new centers (a center
without rows stays where it is).

Duplicates inside one cluster: rows i, j are linked when cos(i, j) >= threshold - SIMILARITY_SLACK;
each connected group keeps the member most similar to the cluster's centroid (ties: the smallest
uri); every other member is removed as a duplicate of it.
"""
from __future__ import annotations

import numpy as np

from raysel.dedup.errors import DedupError

ROW_BLOCK = 8192  # rows per matmul in the assignment step
PAIR_BLOCK_ELEMENTS = 1 << 24  # similarities held at a time inside one cluster (64 MB of float32)
SIMILARITY_SLACK = 1e-6  # float32 rounding: identical vectors give 0.9999999, still duplicates at threshold 1


def normalized(vectors: np.ndarray, uris: list[str]) -> np.ndarray:
    """[n, D] float32 rows scaled to unit length; DedupError naming a non-finite or zero row."""
    vectors = np.asarray(vectors, dtype=np.float32)
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        raise DedupError(f"embedding of {uris[int(np.argmin(finite))]} has NaN or infinite values")
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
    if (norms == 0).any():
        raise DedupError(f"embedding of {uris[int(np.argmin(norms))]} is all zeros: it has no direction (cosine)")
    return (vectors / norms[:, None]).astype(np.float32)


def assign(vectors: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """([n] int64 nearest center by cosine, [n] float32 its similarity) for unit `vectors` [n, D], `centers` [k, D]."""
    labels = np.empty(len(vectors), dtype=np.int64)
    similarity = np.empty(len(vectors), dtype=np.float32)
    centers_t = np.ascontiguousarray(centers.T, dtype=np.float32)
    for start in range(0, len(vectors), ROW_BLOCK):
        block = vectors[start:start + ROW_BLOCK] @ centers_t
        best = block.argmax(axis=1)
        labels[start:start + ROW_BLOCK] = best
        similarity[start:start + ROW_BLOCK] = block[np.arange(len(block)), best]
    return labels, similarity


def center_sums(vectors: np.ndarray, labels: np.ndarray, clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """([k, D] float64 sum of each center's rows, [k] int64 counts), rows added in order."""
    sums = np.zeros((clusters, vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, vectors.astype(np.float64))
    return sums, np.bincount(labels, minlength=clusters).astype(np.int64)


def next_centers(centers: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """[k, D] float32: the normalized sums; a center without rows (or a zero sum) stays."""
    norms = np.linalg.norm(sums, axis=1)
    moved = (counts > 0) & (norms > 0)
    updated = centers.astype(np.float64).copy()
    updated[moved] = sums[moved] / norms[moved, None]
    return updated.astype(np.float32)


def initial_rows(total: int, clusters: int, seed: int) -> np.ndarray:
    """[k] sorted distinct global row indices whose vectors start the K-Means (seeded, uniform)."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(total, size=clusters, replace=False))


def _find(parent: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    roots = parent[nodes]
    while True:
        up = parent[roots]
        if np.array_equal(up, roots):
            return roots
        roots = up


def _union(parent: np.ndarray, left: np.ndarray, right: np.ndarray) -> None:
    """Merge the groups of each pair (left[e], right[e]); roots are the smallest member index."""
    while len(left):
        a, b = _find(parent, left), _find(parent, right)
        differ = a != b
        if not differ.any():
            return
        low, high = np.minimum(a, b)[differ], np.maximum(a, b)[differ]
        np.minimum.at(parent, high, low)
        left, right = left[differ], right[differ]


def cluster_duplicates(
    uris: list[str], vectors: np.ndarray, centroid_similarity: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Duplicate groups of one cluster.

    Args:
        uris: [m] the members, sorted.
        vectors: [m, D] float32 unit vectors, in that order.
        centroid_similarity: [m] float32 cosine of each member to its cluster centroid.
        threshold: cosine in (0, 1].

    Returns:
        (removed [r] int64 member indices, kept [r] int64 index of the member each duplicates),
        removed in increasing order.
    """
    count = len(uris)
    if count < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    parent = np.arange(count, dtype=np.int64)
    cutoff = np.float32(threshold - SIMILARITY_SLACK)
    rows = max(1, min(count, PAIR_BLOCK_ELEMENTS // count))
    transposed = np.ascontiguousarray(vectors.T)
    for start in range(0, count, rows):
        block = vectors[start:start + rows] @ transposed  # [rows, m]
        local, other = np.nonzero(block >= cutoff)
        first = local + start
        later = other > first  # each pair once, no self pairs
        _union(parent, first[later], other[later])
    roots = _find(parent, np.arange(count))
    sizes = np.bincount(roots, minlength=count)
    if (sizes > 1).sum() == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    # keeper of each group: largest centroid similarity, then smallest index (= smallest uri)
    order = np.lexsort((np.arange(count), -centroid_similarity.astype(np.float64), roots))
    first_of_group = np.ones(count, dtype=bool)
    first_of_group[1:] = roots[order][1:] != roots[order][:-1]
    keeper = np.empty(count, dtype=np.int64)
    keeper[roots[order][first_of_group]] = order[first_of_group]
    kept_of = keeper[roots]
    removed = np.nonzero((sizes[roots] > 1) & (kept_of != np.arange(count)))[0]
    return removed.astype(np.int64), kept_of[removed]
