"""TypiClust's typicality of the images of one cluster, and the cluster's most typical eligible images.

Pure functions: the same numbers wherever a cluster's members are gathered (the
reference's single shard or the actor that owns the cluster), because the members
always come in id (= uri) order.
"""
from __future__ import annotations

import numpy as np

from raysel.select.blas import map_threads

TYPICALITY_NEIGHBOURS = 20  # the paper's k
ROW_BLOCK = 1024


def typicality(points: np.ndarray, neighbours: int = TYPICALITY_NEIGHBOURS) -> np.ndarray:
    """[n] float64: 1 / mean Euclidean distance to the min(neighbours, n - 1) nearest other points.

    Args:
        points: [n, D] one cluster's vectors.

    Returns:
        typicality per point; 0 when n == 1, inf for a point with k exact duplicates.
    """
    points = np.asarray(points, dtype=np.float64)
    points = points - points.mean(axis=0) if len(points) else points  # centred: less cancellation below
    count = len(points)
    k = min(neighbours, count - 1)
    if k < 1:
        return np.zeros(count)
    norms = (points * points).sum(axis=1)
    mean_distance = np.empty(count)
    for start in range(0, count, ROW_BLOCK):
        block = points[start : start + ROW_BLOCK]
        squared = norms[start : start + len(block), None] - 2.0 * block @ points.T + norms[None, :]
        squared[np.arange(len(block)), np.arange(start, start + len(block))] = np.inf  # not its own neighbour
        nearest = np.sort(np.partition(np.maximum(squared, 0.0), k - 1, axis=1)[:, :k], axis=1)
        mean_distance[start : start + len(block)] = np.sqrt(nearest).mean(axis=1)
    with np.errstate(divide="ignore"):
        return 1.0 / mean_distance


def most_typical(ids: np.ndarray, vectors: np.ndarray, labeled: np.ndarray, count: int) -> list[tuple[float, int]]:
    """The `count` most typical unlabeled members of one cluster as (typicality, id), best first (ties: lowest id).

    Args:
        ids: [n] int64 ascending; vectors: [n, D]; labeled: [n] bool. Typicality is
        measured over all members, labeled ones included.
    """
    scores = typicality(vectors)
    eligible = np.flatnonzero(~labeled)
    order = eligible[np.lexsort((ids[eligible], -scores[eligible]))][:count]
    return [(float(scores[i]), int(ids[i])) for i in order]


def top_of_clusters(
    wanted: dict[int, int], ids: np.ndarray, labels: np.ndarray, vectors: np.ndarray, labeled: np.ndarray, threads: int = 1
) -> dict[int, list[tuple[float, int]]]:
    """`most_typical` of each wanted cluster (cluster -> picks wanted) among the given members.

    Clusters are independent: they are spread over `threads` threads (BLAS held to one), the
    numbers do not change."""
    order = np.lexsort((ids, labels))  # members by cluster, then id; the vectors are gathered per cluster, not sorted whole
    sorted_labels = labels[order]
    starts = np.searchsorted(sorted_labels, np.asarray(sorted(wanted), dtype=np.int64), side="left")
    stops = np.searchsorted(sorted_labels, np.asarray(sorted(wanted), dtype=np.int64), side="right")
    clusters = sorted(wanted)

    def top(position: int) -> list[tuple[float, int]]:
        rows = order[starts[position] : stops[position]]
        return most_typical(ids[rows], vectors[rows], labeled[rows], wanted[clusters[position]])

    return dict(zip(clusters, map_threads(top, range(len(clusters)), threads)))
