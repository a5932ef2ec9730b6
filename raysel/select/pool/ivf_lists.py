"""Inverted lists (IVF) for the delta-ball search of large pools: which pairs to compare at all.

The flat search compares every query with every base row. On large pools probcover
instead cuts the space into `lists` cells (K-Means on a seeded sample of the pool,
`train_lists`) and compares x with y only when y's cell is among x's `probes`
nearest cells, or x's cell among y's (`candidate_pairs`). The "or" makes the candidate
set, and so the graph, symmetric, which the greedy's counters need. Every candidate
pair is then checked exactly (`ball_graph.ball_pairs`), so the IVF graph is a subset of
the exact graph: it can miss edges (recall < 1, measured in
benchmarks/bench_probcover_ivf.py), never add one. With probes = lists it is the exact graph.

Determinism: a row's probe cells are computed with the same fixed-block product as
K-Means' assignment (`kmeans.center_scores`), ties to the lowest cell, so they depend
only on the row and the centers, never on its shard or block; faiss then searches those
cells exhaustively (`range_search_preassigned`), so the graph is the same on 1 or many shards.

Cost: training O(sample x lists x D x iterations) on the driver; probes O(N x lists x D);
search about O(N x N x D x probes / lists) x 2 instead of O(N x N x D).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import faiss
import numpy as np

from raysel.select.pool import kmeans

TRAIN_ITERS = 20  # Lloyd steps for the cells: a coarse partition, not a final clustering
TRAIN_PER_LIST = 40  # sample images per cell (faiss warns below 39)
TRAIN_SAMPLE_MIN = 10_000


@dataclass(frozen=True)
class IvfCells:
    """The trained cells: mean [D] float64, centers [lists, D] float64 (centred), probes per query."""

    mean: np.ndarray
    centers: np.ndarray
    probes: int

    @property
    def lists(self) -> int:
        return len(self.centers)


def default_lists(count: int) -> int:
    """round(sqrt(N)) cells, at least 1: about sqrt(N) rows per cell."""
    return max(1, int(round(math.sqrt(count))))


def train_sample(count: int, lists: int, seed: int) -> np.ndarray:
    """Sorted ids of the seeded sample the cells are trained on (the whole pool when small)."""
    size = min(count, max(TRAIN_SAMPLE_MIN, TRAIN_PER_LIST * lists))
    if size == count:
        return np.arange(count, dtype=np.int64)
    return np.sort(np.random.default_rng([seed, 13]).choice(count, size=size, replace=False)).astype(np.int64)


def train_lists(sample: np.ndarray, lists: int, probes: int, seed: int) -> IvfCells:
    """Seeded K-Means cells of `sample` [n, D] float32 (ids in uri order: the same on any sharding)."""
    _, mean, centers, _ = kmeans.kmeans_with_centers(sample, min(lists, len(sample)), seed, max_iters=TRAIN_ITERS)
    return IvfCells(mean=mean, centers=centers, probes=max(1, min(int(probes), len(centers))))


def probe_lists(points: np.ndarray, cells: IvfCells, threads: int = 1) -> np.ndarray:
    """[n, probes] int64: each row's nearest cells, nearest first (ties: the lowest cell); column 0 is its own cell."""
    out = np.empty((len(points), cells.probes), dtype=np.int64)

    def consume(start: int, stop: int, scores: np.ndarray) -> None:
        out[start:stop] = np.argsort(scores, axis=1, kind="stable")[:, : cells.probes]

    kmeans.center_scores(points, cells.mean, cells.centers, threads, consume)
    return out


def _inverted(vectors: np.ndarray, own_cell: np.ndarray, lists: int, probes: int) -> faiss.IndexIVFFlat:
    """An IVF index of `vectors` filed under the given cells (no quantizer call: the cells are ours)."""
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(vectors.shape[1]), vectors.shape[1], lists)
    index.is_trained = True
    index.nprobe = probes
    positions = np.arange(len(vectors), dtype=np.int64)
    cells = np.ascontiguousarray(own_cell, dtype=np.int64)
    index.add_core(len(vectors), faiss.swig_ptr(vectors), faiss.swig_ptr(positions), faiss.swig_ptr(cells))
    return index


def _search(index: faiss.IndexIVFFlat, queries: np.ndarray, probes: np.ndarray, radius: float, start: int, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query positions, found positions, float32 squared distances) of queries[start : start + block]."""
    keys = np.ascontiguousarray(probes[start : start + block])
    lims, distances, found = index.range_search_preassigned(queries[start : start + block], radius, keys, np.zeros(keys.shape, np.float32))
    return np.repeat(np.arange(start, start + len(keys), dtype=np.int64), np.diff(lims.astype(np.int64))), found.astype(np.int64), distances


def candidate_pairs(
    queries: np.ndarray, query_probes: np.ndarray, base: np.ndarray, base_probes: np.ndarray, lists: int, radius: float, block: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(query positions, base positions, float32 squared distances) within `radius` in a shared probed cell, per block.

    A pair is a candidate when the base row's cell is among the query's probes or the
    query's cell among the base row's: a condition symmetric in the two rows. Each pair
    comes once.

    Args:
        queries: [q, D] float32 contiguous; query_probes: [q, probes] int64 (`probe_lists`).
        base: [b, D] float32 contiguous; base_probes: [b, probes] int64.
    """
    probes = query_probes.shape[1]
    index = _inverted(base, base_probes[:, 0], lists, probes)  # the base row's cell among the query's probes
    for start in range(0, len(queries), block):
        yield _search(index, queries, query_probes, radius, start, block)
    index = _inverted(queries, query_probes[:, 0], lists, probes)  # the query's cell among the base row's probes
    for start in range(0, len(base), block):
        base_rows, query_rows, distances = _search(index, base, base_probes, radius, start, block)
        new = np.ones(len(query_rows), dtype=bool)  # not found above: the base row's cell is not among the query's probes
        for column in range(probes):
            new &= query_probes[query_rows, column] != base_probes[base_rows, 0]
        yield query_rows[new], base_rows[new], distances[new]
