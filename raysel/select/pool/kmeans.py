"""Seeded Euclidean K-Means over a whole pool of embeddings (typiclust's clusters, probcover's purity rule).

- init: greedy k-means++ as in scikit-learn: the first center uniformly at random;
  for each next one, 2 + ln(k) candidates are drawn with probability proportional to
  the squared distance to the nearest center so far, and the one that lowers the sum
  of those distances most is kept. Random draws from `numpy.random.default_rng(seed)`.
- step: assign each point to its nearest center (ties: the lowest center index),
  then move each center to the mean of its points; a center left without points
  stays where it is.
- stop: when no assignment changes, or after `max_iters` steps.

Points are held as float64 (centred on their mean) while it runs: memory N x D x 8 bytes,
plus O(block x k). Time: O(k x log k x N x D) for the init, O(iterations x N x k x D) for the steps.
Same points in the same order and the same seed give the same labels.
"""
from __future__ import annotations

import numpy as np

KMEANS_MAX_ITERS = 100
ROW_BLOCK = 4096


def nearest_center(points: np.ndarray, norms: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N] int64 index of each point's nearest center and [N] float64 squared distance to it.

    Args:
        points: [N, D] float64; norms: [N] their squared norms; centers: [k, D] float64.
    """
    center_norms = (centers * centers).sum(axis=1)
    labels = np.empty(len(points), dtype=np.int64)
    squared = np.empty(len(points), dtype=np.float64)
    for start in range(0, len(points), ROW_BLOCK):
        stop = min(start + ROW_BLOCK, len(points))
        distances = norms[start:stop, None] - 2.0 * (points[start:stop] @ centers.T) + center_norms[None, :]
        nearest = distances.argmin(axis=1)
        labels[start:stop] = nearest
        squared[start:stop] = np.maximum(distances[np.arange(stop - start), nearest], 0.0)
    return labels, squared


def kmeans_plus_plus(points: np.ndarray, norms: np.ndarray, clusters: int, rng: np.random.Generator) -> np.ndarray:
    """[clusters, D] float64 initial centers drawn from `points` ([N, D] float64, squared norms [N]) by greedy k-means++."""
    count = len(points)
    trials = 2 + int(np.log(clusters))

    def squared_to(rows: np.ndarray) -> np.ndarray:  # [len(rows), N] squared distances
        return np.maximum(norms[rows, None] - 2.0 * (points[rows] @ points.T) + norms[None, :], 0.0)

    chosen = [int(rng.integers(count))]
    min_squared = squared_to(np.array(chosen))[0]
    for _ in range(1, clusters):
        total = float(min_squared.sum())
        if total > 0.0:
            draws = rng.random(trials) * total
            candidates = np.minimum(np.searchsorted(np.cumsum(min_squared), draws, side="right"), count - 1)
        else:  # every point sits on a center already: any point will do
            candidates = rng.integers(count, size=trials)
        with_candidate = np.minimum(min_squared[None, :], squared_to(candidates))
        best = int(with_candidate.sum(axis=1).argmin())  # the candidate that lowers the potential most
        chosen.append(int(candidates[best]))
        min_squared = with_candidate[best]
    return points[chosen].copy()


def seeded_kmeans(points: np.ndarray, clusters: int, seed: int, max_iters: int = KMEANS_MAX_ITERS) -> tuple[np.ndarray, int]:
    """K-Means labels of `points`.

    Args:
        points: [N, D] float (held as float64, centred on their mean, while it runs).
        clusters: k; at most N are used.
        seed: seeds the k-means++ init.
        max_iters: most Lloyd steps.

    Returns:
        ([N] int64 cluster index per point, Lloyd steps run).
    """
    if clusters < 1:
        raise ValueError(f"K-Means needs at least one cluster, got {clusters}")
    if len(points) == 0:
        return np.zeros(0, dtype=np.int64), 0
    points = np.asarray(points, dtype=np.float64)
    points = points - points.mean(axis=0)  # centred: less cancellation in |x|^2 - 2 x.c + |c|^2
    norms = (points * points).sum(axis=1)
    rng = np.random.default_rng(seed)
    k = min(clusters, len(points))
    centers = kmeans_plus_plus(points, norms, k, rng)
    labels = nearest_center(points, norms, centers)[0]
    steps = 0
    while steps < max_iters:
        steps += 1
        counts = np.bincount(labels, minlength=k)
        sums = np.zeros_like(centers)
        np.add.at(sums, labels, points)
        filled = counts > 0
        centers[filled] = sums[filled] / counts[filled, None]
        updated = nearest_center(points, norms, centers)[0]
        if np.array_equal(updated, labels):
            break
        labels = updated
    return labels, steps
