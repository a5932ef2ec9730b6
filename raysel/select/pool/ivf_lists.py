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
only on the row and the centers, never on its shard or block; each cell's members are then
compared with every row probing it (one BLAS product per cell), so the candidates, and
after the exact check the graph, are the same on 1 or many shards and threads.

Cost: training O(sample x lists x D x iterations) on the driver; probes O(N x lists x D);
search about O(N x N x D x probes / lists) x 2 instead of O(N x N x D).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np

from raysel.select.blas import map_threads
from raysel.select.pool import kmeans

T = TypeVar("T")

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
        out[start:stop] = smallest_first(scores, cells.probes)

    kmeans.center_scores(points, cells.mean, cells.centers, threads, consume)
    return out


def smallest_first(scores: np.ndarray, count: int) -> np.ndarray:
    """[rows, count] int64: the columns of each row's `count` smallest scores, smallest first, ties to the
    lowest column: what a stable argsort's first `count` columns are, at the cost of a partition."""
    if count >= scores.shape[1]:
        return np.argsort(scores, axis=1, kind="stable")[:, :count]
    kth = np.partition(scores, count - 1, axis=1)[:, count - 1]
    chosen = scores <= kth[:, None]
    untied = np.count_nonzero(chosen, axis=1) == count  # no other column ties the count-th smallest
    out = np.empty((len(scores), count), dtype=np.int64)
    rows = np.flatnonzero(untied)
    columns = np.nonzero(chosen[rows])[1].reshape(len(rows), count)  # ascending within each row
    order = np.argsort(np.take_along_axis(scores[rows], columns, axis=1), axis=1, kind="stable")
    out[rows] = np.take_along_axis(columns, order, axis=1)
    tied = np.flatnonzero(~untied)
    out[tied] = np.argsort(scores[tied], axis=1, kind="stable")[:, :count]
    return out


def _by_cell(cells: np.ndarray, lists: int, used: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(row of each entry grouped by cell, [lists + 1] bounds): the rows with cell c are rows[bounds[c]:bounds[c + 1]].

    `cells` [n] or [n, probes]: a row appears under each of its cells; `used` (the same shape,
    bool): only under the cells marked True."""
    flat = cells.reshape(len(cells), -1)
    values = flat.ravel() if used is None else np.where(used.reshape(flat.shape), flat, lists).ravel()
    order = np.argsort(values, kind="stable")
    bounds = np.searchsorted(values[order], np.arange(lists + 1))
    return order // flat.shape[1], bounds


@dataclass(frozen=True)
class CellLists:
    """One side's rows grouped by cell, built once and reused for every search against them.

    probes: [n, probes] int64 (`probe_lists`); norms: [n] float32 squared norms;
    probing / own: (rows, bounds) of `_by_cell` over every probed cell / the own cell.
    A search may leave out some of a row's probed cells (`probing_used` [n, probes] bool) or
    its own cell (`own_used` [n] bool), where it knows no neighbour lies: the rows are then
    grouped under the cells used only (`probes` stays whole: it defines the candidates).
    """

    probes: np.ndarray
    norms: np.ndarray
    probing: tuple[np.ndarray, np.ndarray]
    own: tuple[np.ndarray, np.ndarray]

    @classmethod
    def of(cls, vectors: np.ndarray, probes: np.ndarray, lists: int,
           probing_used: np.ndarray | None = None, own_used: np.ndarray | None = None) -> "CellLists":
        norms = np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64).astype(np.float32)
        return cls(probes, norms, _by_cell(probes, lists, probing_used), _by_cell(probes[:, 0], lists, own_used))

    def has_probing(self) -> np.ndarray:
        """[lists] bool: some row probes the cell."""
        return np.diff(self.probing[1]) > 0

    def has_own(self) -> np.ndarray:
        """[lists] bool: the cell is some row's own."""
        return np.diff(self.own[1]) > 0


def cell_blocks(
    probing: np.ndarray, probing_lists: CellLists, members: np.ndarray, member_lists: CellLists, cells: Sequence[int], block: int,
    add: str = "members", strangers_only: bool = False,
) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """(cell, probing rows, member rows, [rows, members] float32 scores) for every block of the rows probing each
    given cell against the cell's own members: one float32 BLAS product each.

    strangers_only: leave out the probing rows whose own cell is the cell (a second half, which
    never keeps them: the members probe their own cell, so the first half has those pairs).

    scores = |p - m|^2 less one side's squared norm, the same for a whole row or column, which
    the caller adds to its thresholds instead: `add` "members" adds the members' norms (the
    probing row's |p|^2 is left out), "probing" adds the probing rows' (|m|^2 left out).
    """
    probing_rows, probing_bounds = probing_lists.probing
    member_rows, member_bounds = member_lists.own
    for cell in cells:
        inside = member_rows[member_bounds[cell] : member_bounds[cell + 1]]
        asking = probing_rows[probing_bounds[cell] : probing_bounds[cell + 1]]
        if strangers_only:
            asking = asking[probing_lists.probes[asking, 0] != cell]
        if not len(inside) or not len(asking):
            continue
        part = members[inside] * np.float32(-2.0)  # exact (a power of two)
        for start in range(0, len(asking), block):
            rows = asking[start : start + block]
            scores = probing[rows] @ part.T
            if add == "members":
                scores += member_lists.norms[inside][None, :]
            else:
                scores += probing_lists.norms[rows][:, None]
            yield cell, rows, inside, scores


def _cell_pairs(
    probing: np.ndarray, probing_lists: CellLists, members: np.ndarray, member_lists: CellLists, cells: Sequence[int],
    radius: float, block: int, strangers_only: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(probing rows, member rows, float32 squared distances < radius) of the pairs whose member's own cell is one
    of the probing row's cells, for the given cells (`cell_blocks`)."""
    for _, rows, inside, scores in cell_blocks(probing, probing_lists, members, member_lists, cells, block,
                                               strangers_only=strangers_only):
        own = probing_lists.norms[rows]
        near_row, near_member = np.nonzero(scores < (np.float32(radius) - own)[:, None])
        yield rows[near_row], inside[near_member], scores[near_row, near_member] + own[near_row]


def shared_cells(query_lists: CellLists, base_lists: CellLists) -> tuple[list[int], list[int]]:
    """The cells each half of the candidate condition visits: (the base row's cell among the query's probes,
    the query's cell among the base row's probes)."""
    return (np.flatnonzero(query_lists.has_probing() & base_lists.has_own()).tolist(),
            np.flatnonzero(query_lists.has_own() & base_lists.has_probing()).tolist())


def run_spread(work: Callable[[tuple[str, list[int]]], T], first: list[int], second: list[int], threads: int) -> list[T]:
    """work((half, cells)) over both halves' cells cut into runs, on up to `threads` threads (BLAS held to one)."""
    tasks = [("first", run) for run in _spread(first, threads)] + [("second", run) for run in _spread(second, threads)]
    return map_threads(work, tasks, threads)


def _spread(cells: list[int], threads: int) -> list[list[int]]:
    """`cells` cut into at most `threads` contiguous runs."""
    parts = max(1, min(int(threads), len(cells)))
    bounds = [len(cells) * part // parts for part in range(parts + 1)]
    return [cells[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def candidate_pairs(
    queries: np.ndarray, query_lists: CellLists, base: np.ndarray, base_lists: CellLists, lists: int, radius: float,
    block: int, keep: Callable[[np.ndarray, np.ndarray, np.ndarray], T], threads: int = 1,
) -> list[T]:
    """keep(query positions, base positions, float32 squared distances) of the pairs within `radius` that share a probed cell.

    A pair is a candidate when the base row's cell is among the query's probes or the
    query's cell among the base row's: a condition symmetric in the two rows. Each pair
    comes once. Both halves run per cell: the rows probing the cell against the cell's
    members, one BLAS product each, so the work is exactly the candidates' (about
    2 x probes / lists of all pairs). Cells are spread over `threads` threads, which also
    run `keep`; its results come back in cell order.

    Args:
        queries: [q, D] float32 contiguous; base: [b, D] float32 contiguous;
        query_lists, base_lists: their `CellLists` (built once per side and reused).
    """
    first, second = shared_cells(query_lists, base_lists)

    def work(task: tuple[str, list[int]]) -> list[T]:
        half, cells = task
        found = []
        if half == "first":  # the base row's cell among the query's probes
            for rows, members, squared in _cell_pairs(queries, query_lists, base, base_lists, cells, radius, block):
                found.append(keep(rows, members, squared))
        else:  # the query's cell among the base row's probes, and not found above
            for members, rows, squared in _cell_pairs(base, base_lists, queries, query_lists, cells, radius, block, True):
                new = ~(query_lists.probes[rows] == base_lists.probes[members, :1]).any(axis=1)
                found.append(keep(rows[new], members[new], squared[new]))
        return found

    return [item for part in run_spread(work, first, second, threads) for item in part]
