"""Seeded Euclidean K-Means whose every step gives the same numbers on 1 or many shards.

Pure kernels, shared by the single-process reference (`seeded_kmeans`) and the
distributed run over pool shard actors (`pool/sharded.py`, `distributed_kmeans`):

- init (`init_sample`, `kmeans_plus_plus`): greedy k-means++ as in scikit-learn, run on a
  seeded sample of the pool (rows chosen by their position in uri order, at most
  max(INIT_SAMPLE_MIN, INIT_SAMPLE_PER_CLUSTER x k) rows; the whole pool when smaller):
  the first center uniformly at random, then 2 + ln(k) candidates drawn with probability
  proportional to the squared distance to the nearest center so far, keeping the one that
  lowers the sum of those distances most. Points are centred on the sample's mean.
- assignment (`nearest_center`, `center_scores`): each point to its nearest center (ties:
  the lowest index), with one float32 BLAS product per block of exactly ROW_BLOCK rows
  (the last block is zero-padded), so a row's distances never depend on which rows share
  its block, shard or thread.
- update (`cluster_sums`, `updated_centers`): cluster sums are accumulated in fixed point
  (integers rint(x x s), s a power of two chosen from the data's range and the pool size so
  every partial sum stays below 2^53): integer addition is associative, so per-shard (and
  per-thread) sums reduced on the driver equal the single-process sums bit for bit. A
  center left without points stays.
- stop: when at most KMEANS_TOLERANCE of the points change cluster (0 changes on pools
  under 10,000 images), or, above EXACT_BELOW points, when the squared center shifts sum to
  at most 1e-4 x the sample's mean variance (scikit-learn's rule), or after `max_iters`
  steps. Labels are the assignment to the final centers.

Memory per shard: its rows (float32) + O((ROW_BLOCK x k + SUM_BLOCK x D) x threads). Time
per step: O(N x k x D) in BLAS float32, spread over the shards and each shard's threads
(row blocks; BLAS itself single-threaded); init O(k x log k x sample x D) on the driver.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from raysel.select.blas import over_row_chunks, single_threaded

KMEANS_MAX_ITERS = 100
KMEANS_TOLERANCE = 1e-4  # stop when at most this fraction of points changed cluster in a step
KMEANS_SHIFT_TOLERANCE = 1e-4  # ... or (pools above EXACT_BELOW) the centers moved this little (x mean variance)
EXACT_BELOW = 10_000  # pools up to this size run Lloyd to no change at all
INIT_SAMPLE_MIN = 10_000
INIT_SAMPLE_PER_CLUSTER = 40
ROW_BLOCK = 1024
SUM_BLOCK = 16_384  # rows turned into fixed point at a time (per thread)


def init_sample(count: int, clusters: int, seed: int) -> np.ndarray:
    """Sorted row positions (in uri order) of the k-means++ sample: all rows of a small pool."""
    size = min(count, max(INIT_SAMPLE_MIN, INIT_SAMPLE_PER_CLUSTER * clusters))
    if size == count:
        return np.arange(count, dtype=np.int64)
    return np.sort(np.random.default_rng([seed, 7]).choice(count, size=size, replace=False)).astype(np.int64)


def kmeans_plus_plus(points: np.ndarray, clusters: int, rng: np.random.Generator) -> np.ndarray:
    """[clusters, D] float64 initial centers drawn from `points` ([n, D] float64) by greedy k-means++."""
    count = len(points)
    norms = (points * points).sum(axis=1)
    trials = 2 + int(np.log(clusters))

    def squared_to(rows: np.ndarray) -> np.ndarray:  # [len(rows), n] squared distances
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


@single_threaded
def initial_centers(sample: np.ndarray, clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D] float64 of the sample, [min(clusters, n), D] float64 k-means++ centers, centred on it)."""
    points = np.asarray(sample, dtype=np.float64)
    mean = points.mean(axis=0)
    centred = points - mean
    return mean, kmeans_plus_plus(centred, min(clusters, len(points)), np.random.default_rng(seed))


def center_scores(points: np.ndarray, mean: np.ndarray, centers: np.ndarray, threads: int, consume: Callable[[int, int, np.ndarray], None]) -> None:
    """consume(start, stop, scores) for each block of ROW_BLOCK rows, scores [stop - start, k] float32.

    scores = |c|^2 / 2 - (x - mean) . c: per row, in the order of the squared distances
    |x - mean - c|^2 (the row's own |x - mean|^2 / 2 is left out). One float32 BLAS
    product per zero-padded block of exactly ROW_BLOCK rows, so a row's scores never
    depend on which rows share its block, its shard or its thread. Blocks are spread
    over `threads` threads (`consume` runs in them, on disjoint rows).

    Args:
        points: [n, D] float32, raw (centred on `mean` here, block by block).
        mean: [D] float64; centers: [k, D] float64, centred.
    """
    count, dims = points.shape
    centers32 = np.ascontiguousarray(centers, dtype=np.float32)
    half_norms = (0.5 * (centers32.astype(np.float64) ** 2).sum(axis=1)).astype(np.float32)
    mean32 = np.asarray(mean, dtype=np.float32)

    def work(first: int, last: int) -> None:
        block = np.zeros((ROW_BLOCK, dims), dtype=np.float32)
        scores = np.empty((ROW_BLOCK, len(centers32)), dtype=np.float32)
        for start in range(first, last, ROW_BLOCK):
            stop = min(start + ROW_BLOCK, last)
            np.subtract(points[start:stop], mean32, out=block[: stop - start])
            block[stop - start :] = 0.0
            np.matmul(block, centers32.T, out=scores)
            np.subtract(half_norms, scores, out=scores)
            consume(start, stop, scores[: stop - start])

    over_row_chunks(count, ROW_BLOCK, threads, work)


def nearest_center(points: np.ndarray, mean: np.ndarray, centers: np.ndarray, threads: int = 1) -> np.ndarray:
    """[n] int64 nearest center of each point (ties: the lowest index); arguments as `center_scores`."""
    labels = np.empty(len(points), dtype=np.int64)

    def consume(start: int, stop: int, scores: np.ndarray) -> None:
        labels[start:stop] = scores.argmin(axis=1)

    center_scores(points, mean, centers, threads, consume)
    return labels


def fixed_point_scale(max_abs: float, count: int) -> float:
    """A power of two s with max_abs x s x count < 2^52: every partial sum of round(x * s) is an integer below 2^53.

    At most 2^100, so x x s stays finite in float32."""
    bound = max(float(max_abs), 1e-30) * max(int(count), 1)
    return float(2.0 ** min(100, 52 - math.ceil(math.log2(bound)) - 1))


def cluster_sums(points: np.ndarray, labels: np.ndarray, clusters: int, scale: float, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """([k, D] int64 fixed-point sums of the points per cluster, [k] int64 counts).

    Each value becomes rint(x x scale) in float32 (scale a power of two: the product is
    exact, only bits below 1 / scale are rounded, the same wherever the row is). These
    integers are added per (cluster, dimension) with one float64 `np.bincount` per block:
    `fixed_point_scale` keeps every partial sum an integer below 2^53, so the float64
    additions are exact and the sums the same bits in any order, on any shard or thread.
    SUM_BLOCK rows at a time: O(SUM_BLOCK x D) memory per thread.
    """
    count, dims = points.shape
    factor = np.float32(scale)
    columns = np.arange(dims, dtype=np.int64)
    parts: list[np.ndarray] = []

    def work(first: int, last: int) -> None:
        sums = np.zeros(clusters * dims, dtype=np.float64)
        for start in range(first, last, SUM_BLOCK):
            stop = min(start + SUM_BLOCK, last)
            cells = (labels[start:stop, None] * dims + columns).ravel()
            values = np.rint(points[start:stop] * factor).astype(np.float64).ravel()
            sums += np.bincount(cells, weights=values, minlength=clusters * dims)
        parts.append(sums.astype(np.int64).reshape(clusters, dims))

    over_row_chunks(count, SUM_BLOCK, threads, work)
    total = np.sum(parts, axis=0) if parts else np.zeros((clusters, dims), dtype=np.int64)
    return total, np.bincount(labels, minlength=clusters).astype(np.int64)


def updated_centers(centers: np.ndarray, sums: np.ndarray, counts: np.ndarray, scale: float, mean: np.ndarray) -> np.ndarray:
    """Each (centred) center moved to the mean of its points (fixed-point sums) minus `mean`; empty clusters stay."""
    moved = centers.copy()
    filled = counts > 0
    moved[filled] = (sums[filled].astype(np.float64) / scale) / counts[filled, None] - mean
    return moved


AssignStep = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, int]]


def lloyd(
    step: AssignStep, centers: np.ndarray, mean: np.ndarray, count: int, scale: float, max_iters: int = KMEANS_MAX_ITERS,
    shift_tolerance: float = 0.0,
) -> tuple[np.ndarray, int]:
    """Lloyd's iterations given `step(centers) -> (sums, counts, changed)` over the whole pool.

    Centers are centred on `mean`; `step` assigns every point to its nearest of `centers`, keeps those labels, and returns
    the fixed-point sums and counts of that assignment and how many labels changed (every
    point counts as changed on the first call). Stops when at most KMEANS_TOLERANCE of the
    points changed or, on pools above EXACT_BELOW points, when the centers moved by at most
    `shift_tolerance` (sum of squared shifts, scikit-learn's rule). Returns (final centers,
    steps run); the labels `step` kept last are the assignment to the final centers.
    """
    sums, counts, _ = step(centers)
    steps = 0
    while steps < max_iters:
        steps += 1
        moved = updated_centers(centers, sums, counts, scale, mean)
        shift = float(((moved - centers) ** 2).sum())
        centers = moved
        sums, counts, changed = step(centers)
        if changed <= KMEANS_TOLERANCE * count or (count > EXACT_BELOW and shift <= shift_tolerance):
            break
    return centers, steps


def shift_tolerance_of(sample: np.ndarray) -> float:
    """scikit-learn's tol x mean per-dimension variance, from the k-means++ sample."""
    return float(KMEANS_SHIFT_TOLERANCE * np.asarray(sample, dtype=np.float64).var(axis=0).mean()) if len(sample) else 0.0


def max_abs(low: np.ndarray, high: np.ndarray) -> float:
    """The largest |x| any point can have, from per-dimension min and max."""
    return float(np.maximum(np.abs(high), np.abs(low)).max()) if len(low) else 0.0


def seeded_kmeans(points: np.ndarray, clusters: int, seed: int, max_iters: int = KMEANS_MAX_ITERS) -> tuple[np.ndarray, int]:
    """K-Means labels of in-memory `points` (the single-process form of `distributed_kmeans`).

    Args:
        points: [N, D] float (used as float32), rows in the order that breaks ties (uri order).
        clusters: k; at most N are used.
        seed: seeds the sample and the k-means++ init.
        max_iters: most Lloyd steps.

    Returns:
        ([N] int64 cluster index per point, Lloyd steps run).
    """
    labels, _, _, steps = kmeans_with_centers(points, clusters, seed, max_iters)
    return labels, steps


@single_threaded
def kmeans_with_centers(points: np.ndarray, clusters: int, seed: int, max_iters: int = KMEANS_MAX_ITERS) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(labels [N], mean [D], centred centers [k, D], steps) of `seeded_kmeans`."""
    if clusters < 1:
        raise ValueError(f"K-Means needs at least one cluster, got {clusters}")
    points = np.ascontiguousarray(points, dtype=np.float32)
    if len(points) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(points.shape[1:]), np.zeros((0,) + points.shape[1:]), 0
    sample = points[init_sample(len(points), clusters, seed)]
    mean, centers = initial_centers(sample, clusters, seed)
    tolerance = shift_tolerance_of(sample)
    scale = fixed_point_scale(max_abs(points.min(axis=0), points.max(axis=0)), len(points))
    state = {"labels": None}

    def step(current: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        labels = nearest_center(points, mean, current)
        previous = state["labels"]
        changed = len(labels) if previous is None else int((labels != previous).sum())
        state["labels"] = labels
        sums, counts = cluster_sums(points, labels, len(current), scale)
        return sums, counts, changed

    centers, steps = lloyd(step, centers, mean, len(points), scale, max_iters, tolerance)
    return state["labels"], mean, centers, steps


def distributed_kmeans(group, count: int, low: np.ndarray, high: np.ndarray, clusters: int, seed: int, max_iters: int = KMEANS_MAX_ITERS) -> tuple[np.ndarray, np.ndarray, int]:
    """`kmeans_with_centers` over a `PoolGroup` (pool/sharded.py): the same centers, labels kept on the shards.

    The driver gathers the k-means++ sample (rows by id), then each Lloyd step sends the
    centers once to every shard and adds up their fixed-point sums and counts.

    Args:
        group: the pool's shards; count: N; low / high: [D] per-dimension range of the pool.

    Returns:
        (mean [D], centred centers [k, D] float64, Lloyd steps run); each shard's `labels`
        hold its rows' clusters.
    """
    if clusters < 1:
        raise ValueError(f"K-Means needs at least one cluster, got {clusters}")
    sample_ids = init_sample(count, clusters, seed)
    found = group.call("rows_of", sample_ids)
    ids = np.concatenate([part[0] for part in found])
    sample = np.concatenate([part[1] for part in found])[np.argsort(ids, kind="stable")]
    mean, centers = initial_centers(sample, clusters, seed)
    tolerance = shift_tolerance_of(sample)
    del sample
    scale = fixed_point_scale(max_abs(low, high), count)
    group.call("reset_labels")

    def step(current: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        results = group.call("kmeans_step", group.put(current), mean, scale)
        sums = np.sum([r[0] for r in results], axis=0)
        counts = np.sum([r[1] for r in results], axis=0)
        return sums, counts, int(sum(r[2] for r in results))

    centers, steps = lloyd(step, centers, mean, count, scale, max_iters, tolerance)
    return mean, centers, steps
