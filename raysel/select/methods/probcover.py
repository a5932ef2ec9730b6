"""`probcover`: ProbCover (Yehuda, Dekel, Hacohen, Weinshall, "Active Learning Through a Covering Lens", NeurIPS 2022).

    raysel select STORE --method probcover --budget 100 [--delta 0.6] [--labeled labels.csv] --out next.parquet

Cover the pool with balls of radius delta around the picked images:

1. The store's `embedding`s are L2-normalized; x and y are neighbours when
   |x - y| < delta (every image is in its own ball). Neighbourhoods are sparse
   (faiss range search, `ball_graph.py`).
2. Labeled images cover their balls first.
3. Greedy: pick the unlabeled image whose ball holds the most not-yet-covered
   images (ties: the smallest uri); everything in its ball is now covered.
4. Once every image is covered, the remaining picks are drawn uniformly at random
   (seeded) from the unpicked unlabeled images, as in the paper.

Score column: the images newly covered by the pick (0 for the random ones).

delta (`--delta`), or the paper's purity rule: K-Means (seeded) cuts the normalized
pool into `--purity-clusters` clusters (the paper: the number of classes); a ball is
pure when every image in it shares its center's cluster, i.e. when the nearest image
of another cluster is at least delta away. delta is the largest value of DELTA_GRID
(0.01, 0.02, ..., 2.00: the distances between unit vectors) whose balls are pure for at
least `--purity-alpha` (0.95) of the images.

Cost: the graph is an exact brute-force range search, O(N^2 x D) time and O(edges)
memory (the purity rule's nearest-other-cluster search is the same order); the
greedy is O(edges + budget x N). Everything runs in the driver.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa

from raysel.config import SelectConfig
from raysel.select.pool.ball_graph import ball_neighbours, distance_to_other_cluster, gather
from raysel.select.base import Pick, SelectionContext, SelectionMethod, selection_table
from raysel.select.pool.embedding_pool import EmbeddingPool, make_pool, read_pool
from raysel.select.errors import InvalidVectorError, SelectionConfigError
from raysel.select.pool.kmeans import seeded_kmeans
from raysel.select.registry import register_method
from raysel.store import FeatureStore

DELTA_GRID = np.round(np.arange(1, 201) * 0.01, 2)  # 0.01 .. 2.00
MAX_DELTA = 2.0  # unit vectors are at most 2 apart


class NoPureDeltaError(SelectionConfigError):
    """No delta of the grid gives balls pure enough: pass --delta or lower --purity-alpha."""


def normalized(pool: EmbeddingPool) -> np.ndarray:
    """[N, D] float32 unit vectors; InvalidVectorError for a zero embedding."""
    norms = np.linalg.norm(pool.vectors.astype(np.float64), axis=1)
    if (norms == 0).any():
        raise InvalidVectorError(f"the embedding of {pool.uris[int(np.argmin(norms))]} is zero: it has no direction")
    return (pool.vectors / norms[:, None]).astype(np.float32)


def purity(distance_to_other: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """Fraction of pure balls for each delta: a ball is pure when no other cluster's image is closer than delta."""
    ordered = np.sort(distance_to_other)
    impure = np.searchsorted(ordered, np.asarray(deltas, dtype=np.float64), side="left")  # distances < delta
    return 1.0 - impure / len(ordered)


def purity_delta(vectors: np.ndarray, labels: np.ndarray, alpha: float, grid: np.ndarray = DELTA_GRID) -> tuple[float, float]:
    """(delta, its purity): the largest delta of `grid` whose balls are pure for at least `alpha` of the points."""
    curve = purity(distance_to_other_cluster(vectors, labels), grid)
    passing = np.flatnonzero(curve >= alpha)
    if not len(passing):
        raise NoPureDeltaError(
            f"no delta in {grid[0]} .. {grid[-1]} makes {alpha:.0%} of the balls pure (at {grid[0]}: {curve[0]:.1%}); "
            "pass --delta or lower --purity-alpha"
        )
    best = passing.max()
    return float(grid[best]), float(curve[best])


def probcover_picks(pool: EmbeddingPool, vectors: np.ndarray, budget: int, delta: float, seed: int) -> tuple[list[Pick], dict]:
    """ProbCover's picks from a checked pool (rows sorted by uri) with `vectors` [N, D] used as they are."""
    count = len(pool.uris)
    indptr, neighbours = ball_neighbours(vectors, delta)
    uncovered_in_ball = np.diff(indptr) + 1  # the image itself is in its ball
    covered = np.zeros(count, dtype=bool)

    def cover(rows: np.ndarray) -> None:
        rows = np.unique(rows)
        rows = rows[~covered[rows]]
        covered[rows] = True
        np.subtract.at(uncovered_in_ball, rows, 1)
        np.subtract.at(uncovered_in_ball, gather(indptr, neighbours, rows), 1)  # y leaves the ball of each neighbour

    labeled_rows = np.flatnonzero(pool.labeled)
    cover(np.concatenate([labeled_rows, gather(indptr, neighbours, labeled_rows)]))
    coverage_labeled = float(covered.mean())

    eligible = ~pool.labeled
    picks: list[Pick] = []
    while len(picks) < budget:
        gains = np.where(eligible, uncovered_in_ball, -1)
        best = int(gains.argmax())  # the first maximum: the smallest uri
        if gains[best] <= 0:
            break  # every image is covered
        eligible[best] = False
        picks.append(Pick(pool.uris[best], float(gains[best])))
        cover(np.concatenate([[best], neighbours[indptr[best] : indptr[best + 1]]]))
    covering_picks = len(picks)
    rest = np.random.default_rng(seed).choice(np.flatnonzero(eligible), size=budget - len(picks), replace=False)
    picks.extend(Pick(pool.uris[int(row)], 0.0) for row in rest)
    figures = {
        "delta": delta,
        "edges": int(len(neighbours) // 2),
        "coverage_by_labeled": coverage_labeled,
        "coverage": float(covered.mean()),
        "covering_picks": covering_picks,
        "random_picks": len(rest),
    }
    return picks, figures


def probcover_reference(
    vectors: np.ndarray, uris: Sequence[str], budget: int, delta: float, labeled: Sequence[str] = (), seed: int = 0
) -> list[Pick]:
    """ProbCover on in-memory vectors [N, D], used as given (the method normalizes the store's embeddings first)."""
    pool = make_pool(vectors, uris, labeled, budget)
    return probcover_picks(pool, pool.vectors, budget, delta, seed)[0]


@register_method("probcover")
class ProbCoverMethod(SelectionMethod):
    """Greedy max coverage of delta-balls on normalized embeddings; delta by the purity rule unless given."""

    fingerprint_options = ("delta", "purity_alpha", "purity_clusters")

    def validate(self, config: SelectConfig) -> None:
        if config.distance is not None:
            raise SelectionConfigError("--distance does not apply to probcover (Euclidean distance on normalized embeddings)")
        if config.delta is not None and not 0.0 < config.delta <= MAX_DELTA:
            raise SelectionConfigError(f"--delta must be in (0, {MAX_DELTA}] (distances between unit vectors), got {config.delta}")
        if not 0.0 < config.purity_alpha <= 1.0:
            raise SelectionConfigError(f"--purity-alpha must be in (0, 1], got {config.purity_alpha}")
        if not isinstance(config.purity_clusters, int) or config.purity_clusters < 2:
            raise SelectionConfigError(f"--purity-clusters must be >= 2, got {config.purity_clusters}")

    def select(self, config: SelectConfig, store: FeatureStore, context: SelectionContext) -> pa.Table:
        self.validate(config)
        pool = read_pool(store, context.labeled, config)
        unit = normalized(pool)
        figures: dict = {"delta_source": "--delta"}
        delta = config.delta
        if delta is None:
            labels, _ = seeded_kmeans(unit, config.purity_clusters, config.seed)
            delta, ball_purity = purity_delta(unit, labels, config.purity_alpha)
            figures = {"delta_source": "purity rule", "purity": ball_purity, "purity_clusters": int(len(np.unique(labels)))}
        picks, graph_figures = probcover_picks(pool, unit, config.budget, delta, config.seed)
        context.record(picks)
        context.stats.update(images=len(pool.uris), labeled=int(pool.labeled.sum()), picks=len(picks), **figures, **graph_figures)
        return selection_table(picks)
