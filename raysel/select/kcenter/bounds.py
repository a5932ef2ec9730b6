"""Exact min-distance updates that skip what the triangle inequality proves cannot change.

A shard keeps, for every live vector x (a cluster of an eligible image), its nearest
selected center a(x) and d(x) = dist(x, a(x)), and for every selected center a the
radius R(a) of its cell (max d(x) over the live vectors whose nearest center it is).
When a new center c arrives, with d the metric (euclidean; under cosine the distance
between unit vectors, sqrt(2 (1 - cos)), a monotone function of the cosine distance):

- dist(x, c) >= dist(a, c) - dist(x, a), so if dist(a, c) >= 2 dist(x, a) then c is not
  closer to x than a: x is skipped (Elkan's / Raff's half-distance test);
- if dist(a, c) >= 2 R(a), that holds for every x in a's cell: the cell is skipped
  without looking at its vectors (GUDHI's / Sheehy's cell pruning).

Both tests carry a margin (`distances.metric_error_margin`) covering the kernel's
rounding, so a skipped pair is one whose computed distance is provably larger than
the computed d(x): every min-distance ends up bit-identical to the unpruned pass.
The GEAL image score (max over K clusters of each cluster's min-distance) and the
`prob` weights are computed from these exact per-vector values, so no bound on the
aggregate is needed. Vectors of picked / seed images are retired: nothing reads
their min-distances, so they are never updated again (and leave their cells).
"""
from __future__ import annotations

import numpy as np

from raysel.select.distances import (
    CENTER_BLOCK,
    metric_distances,
    metric_error_margin,
    pairwise_distances,
    update_nearest,
)

TEST_CHUNK = 32_768  # vectors tested against the new centers at a time (bounds the [chunk, c] masks)


class NearestCenters:
    """Nearest selected center and cell radii for the vectors of one shard.

    Args:
        points: [V, D] stored vectors (float32 or float16). point_factors: [V] float64.
        distance: "cosine" or "euclidean".
        min_distance: [V] float64, the shard's min-distances (updated in place).
    """

    def __init__(self, points: np.ndarray, point_factors: np.ndarray, distance: str, min_distance: np.ndarray) -> None:
        self.points = points
        self.point_factors = point_factors
        self.distance = distance
        self.min_distance = min_distance
        self.nearest = np.full(len(points), -1, dtype=np.int64 if len(points) >= 2**31 else np.int32)
        dims = points.shape[1]
        self.centers = np.empty((0, dims), dtype=points.dtype)
        self.center_factors = np.empty(0)
        self.radius = np.empty(0)  # metric units; -inf: no live vector in the cell
        self.max_squared_norm = float(point_factors.max()) if distance == "euclidean" and len(points) else 1.0
        self.distance_evaluations = 0  # (vector, new center) distances computed
        self.center_distance_evaluations = 0  # (cell center, new center) distances computed
        self.skipped_cells = 0  # (cell, new center) pairs skipped without looking at the cell

    @property
    def num_centers(self) -> int:
        return len(self.center_factors)

    def _append(self, centers: np.ndarray, factors: np.ndarray) -> int:
        first = self.num_centers
        self.centers = np.concatenate([self.centers, centers.astype(self.points.dtype, copy=False)])
        self.center_factors = np.concatenate([self.center_factors, factors])
        self.radius = np.concatenate([self.radius, np.full(len(factors), -np.inf)])
        if self.distance == "euclidean" and len(factors):
            self.max_squared_norm = max(self.max_squared_norm, float(factors.max()))
        return first

    def update(self, centers: np.ndarray, factors: np.ndarray, live: np.ndarray) -> None:
        """Fold new centers into the min-distances of the live vectors, skipping provable non-changes.

        Args:
            centers: [c, D] stored vectors. factors: [c] float64.
            live: [V] bool, the vectors whose min-distances are still read.
        """
        if len(factors) == 0 or len(self.points) == 0:
            return
        first = self._append(centers, factors)
        margin = metric_error_margin(self.distance, self.points.shape[1], self.max_squared_norm)
        live_rows = np.flatnonzero(live)
        owners = self.nearest[live_rows]
        unassigned = live_rows[owners < 0]
        assigned, owners = live_rows[owners >= 0], owners[owners >= 0]
        num_blocks = -(-len(factors) // CENTER_BLOCK)
        parts = [unassigned]  # rows to compute, unassigned ones (no center yet) against every block
        wants = [np.ones((len(unassigned), num_blocks), dtype=bool)]
        hot_cells = np.empty(0, dtype=np.int64)
        cells = np.flatnonzero(self.radius[:first] > -np.inf)
        candidates = np.empty(0, dtype=np.int64)
        if len(cells) and len(assigned):
            between = metric_distances(
                pairwise_distances(self.centers[cells], self.center_factors[cells], centers, factors, self.distance),
                self.distance,
            )  # [cells, c]
            self.center_distance_evaluations += between.size
            reachable = between < 2.0 * self.radius[cells, None] + margin  # the cell may hold a vector c is closer to
            self.skipped_cells += int(between.size - reachable.sum())
            hot = reachable.any(axis=1)
            hot_cells, between = cells[hot], between[hot]
            position = np.full(first, -1, dtype=np.int64)
            position[hot_cells] = np.arange(len(hot_cells))
            in_hot = position[owners] >= 0
            candidates, candidate_cells = assigned[in_hot], position[owners[in_hot]]
            padded = num_blocks * CENTER_BLOCK - len(factors)
            for start in range(0, len(candidates), TEST_CHUNK):
                rows = candidates[start : start + TEST_CHUNK]
                own = metric_distances(self.min_distance[rows], self.distance)
                needed = between[candidate_cells[start : start + TEST_CHUNK]] < 2.0 * own[:, None] + margin
                if padded:
                    needed = np.pad(needed, ((0, 0), (0, padded)))
                by_block = needed.reshape(len(rows), num_blocks, CENTER_BLOCK).any(axis=2)
                keep = by_block.any(axis=1)
                parts.append(rows[keep])
                wants.append(by_block[keep])
        rows, wanted = np.concatenate(parts), np.concatenate(wants)
        order = np.lexsort(np.packbits(wanted, axis=1).T[::-1])  # rows needing the same center blocks: adjacent
        self.distance_evaluations += update_nearest(
            self.points, self.point_factors, rows[order], centers, factors, self.distance,
            self.min_distance, self.nearest, first, wanted[order],
        )
        touched = [unassigned, candidates]
        # radii: exact again for the cells that were looked at and the new ones; the others
        # only lost members (retired images) and keep a radius that is still an upper bound
        self.radius[hot_cells] = -np.inf
        touched = np.concatenate(touched)
        if len(touched):
            np.maximum.at(self.radius, self.nearest[touched], metric_distances(self.min_distance[touched], self.distance))
