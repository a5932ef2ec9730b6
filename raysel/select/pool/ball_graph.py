"""Sparse delta-ball neighbourhoods, computed piece by piece so no process holds N x N.

The kernels take one block of query rows and one block of base rows (the whole
pool in the single-process reference; one shard's rows against another shard's
on the actors) and return the pairs closer than delta:

1. a float32 search with a slightly larger radius proposes candidate pairs: faiss range
   search (exact, brute-force L2) or, on large pools, BLAS products over only the pairs
   sharing a probed IVF cell (`ivf_lists.py`, which may miss some);
2. a pair is kept when sum((x - y)^2), computed in float64 element by element, is below
   delta^2. That decision depends only on the two vectors, never on the index layout,
   the block or the shard: the graph is symmetric and the same on 1 or many shards.
   The float64 sum is computed only for candidates whose float32 distance lies within
   its rounding bound of delta^2 (`float32_error`); the others are decided by the
   float32 value, which the bound guarantees gives the same answer.

Memory: O(edges) plus O(QUERY_BLOCK x neighbours) transient; time O(queries x base x D).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar

import faiss
import numpy as np

from raysel.select.pool import ivf_lists
from raysel.select.blas import over_row_chunks, single_threaded

T = TypeVar("T")

QUERY_BLOCK = 4096  # query rows per faiss call: bounds the transient result size
IVF_QUERY_BLOCK = 2048  # IVF search: rows probing a cell per BLAS product with its members
CANDIDATE_MARGIN = 1e-4  # extra squared radius for the float32 search; exact float64 check after
RECHECK_VALUES = 1 << 22  # pair x dimension values re-checked at a time (32 MB of float64 per operand)
OTHER_QUERY_BLOCK = 512  # nearest_other_cluster: queries per BLAS block
OTHER_BASE_BLOCK = 8192  # ... and base rows per block


def squared_norms(vectors: np.ndarray) -> np.ndarray:
    """[n] float64 squared norms of float32 rows."""
    return np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64)


def exact_squared(queries: np.ndarray, base: np.ndarray, query_rows: np.ndarray, base_rows: np.ndarray) -> np.ndarray:
    """[pairs] float64 sum((queries[q] - base[b])^2), element-wise (independent of any blocking)."""
    out = np.empty(len(query_rows), dtype=np.float64)
    block = max(1, RECHECK_VALUES // max(queries.shape[1], 1))
    for start in range(0, len(query_rows), block):
        stop = start + block
        difference = queries[query_rows[start:stop]].astype(np.float64) - base[base_rows[start:stop]].astype(np.float64)
        out[start:stop] = (difference * difference).sum(axis=1)
    return out


def ball_pairs(
    queries: np.ndarray, query_ids: np.ndarray, base: np.ndarray, base_ids: np.ndarray, delta: float,
    query_probes: np.ndarray | None = None, base_probes: np.ndarray | None = None, lists: int = 0, threads: int = 1,
    base_lists: ivf_lists.CellLists | None = None, base_norms: np.ndarray | None = None,
    query_used: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (query row, base id) with |query - base| < delta, a point never its own neighbour.

    Args:
        queries: [q, D] float32; query_ids: [q] int64 global ids.
        base: [b, D] float32; base_ids: [b] int64 global ids.
        query_probes, base_probes: [q, probes], [b, probes] int64 IVF cells (`ivf_lists.probe_lists`)
            of `lists` cells: compare only pairs sharing a probed cell. None: every pair (exact).
        threads: threads the IVF search spreads its cells over (the flat search: faiss' own).
        base_lists: the base's `ivf_lists.CellLists`, when the caller keeps them (built here otherwise).
        base_norms: [b] float64 squared norms of `base`, when the caller keeps them.
        query_used: (near_cells, found_from_far) of the queries' `BallCounts` against this base (or
            against every shard, a superset): search only the probed cells that hold a neighbour, and
            the second half only for the rows that have one there. The pairs are the same.

    Returns:
        query rows [pairs] int64 (positions in `queries`), neighbour ids [pairs] int64.
    """
    parts = _ball_search(queries, query_ids, base, base_ids, delta, query_probes, base_probes, lists, threads,
                         base_lists, base_norms, lambda rows, ids: (rows, ids), query_used)
    return (np.concatenate([np.zeros(0, np.int64)] + [p[0] for p in parts]),
            np.concatenate([np.zeros(0, np.int64)] + [p[1] for p in parts]))


@dataclass(frozen=True)
class BallCounts:
    """What an IVF counting pass (`ball_counts`) learns of each query row's ball, in O(q x probes) memory.

    counts: [q] int64 neighbours (the row itself left out).
    near_cells: [q, probes] bool: some neighbour's own cell is that probe of the row (the first half finds it).
    found_from_far: [q] bool: some neighbour was found only through that neighbour's probes (the second half):
        its own cell is not among the row's probes.
    Together they say which parts of the search a later search of the same ball can skip
    (`ball_pairs(..., query_used=...)`): it finds the same pairs.
    """

    counts: np.ndarray
    near_cells: np.ndarray
    found_from_far: np.ndarray

    @classmethod
    def none(cls, rows: int, probes: int) -> "BallCounts":
        """No neighbours yet for `rows` rows of `probes` probes."""
        return cls(np.zeros(rows, np.int64), np.zeros((rows, probes), bool), np.zeros(rows, bool))

    def __add__(self, other: "BallCounts") -> "BallCounts":
        """The counts of one query set against two disjoint bases."""
        return BallCounts(self.counts + other.counts, self.near_cells | other.near_cells, self.found_from_far | other.found_from_far)


def _score_bounds(limit: float, error: np.ndarray, own: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 thresholds on `cell_blocks` scores (`own`: the norm they leave out) just outside
    limit -/+ error: below the first a pair is surely in, from the second it is surely out."""
    low = np.nextafter((limit - error - own).astype(np.float32), np.float32(-np.inf))
    high = np.nextafter((limit + error - own).astype(np.float32), np.float32(np.inf))
    return low, high


def _dense_inside(
    scores: np.ndarray, low: np.ndarray, high: np.ndarray, limit: float, check: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The pairs inside delta of one first-half block, whose `_score_bounds` are per row.

    Returns (sure [rows, members] bool: surely inside by float32; maybe [rows] int64: pairs not
    surely outside; line, column: the pairs of the rounding band that check(lines, columns), their
    float64 squared distances, puts inside). Only the rows with a pair in the band are searched for it.
    """
    sure = scores < low[:, None]
    maybe = np.count_nonzero(scores < high[:, None], axis=1)
    band_rows = np.flatnonzero(maybe > np.count_nonzero(sure, axis=1))
    if not len(band_rows):
        return sure, maybe, np.zeros(0, np.int64), np.zeros(0, np.int64)
    part = scores[band_rows]
    line, column = np.nonzero((part >= low[band_rows, None]) & (part < high[band_rows, None]))
    line = band_rows[line]
    inside = check(line, column) < limit
    return sure, maybe, line[inside], column[inside]


def _far_pairs(
    queries: np.ndarray, query_lists: ivf_lists.CellLists, query_norms: np.ndarray,
    base: np.ndarray, base_lists: ivf_lists.CellLists, base_norms: np.ndarray, cells: list[int], limit: float,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(base rows, query rows) of the pairs inside delta that only the second half of the candidate condition
    finds: a base row probing the query's own cell from a cell the query does not probe (`cell_blocks`
    over `cells`, thresholds per query, float64 inside the rounding band)."""
    unit = float32_error(queries.shape[1])
    base_own = base_lists.probes[:, 0]
    for _, rows, members, scores in ivf_lists.cell_blocks(base, base_lists, queries, query_lists, cells, IVF_QUERY_BLOCK,
                                                          "probing", strangers_only=True):
        low, high = _score_bounds(limit, unit * (query_norms[members] + base_norms[rows].max()), query_norms[members])
        lines = np.flatnonzero(np.count_nonzero(scores < high[None, :], axis=1))
        if not len(lines):
            continue
        part = scores[lines]
        line, column = np.nonzero(part < high[None, :])
        inside = part[line, column] < low[column]
        unsure = np.flatnonzero(~inside)
        inside[unsure] = exact_squared(queries, base, members[column[unsure]], rows[lines[line[unsure]]]) < limit
        line, column = lines[line[inside]], column[inside]
        far = ~(query_lists.probes[members[column]] == base_own[rows[line]][:, None]).any(axis=1)
        yield rows[line[far]], members[column[far]]


def ball_counts(
    queries: np.ndarray, query_ids: np.ndarray, base: np.ndarray, base_ids: np.ndarray, delta: float,
    query_probes: np.ndarray, base_probes: np.ndarray, lists: int, threads: int = 1,
    query_lists: ivf_lists.CellLists | None = None, query_norms: np.ndarray | None = None,
) -> BallCounts:
    """How many of `ball_pairs`' IVF pairs each query row has, and where they lie, without holding the pairs.

    The candidate blocks are counted densely: a pair whose float32 score is below delta^2 by
    more than its error bound counts, one within the bound is decided in float64, as
    `ball_pairs` decides it; only the pairs found there are listed, to see where they lie.
    When the queries are the base (equal ids: one shard against itself) each first-half
    block also gives the second half's pairs, transposed, so the second half is not searched.
    A row's own entry is taken off at the end.

    Args: as `ball_pairs` (IVF cells required); query_lists / query_norms: the queries'
        `CellLists` and float64 squared norms, when the caller keeps them.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    base = np.ascontiguousarray(base, dtype=np.float32)
    probes = query_probes.shape[1]
    if not len(queries) or not len(base):
        return BallCounts.none(len(queries), probes)
    same = len(query_ids) == len(base_ids) and bool(np.array_equal(query_ids, base_ids))
    limit = float(delta) ** 2
    unit = float32_error(queries.shape[1])
    query_norms = squared_norms(queries) if query_norms is None else query_norms
    query_lists = ivf_lists.CellLists.of(queries, query_probes, lists) if query_lists is None else query_lists
    base_norms = query_norms if same else squared_norms(base)
    base_lists = query_lists if same else ivf_lists.CellLists.of(base, base_probes, lists)
    query_own = query_lists.probes[:, 0]
    first, second = ivf_lists.shared_cells(query_lists, base_lists)
    if same:
        second = []

    def work(task: tuple[str, list[int]]) -> BallCounts:
        half, cells = task
        found = BallCounts.none(len(queries), probes)
        counts, near, far = found.counts, found.near_cells, found.found_from_far
        if half == "first":  # rows: queries probing the cell; members: base rows of the cell
            for cell, rows, members, scores in ivf_lists.cell_blocks(queries, query_lists, base, base_lists, cells, IVF_QUERY_BLOCK):
                low, high = _score_bounds(limit, unit * (query_norms[rows] + base_norms[members].max()), query_norms[rows])
                sure, maybe, line, column = _dense_inside(scores, low, high, limit,
                                                          lambda r, m: exact_squared(queries, base, rows[r], members[m]))
                inside = np.count_nonzero(sure, axis=1) + np.bincount(line, minlength=len(rows))
                counts[rows] += inside
                own_here = query_own[rows] == cell
                hit = np.flatnonzero(inside - (own_here if same else 0) > 0)  # a row's own entry is no neighbour
                near[rows[hit], np.argmax(query_lists.probes[rows[hit]] == cell, axis=1)] = True
                if same:  # the transposed pairs (member, row) the second half would find: row's cell not in member's probes
                    strangers = np.flatnonzero(~own_here & (maybe > 0))
                    if len(strangers):
                        sure_line, sure_column = np.nonzero(sure[strangers])
                        band = ~own_here[line]
                        line = np.concatenate([strangers[sure_line], line[band]])
                        column = np.concatenate([sure_column, column[band]])
                        far_pair = ~(query_lists.probes[members[column]] == query_own[rows[line]][:, None]).any(axis=1)
                        got = members[column[far_pair]]
                        np.add.at(counts, got, 1)
                        far[got] = True
        else:  # base rows probing a query's cell from elsewhere: the pairs the first half did not count
            for _, got in _far_pairs(queries, query_lists, query_norms, base, base_lists, base_norms, cells, limit):
                np.add.at(counts, got, 1)
                far[got] = True
        return found

    total = BallCounts.none(len(queries), probes)
    for part in ivf_lists.run_spread(work, first, second, threads):
        total = total + part
    own = np.isin(query_ids, base_ids)  # each row's own entry (distance 0, always a candidate)
    return BallCounts(total.counts - own, total.near_cells, total.found_from_far)


def balls_holding(
    queries: np.ndarray, query_ids: np.ndarray, base: np.ndarray, base_ids: np.ndarray, delta: float,
    query_probes: np.ndarray, query_used: tuple[np.ndarray, np.ndarray], lists: int, threads: int,
    base_lists: ivf_lists.CellLists, base_norms: np.ndarray,
) -> np.ndarray:
    """[b] int64: in how many of the queries' balls each base row lies (its own not counted): the pairs
    `ball_pairs(..., query_used=query_used)` finds, counted per base row without listing them.

    The first half (queries probing a cell against its members) is counted densely per member,
    with float64 only inside the error band, as `ball_counts` counts; the second half (base
    rows probing a far query's cell) lists its few pairs (`_far_pairs`). Arguments as `ball_pairs`.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    counts = np.zeros(len(base), dtype=np.int64)
    if not len(queries) or not len(base):
        return counts
    limit = float(delta) ** 2
    unit = float32_error(queries.shape[1])
    query_norms = squared_norms(queries)
    query_lists = ivf_lists.CellLists.of(queries, query_probes, lists, *query_used)
    first, second = ivf_lists.shared_cells(query_lists, base_lists)

    def work(task: tuple[str, list[int]]) -> np.ndarray:
        half, cells = task
        found = np.zeros(len(base), dtype=np.int64)
        if half == "first":  # rows: queries probing the cell; members: base rows of the cell
            for _, rows, members, scores in ivf_lists.cell_blocks(queries, query_lists, base, base_lists, cells, IVF_QUERY_BLOCK):
                low, high = _score_bounds(limit, unit * (query_norms[rows] + base_norms[members].max()), query_norms[rows])
                sure, _, _, column = _dense_inside(scores, low, high, limit,
                                                   lambda r, m: exact_squared(queries, base, rows[r], members[m]))
                found[members] += np.count_nonzero(sure, axis=0)
                np.add.at(found, members[column], 1)
        else:  # base rows probing a far query's cell from elsewhere
            for got, _ in _far_pairs(queries, query_lists, query_norms, base, base_lists, base_norms, cells, limit):
                np.add.at(found, got, 1)
        return found

    for part in ivf_lists.run_spread(work, first, second, threads):
        counts += part
    # each base row that is a query counted itself where its own cell was searched (distance 0, always inside)
    position = np.searchsorted(base_ids, query_ids).clip(0, max(len(base_ids) - 1, 0))
    itself = (base_ids[position] == query_ids) & query_used[0][:, 0]
    np.subtract.at(counts, position[itself], 1)
    return counts


def _ball_search(
    queries: np.ndarray, query_ids: np.ndarray, base: np.ndarray, base_ids: np.ndarray, delta: float,
    query_probes: np.ndarray | None, base_probes: np.ndarray | None, lists: int, threads: int,
    base_lists: ivf_lists.CellLists | None, base_norms: np.ndarray | None, finish: Callable[[np.ndarray, np.ndarray], T],
    query_used: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[T]:
    """finish(query rows, neighbour ids) of each part of the pairs `ball_pairs` finds (arguments as there)."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    base = np.ascontiguousarray(base, dtype=np.float32)
    if not len(queries) or not len(base):
        return []
    limit = float(delta) ** 2
    query_norms = squared_norms(queries)
    if base_norms is None:
        base_norms = squared_norms(base)
    # wide enough that float32 rounding cannot push a true pair out of the search
    worst_error = float32_error(queries.shape[1]) * (float(query_norms.max()) + float(base_norms.max()))
    radius = limit + max(CANDIDATE_MARGIN * max(limit, 1.0), worst_error)

    def exact(rows: np.ndarray, found: np.ndarray, distances: np.ndarray) -> T:
        """finish() of the candidates (query rows, base positions, float32 squared distances) that are other points within delta."""
        keep = query_ids[rows] != base_ids[found]
        rows, found, distances = rows[keep], found[keep], distances[keep].astype(np.float64)
        error = float32_error(queries.shape[1]) * (query_norms[rows] + base_norms[found])
        inside = distances + error < limit
        unsure = np.flatnonzero(~inside & (distances - error < limit))
        inside[unsure] = exact_squared(queries, base, rows[unsure], found[unsure]) < limit
        return finish(rows[inside], base_ids[found[inside]])

    if query_probes is not None and base_probes is not None:
        query_lists = ivf_lists.CellLists.of(queries, query_probes, lists, *(query_used or ()))
        if base_lists is None:
            base_lists = ivf_lists.CellLists.of(base, base_probes, lists)
        return ivf_lists.candidate_pairs(queries, query_lists, base, base_lists, lists, radius, IVF_QUERY_BLOCK, exact, threads)
    index = faiss.IndexFlatL2(base.shape[1])
    index.add(base)
    parts = []
    for start in range(0, len(queries), QUERY_BLOCK):
        block = queries[start : start + QUERY_BLOCK]
        lims, distances, found = index.range_search(block, radius)
        rows = np.repeat(np.arange(start, start + len(block), dtype=np.int64), np.diff(lims.astype(np.int64)))
        parts.append(exact(rows, found.astype(np.int64), distances))
    return parts


def float32_error(dims: int) -> float:
    """Bound on |float32 squared distance - exact| per unit of |x|^2 + |y|^2.

    faiss computes |x|^2 + |y|^2 - 2 x.y (flat) or sum((x - y)^2) (IVF) in float32 over
    `dims` terms; each is off by at most about (2 dims + 4) x eps x (|x|^2 + |y|^2). A
    factor 2 on top keeps the bound safe (1.7e-5 per unit at D = 64, 1e-4 at D = 384).
    """
    return 2.0 * (2 * dims + 4) * float(np.finfo(np.float32).eps)


def csr(rows: np.ndarray, targets: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR arrays (indptr [count + 1] int64, indices ascending per row) of the pairs (rows, targets)."""
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=count))]).astype(np.int64)
    if not len(targets):
        return indptr, np.zeros(0, dtype=np.int32)
    span = int(targets.max()) + 1  # one int64 key per pair (row x span + target < 2^63 below 3e9 rows): one sort
    keys = np.sort(np.asarray(rows, dtype=np.int64) * span + np.asarray(targets, dtype=np.int64))
    dtype = np.int32 if span <= 2**31 else np.int64
    return indptr, (keys % span).astype(dtype)


@single_threaded
def ball_neighbours(vectors: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """The whole graph of in-memory vectors: neighbours within distance < delta, the point itself left out.

    Args:
        vectors: [N, D] float.
        delta: the ball radius, > 0.

    Returns:
        indptr [N + 1] int64 and indices [edges]: the neighbours of row i are
        indices[indptr[i]:indptr[i + 1]], ascending.
    """
    points = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.arange(len(points), dtype=np.int64)
    rows, targets = ball_pairs(points, ids, points, ids, delta)
    return csr(rows, targets, len(points))


def gather(indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The neighbour lists of `rows`, concatenated."""
    rows = np.asarray(rows, dtype=np.int64)
    lengths = indptr[rows + 1] - indptr[rows]
    if not len(rows) or not lengths.sum():
        return np.zeros(0, dtype=indices.dtype)
    offsets = np.repeat(indptr[rows] - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
    return indices[offsets]


def nearest_other_cluster(queries: np.ndarray, query_labels: np.ndarray, base: np.ndarray, base_labels: np.ndarray, threads: int = 1) -> np.ndarray:
    """[q] float64 exact distance from each query to the nearest base point of another cluster (inf: none).

    Query blocks against base blocks in float32 BLAS (same-cluster pairs masked out) give
    every squared distance within `float32_error` of its true value (less the query's own
    |q|^2, the same for all of its pairs); the pairs within
    twice that bound of a query's float32 minimum are recomputed in float64
    (`exact_squared`) and the smallest is the answer. That set always holds the true
    nearest point, so the value is the exact minimum, whichever way the base is blocked
    or cut into shards. Query blocks are spread over `threads` threads. Cost: one pass,
    O(q x b x D) in BLAS; memory O(OTHER_QUERY_BLOCK x OTHER_BASE_BLOCK) per thread.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    base = np.ascontiguousarray(base, dtype=np.float32)
    query_labels, base_labels = np.asarray(query_labels), np.asarray(base_labels)
    distance = np.full(len(queries), np.inf)
    if not len(queries) or not len(base):
        return distance
    query_norms, base_norms = squared_norms(queries), squared_norms(base)
    band = 2.0 * float32_error(queries.shape[1]) * (query_norms + float(base_norms.max()))  # [q] float64
    base_norms32 = base_norms.astype(np.float32)
    doubled = -2.0 * queries  # exact (a power of two)

    def work(first: int, last: int) -> None:
        for start in range(first, last, OTHER_QUERY_BLOCK):
            stop = min(start + OTHER_QUERY_BLOCK, last)
            block, labels, margin = doubled[start:stop], query_labels[start:stop], band[start:stop]
            best = np.full(stop - start, np.inf)  # running float32 minimum of |b|^2 - 2 q.b (the row's |q|^2 left out)
            found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
            same = np.empty((stop - start, OTHER_BASE_BLOCK), dtype=bool)
            for base_start in range(0, len(base), OTHER_BASE_BLOCK):
                base_stop = min(base_start + OTHER_BASE_BLOCK, len(base))
                scores = block @ base[base_start:base_stop].T
                scores += base_norms32[None, base_start:base_stop]
                mask = same[:, : base_stop - base_start]
                np.equal(labels[:, None], base_labels[None, base_start:base_stop], out=mask)
                np.putmask(scores, mask, np.inf)
                block_min = scores.min(axis=1)
                np.minimum(best, block_min, out=best)
                threshold = np.where(np.isfinite(best), best + margin, -np.inf)  # inf: only same-cluster so far
                rows = np.flatnonzero(block_min <= threshold)  # the rows with a candidate in this block
                near_row, columns = np.nonzero(scores[rows] <= threshold[rows, None])
                found.append((rows[near_row], columns + base_start, scores[rows[near_row], columns].astype(np.float64)))
            rows = np.concatenate([f[0] for f in found])
            columns = np.concatenate([f[1] for f in found])
            values = np.concatenate([f[2] for f in found])
            near = values <= best[rows] + margin[rows]  # the band of the final minimum
            rows, columns = rows[near], columns[near]
            exact = np.full(stop - start, np.inf)
            np.minimum.at(exact, rows, exact_squared(queries, base, rows + start, columns))
            distance[start:stop] = np.sqrt(exact)

    over_row_chunks(len(queries), OTHER_QUERY_BLOCK, threads, work)
    return distance


def distance_to_other_cluster(vectors: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """[N] float64 Euclidean distance from each point to the nearest point of another cluster (inf: none)."""
    return nearest_other_cluster(vectors, labels, vectors, labels)
