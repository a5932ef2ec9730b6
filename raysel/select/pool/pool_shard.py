"""One shard of the embedding pool and everything typiclust and probcover ask of it.

A `PoolShard` holds some of the store's rows: their global ids (the row's rank in
uri order over the whole pool, so "lowest id" means "smallest uri"), their
`embedding` [n, D] float32 and per-method state (K-Means labels, the delta-ball
lists of its own rows). The same class runs in the driver for the single-process
references (one shard holding everything) and inside a Ray actor per shard
(`sharded.py`), so both call the same kernels on the same numbers.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from raysel.select.pool import ball_graph, ivf_lists, kmeans, typicality
from raysel.select.pool.store_rows import RowSlice, load_rows
from raysel.storage import StorageOptions
from raysel.store import FeatureStore


NORMALIZE_BLOCK = 65_536  # rows normalized at a time (float64 temporaries of this many rows)


class PoolShard:
    """Rows of the pool: ids [n] int64 ascending, vectors [n, D] float32 (owned: `normalize` scales them in place), labeled [n] bool."""

    def __init__(self, uris: list[str], vectors: np.ndarray, threads: int = 1) -> None:
        self.uris: list[str] | None = list(uris)
        self.threads = max(1, int(threads))  # the kernels' row blocks spread over this many threads (same results)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.ids = np.zeros(0, dtype=np.int64)
        self.labeled = np.zeros(0, dtype=bool)
        self.labels = np.zeros(0, dtype=np.int64)  # K-Means cluster per row
        self.indptr = np.zeros(1, dtype=np.int64)  # delta-ball lists of own rows (CSR, global ids)
        self.neighbours = np.zeros(0, dtype=np.int64)
        self._pairs: list[tuple[np.ndarray, np.ndarray]] = []
        self.cells: ivf_lists.IvfCells | None = None  # IVF cells of the ball search (None: exact flat search)
        self.probes: np.ndarray | None = None  # [n, probes] int64 each row's probed cells
        self.cell_lists: ivf_lists.CellLists | None = None  # own rows by cell, for `neighbours_near`
        self.norms: np.ndarray | None = None  # [n] float64 squared norms, for `neighbours_near`
        self.counted: ball_graph.BallCounts | None = None  # the balls counted by ball_search(keep=False)
        self.counted_only = False

    @classmethod
    def from_store(cls, store_uri: str, options: StorageOptions, slices: list[RowSlice], threads: int = 1) -> "PoolShard":
        uris, vectors = load_rows(FeatureStore(store_uri, options), slices, "embedding")
        return cls(uris, vectors[:, 0, :] if vectors.ndim == 3 else vectors, threads)

    # --- set-up ---
    def summary(self) -> dict:
        """uris (Arrow, store order), dims, per-dimension min / max, and the uris of non-finite rows."""
        finite = np.isfinite(self.vectors).all(axis=1) if len(self.vectors) else np.zeros(0, bool)
        good = self.vectors[finite]
        dims = self.vectors.shape[1] if self.vectors.ndim == 2 else 0
        return {
            "uris": pa.array(self.uris, pa.string()),
            "dims": dims,
            "low": good.min(axis=0).astype(np.float64) if len(good) else np.full(dims, np.inf),
            "high": good.max(axis=0).astype(np.float64) if len(good) else np.full(dims, -np.inf),
            "bad_uris": sorted(self.uris[i] for i in np.flatnonzero(~finite))[:3],
        }

    def set_ids(self, ids: np.ndarray, labeled_ids: np.ndarray) -> None:
        """Give each row (store order) its global id; rows are then kept in id order."""
        order = np.argsort(ids, kind="stable")
        self.ids = np.asarray(ids, dtype=np.int64)[order]
        if np.any(order[1:] < order[:-1]):  # store order is often id (uri) order already: no copy then
            self.vectors = np.ascontiguousarray(self.vectors[order])
        self.labeled = np.isin(self.ids, labeled_ids)
        self.uris = None  # the driver names picks; the shard only needs ids from here on

    def normalize(self) -> int:
        """Scale rows to unit length (probcover); returns the lowest id of a zero row, or -1."""
        blocks = range(0, len(self.vectors), NORMALIZE_BLOCK)  # float64 a block at a time, in place: no copy of the shard
        norms = np.concatenate([np.zeros(0)] + [
            np.linalg.norm(self.vectors[start : start + NORMALIZE_BLOCK].astype(np.float64), axis=1) for start in blocks
        ])
        zero = np.flatnonzero(norms == 0)
        if len(zero):
            return int(self.ids[zero[0]])
        for start in blocks:
            stop = start + NORMALIZE_BLOCK
            self.vectors[start:stop] = self.vectors[start:stop] / norms[start:stop, None]
        return -1

    def rows_of(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of the asked ids this shard holds."""
        position = self._positions(ids)
        return self.ids[position], self.vectors[position]

    def _positions(self, ids: np.ndarray) -> np.ndarray:
        """Row positions of those of `ids` this shard holds."""
        ids = np.asarray(ids, dtype=np.int64)
        if not len(self.ids) or not len(ids):
            return np.zeros(0, dtype=np.int64)
        position = np.minimum(np.searchsorted(self.ids, ids), len(self.ids) - 1)
        return position[self.ids[position] == ids]

    def value_range(self) -> tuple[np.ndarray, np.ndarray]:
        return self.vectors.min(axis=0).astype(np.float64), self.vectors.max(axis=0).astype(np.float64)

    # --- K-Means ---
    def kmeans_step(self, centers: np.ndarray, mean: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray, int]:
        """Assign rows to their nearest center; (fixed-point sums, counts, labels changed)."""
        labels = kmeans.nearest_center(self.vectors, mean, centers, self.threads)
        changed = len(labels) if len(self.labels) != len(labels) else int((labels != self.labels).sum())
        self.labels = labels
        sums, counts = kmeans.cluster_sums(self.vectors, labels, len(centers), scale, self.threads)
        return sums, counts, changed

    def reset_labels(self) -> None:
        self.labels = np.zeros(0, dtype=np.int64)

    def cluster_summary(self, clusters: int, sentinel: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per cluster: rows, labeled rows, lowest id (`sentinel` when none) of this shard."""
        sizes = np.bincount(self.labels, minlength=clusters)
        covered = np.bincount(self.labels[self.labeled], minlength=clusters)
        first = np.full(clusters, sentinel, dtype=np.int64)
        np.minimum.at(first, self.labels, self.ids)
        return sizes, covered, first

    def members_for(self, owner_of: np.ndarray, parts: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """This shard's rows of each owner's clusters: per owner (ids, labels, vectors, labeled)."""
        owner = owner_of[self.labels] if len(self.labels) else np.zeros(0, dtype=np.int64)
        out = []
        for part in range(parts):
            rows = np.flatnonzero(owner == part)
            out.append((self.ids[rows], self.labels[rows], self.vectors[rows], self.labeled[rows]))
        return out

    # --- delta-ball graph ---
    def set_cells(self, cells: ivf_lists.IvfCells | None) -> None:
        """Search the ball graph through these IVF cells (None: the exact flat search)."""
        self.cells = cells
        self.probes = None if cells is None else ivf_lists.probe_lists(self.vectors, cells, self.threads)
        self.cell_lists = None if cells is None else ivf_lists.CellLists.of(self.vectors, self.probes, cells.lists)
        self.norms = None if cells is None else ball_graph.squared_norms(self.vectors)

    def export(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        return self.ids, self.vectors, self.probes

    def ball_search(self, delta: float, keep: bool, base: tuple[np.ndarray, np.ndarray, np.ndarray | None]) -> int:
        """Find this shard's rows' neighbours among `base` (ids, vectors, probes); returns pairs found.

        keep: store the pairs for `finish_graph`'s lists; otherwise only count each row's
        neighbours (the graph is then searched again, row by row, by `neighbours_near`).
        """
        lists = self.cells.lists if self.cells is not None else 0
        self.counted_only = not keep
        if keep:
            rows, targets = ball_graph.ball_pairs(self.vectors, self.ids, base[1], base[0], delta, self.probes, base[2], lists, self.threads)
            self._pairs.append((rows, targets))
            return len(rows)
        counted = ball_graph.ball_counts(self.vectors, self.ids, base[1], base[0], delta, self.probes, base[2], lists, self.threads,
                                         self.cell_lists, self.norms)
        if self.counted is None or np.array_equal(base[0], self.ids):  # round 0 (against itself) starts a search
            self.counted = counted
        else:
            self.counted = self.counted + counted
        return int(counted.counts.sum())

    def finish_graph(self) -> tuple[np.ndarray, np.ndarray]:
        """Build the CSR lists from the pairs found; returns (ids, ball sizes without the row itself)."""
        if self.counted_only:
            return self.ids, self.counted.counts
        rows = np.concatenate([p[0] for p in self._pairs]) if self._pairs else np.zeros(0, np.int64)
        targets = np.concatenate([p[1] for p in self._pairs]) if self._pairs else np.zeros(0, np.int64)
        self._pairs = []
        self.indptr, self.neighbours = ball_graph.csr(rows, targets, len(self.ids))
        return self.ids, np.diff(self.indptr)

    def neighbours_of(self, ids: np.ndarray) -> np.ndarray:
        """The neighbour ids of those of `ids` this shard holds, concatenated (from the stored lists)."""
        position = self._positions(ids)
        return ball_graph.gather(self.indptr, self.neighbours, position).astype(np.int64)

    def rows_with_probes(self, ids: np.ndarray) -> tuple[np.ndarray, ...]:
        """(ids, vectors, probes, near_cells, found_from_far) of the asked ids this shard holds (`BallCounts`)."""
        position = self._positions(ids)
        return (self.ids[position], self.vectors[position], self.probes[position],
                self.counted.near_cells[position], self.counted.found_from_far[position])

    def neighbours_near(self, delta: float, queries: tuple[np.ndarray, ...]) -> np.ndarray:
        """The ids of this shard's rows in the balls of `queries` (`rows_with_probes`), concatenated: the same
        pairs `ball_search` finds for those rows (the same kernel on the same vectors and cells, searching
        only where the count found neighbours)."""
        _, targets = ball_graph.ball_pairs(
            queries[1], queries[0], self.vectors, self.ids, delta, queries[2], self.probes, self.cells.lists, self.threads,
            base_lists=self.cell_lists, base_norms=self.norms, query_used=(queries[3], queries[4]),
        )
        return targets

    def balls_holding(self, delta: float, queries: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
        """(ids, how many) of this shard's rows that lie in some of the balls of `queries` (`rows_with_probes`):
        how many of those balls hold each (the row's own not counted), from the same pairs as `neighbours_near`."""
        held = ball_graph.balls_holding(
            queries[1], queries[0], self.vectors, self.ids, delta, queries[2], (queries[3], queries[4]), self.cells.lists,
            self.threads, self.cell_lists, self.norms,
        )
        rows = np.flatnonzero(held)
        return self.ids[rows], held[rows]

    # --- purity rule ---
    def assign(self, centers: np.ndarray, mean: np.ndarray) -> None:
        self.labels = kmeans.nearest_center(self.vectors, mean, centers, self.threads)

    def nearest_other_cluster(self, queries: np.ndarray, query_labels: np.ndarray) -> np.ndarray:
        return ball_graph.nearest_other_cluster(queries, query_labels, self.vectors, self.labels, self.threads)

    def vector_bytes(self) -> int:
        return int(self.vectors.nbytes)

    def typicality_top(self, wanted: dict[int, int], *parts: tuple) -> dict[int, list[tuple[float, int]]]:
        """The most typical unlabeled images of the clusters this shard owns, from every shard's members."""
        if not wanted:
            return {}
        ids, labels, vectors, labeled = (
            parts[0][field] if len(parts) == 1 else np.concatenate([p[field] for p in parts]) for field in range(4)
        )
        return typicality.top_of_clusters(wanted, ids, labels, vectors, labeled, self.threads)
