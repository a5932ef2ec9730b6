"""`probcover`: ProbCover (Yehuda, Dekel, Hacohen, Weinshall, "Active Learning Through a Covering Lens", NeurIPS 2022).

    raysel select STORE --method probcover --budget 100 [--delta 0.6] [--labeled labels.csv] [--shards 2] --out next.parquet

Cover the pool with balls of radius delta around the picked images:

1. The store's `embedding`s are L2-normalized; x and y are neighbours when
   |x - y| < delta (every image is in its own ball). Neighbourhoods are sparse
   (faiss range search, then an exact float64 check of each pair: `pool/ball_graph.py`).
2. Labeled images cover their balls first.
3. Greedy: pick the unlabeled image whose ball holds the most not-yet-covered
   images (ties: the smallest uri); everything in its ball is now covered.
4. Once every image is covered, the remaining picks are drawn uniformly at random
   (seeded) from the unpicked unlabeled images, as in the paper.

Score column: the images newly covered by the pick (0 for the random ones).

delta (`--delta`), or the paper's purity rule, measured on a seeded sample of at most
PURITY_SAMPLE images: K-Means (seeded) on the sample cuts the pool into
`--purity-clusters` clusters (every image goes to its nearest center); a sample
image's ball is pure when every pool image in it shares its cluster, i.e. when the
nearest pool image of another cluster is at least delta away. delta is the largest value
of DELTA_GRID (0.01, 0.02, ..., 2.00: the distances between unit vectors) whose balls are
pure for at least `--purity-alpha` (0.95) of the sample. The sample's balls are measured
against the whole pool, so this estimates the pool's purity without bias (on pools up to
PURITY_SAMPLE images it is the paper's rule exactly).

`--purity-clusters` default: min(1000, sample / 20). The paper uses the number of
classes; with K-Means clusters fewer than the true classes, clusters merge classes, balls
that cross classes count as pure and delta comes out too large, which the paper shows
hurts far more than a delta slightly too small. 1000 suits ImageNet-scale class counts;
20 sample images per cluster keep the clusters meaningful on small pools.

How it distributes (`--shards S`, pool/sharded.py): each shard actor holds N / S unit
vectors. The graph: in S rounds, shard i range-searches its rows against shard
(i + r) mod S's (object store, never the driver), keeping the neighbour lists of its own
rows; no process ever forms an N x N product or holds more than two shards. The greedy:
the driver holds one counter per image (uncovered images in its ball) and a covered
flag; each pick asks the shards for the ball of the winner and for the neighbours of
the newly covered images (2 round trips a pick; 4 with IVF, which gathers their vectors
first and counts the newly covered images' balls on the shards). Cost: O(N^2 x D / S) per shard for the exact graph, O(edges) memory over the shards
(O(N) with IVF), O(N) on the driver, O(budget x N) greedy. The purity rule's nearest
other-cluster distances: O(sample x N x D / S) in BLAS on the shards.
Same picks for any S, and the same as `probcover_reference`.

Large pools (`--ball-index auto`, above IVF_ABOVE images; or `--ball-index ivf`): the range
search compares only pairs sharing a probed IVF cell (`pool/ivf_lists.py`: `--ivf-lists` cells
trained on a seeded sample, `--ivf-probes` per image), then checks them exactly: a symmetric
subset of the exact graph, deterministic and the same for any S, about 2 x probes / cells of the
flat search's comparisons. Its edge recall and the coverage its picks reach on the exact graph:
benchmarks/bench_probcover_ivf.py. The IVF graph is never stored: the first search only counts
each image's ball (`ball_graph.ball_counts`, which also records which probed cells hold neighbours),
and the greedy counts on the shards how many of each pick's newly covered images every ball holds
(`PoolShard.balls_holding`: the same kernel over only the recorded cells, so the same pairs). Each
image is covered once, so the greedy adds at most one more pass over the pool, and memory stays
O(N x probes) however large the balls: at 1.28M images of ~1,000 tight classes a purity-rule delta
can hold every class in each ball, over 1e9 edges (16 GB as stored pairs).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa

from raysel.config import SelectConfig
from raysel.select.base import Pick, SelectionContext, SelectionMethod, selection_table
from raysel.select.errors import InvalidVectorError, SelectionConfigError
from raysel.select.pool import ivf_lists
from raysel.select.pool.ball_graph import distance_to_other_cluster
from raysel.select.pool.embedding_pool import PoolIndex
from raysel.select.pool.kmeans import kmeans_with_centers
from raysel.select.pool.sharded import PoolGroup, open_memory_pool, open_store_pool
from raysel.select.registry import register_method
from raysel.store import FeatureStore

DELTA_GRID = np.round(np.arange(1, 201) * 0.01, 2)  # 0.01 .. 2.00
MAX_DELTA = 2.0  # unit vectors are at most 2 apart
PURITY_SAMPLE = 20_000  # images whose balls the purity rule measures
PURITY_MAX_CLUSTERS = 1000  # --purity-clusters default: at most this many ...
PURITY_IMAGES_PER_CLUSTER = 20  # ... and at least this many sample images per cluster
BALL_INDEXES = ("auto", "flat", "ivf")
IVF_ABOVE = 100_000  # --ball-index auto: the exact flat search up to this many images, IVF cells above
IVF_PROBES = 8  # --ivf-probes default: cells probed per image (benchmarks/results/probcover_ivf.md)


class NoPureDeltaError(SelectionConfigError):
    """No delta of the grid gives balls pure enough: pass --delta or lower --purity-alpha."""


def purity(distance_to_other: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """Fraction of pure balls for each delta: a ball is pure when no other cluster's image is closer than delta."""
    ordered = np.sort(distance_to_other)
    impure = np.searchsorted(ordered, np.asarray(deltas, dtype=np.float64), side="left")  # distances < delta
    return 1.0 - impure / len(ordered)


def delta_of_purity(distance_to_other: np.ndarray, alpha: float, grid: np.ndarray = DELTA_GRID) -> tuple[float, float]:
    """(delta, its purity): the largest delta of `grid` whose balls are pure for at least `alpha` of the points."""
    curve = purity(distance_to_other, grid)
    passing = np.flatnonzero(curve >= alpha)
    if not len(passing):
        raise NoPureDeltaError(
            f"no delta in {grid[0]} .. {grid[-1]} makes {alpha:.0%} of the balls pure (at {grid[0]}: {curve[0]:.1%}); "
            "pass --delta or lower --purity-alpha"
        )
    best = passing.max()
    return float(grid[best]), float(curve[best])


def purity_delta(vectors: np.ndarray, labels: np.ndarray, alpha: float, grid: np.ndarray = DELTA_GRID) -> tuple[float, float]:
    """`delta_of_purity` of in-memory vectors [N, D] with cluster labels [N]."""
    return delta_of_purity(distance_to_other_cluster(vectors, labels), alpha, grid)


def purity_clusters_for(requested: int | None, sample: int) -> int:
    """--purity-clusters, or its default min(1000, sample / 20) (at least 2)."""
    if requested is not None:
        return requested
    return max(2, min(PURITY_MAX_CLUSTERS, sample // PURITY_IMAGES_PER_CLUSTER))


def purity_sample(count: int, seed: int) -> np.ndarray:
    """Sorted ids of the purity rule's sample: every image of a pool up to PURITY_SAMPLE."""
    if count <= PURITY_SAMPLE:
        return np.arange(count, dtype=np.int64)
    return np.sort(np.random.default_rng([seed, 11]).choice(count, size=PURITY_SAMPLE, replace=False)).astype(np.int64)


def gather_rows(group: PoolGroup, ids: np.ndarray) -> np.ndarray:
    """[len(ids), D] float32 vectors of the pool rows `ids` (sorted), in id order, gathered from the shards."""
    found = group.call("rows_of", ids)
    order = np.argsort(np.concatenate([part[0] for part in found]), kind="stable")
    return np.ascontiguousarray(np.concatenate([part[1] for part in found])[order])


def ball_index_for(requested: str, count: int) -> str:
    """'flat' or 'ivf': --ball-index, where 'auto' means IVF above IVF_ABOVE images."""
    if requested == "auto":
        return "ivf" if count > IVF_ABOVE else "flat"
    return requested


def ivf_cells_on_pool(group: PoolGroup, index: PoolIndex, lists: int | None, probes: int, seed: int) -> ivf_lists.IvfCells:
    """IVF cells trained (seeded K-Means) on a sample of the (normalized) pool."""
    used = lists if lists is not None else ivf_lists.default_lists(index.count)
    sample = gather_rows(group, ivf_lists.train_sample(index.count, used, seed))
    return ivf_lists.train_lists(sample, used, probes, seed)


def purity_delta_on_pool(group: PoolGroup, index: PoolIndex, clusters: int | None, alpha: float, seed: int) -> tuple[float, dict]:
    """The purity rule over a (normalized) pool: (delta, figures)."""
    sample = gather_rows(group, purity_sample(index.count, seed))
    used = purity_clusters_for(clusters, len(sample))
    labels, mean, centers, _ = kmeans_with_centers(sample, used, seed)
    group.call("assign", group.put(centers), mean)
    distances = np.min(group.call("nearest_other_cluster", group.put(sample), group.put(labels)), axis=0)
    delta, ball_purity = delta_of_purity(distances, alpha)
    return delta, {
        "delta_source": "purity rule", "purity": ball_purity, "purity_clusters": int(len(np.unique(labels))),
        "purity_sample": len(sample),
    }


def probcover_on_pool(
    group: PoolGroup, index: PoolIndex, budget: int, delta: float, seed: int, cells: ivf_lists.IvfCells | None = None
) -> tuple[list[Pick], dict]:
    """ProbCover's picks from a numbered, checked pool whose vectors are used as they are.

    `cells`: build the graph through these IVF cells (approximate: may miss edges); None: exact.
    """
    count = index.count
    stored = cells is None  # IVF: count the balls, then search each covered image's ball when the greedy needs it
    group.call("set_cells", group.put(cells))
    pairs = group.round_robin("ball_search", float(delta), stored)  # a restarted shard replays this search
    uncovered_in_ball = np.ones(count, dtype=np.int64)  # the image itself is in its ball
    for ids, degree in group.call("finish_graph"):
        uncovered_in_ball[ids] += degree
    covered = np.zeros(count, dtype=bool)

    def searched(rows: np.ndarray) -> object:
        """The shards' (ids, vectors, probes, ...) of `rows` (sorted), put once for every shard to search."""
        found = [part for part in group.call("rows_with_probes", rows) if len(part[0])]
        return group.put(tuple(np.concatenate([part[i] for part in found]) for i in range(len(found[0]))))

    def neighbours(rows: np.ndarray) -> np.ndarray:
        """The neighbour ids of `rows` (sorted), concatenated."""
        rows = np.asarray(rows, dtype=np.int64)
        if stored:
            return np.concatenate(group.call("neighbours_of", rows) + [np.zeros(0, np.int64)])
        if not len(rows):
            return np.zeros(0, np.int64)
        return np.concatenate(group.call("neighbours_near", float(delta), searched(rows)) + [np.zeros(0, np.int64)])

    def cover(rows: np.ndarray) -> None:
        rows = np.unique(rows)
        rows = rows[~covered[rows]]
        covered[rows] = True
        np.subtract.at(uncovered_in_ball, rows, 1)
        if stored:
            np.subtract.at(uncovered_in_ball, neighbours(rows), 1)  # y leaves the ball of each neighbour
        elif len(rows):  # the same, counted on the shards: how many of the newly covered each ball held
            for ids, held in group.call("balls_holding", float(delta), searched(rows)):
                uncovered_in_ball[ids] -= held  # ids are distinct

    labeled_rows = np.flatnonzero(index.labeled)
    if len(labeled_rows):
        cover(np.concatenate([labeled_rows, neighbours(labeled_rows)]))
    coverage_labeled = float(covered.mean())

    eligible = ~index.labeled
    picks: list[Pick] = []
    while len(picks) < budget:
        gains = np.where(eligible, uncovered_in_ball, -1)
        best = int(gains.argmax())  # the first maximum: the smallest uri
        if gains[best] <= 0:
            break  # every image is covered
        eligible[best] = False
        picks.append(Pick(index.uri(best), float(gains[best])))
        cover(np.concatenate([[best], neighbours(np.array([best]))]))
    covering_picks = len(picks)
    rest = np.random.default_rng(seed).choice(np.flatnonzero(eligible), size=budget - len(picks), replace=False)
    picks.extend(Pick(index.uri(int(row)), 0.0) for row in rest)
    figures = {
        "delta": delta,
        "edges": int(sum(pairs) // 2),
        "coverage_by_labeled": coverage_labeled,
        "coverage": float(covered.mean()),
        "covering_picks": covering_picks,
        "random_picks": len(rest),
        "shards": group.num_shards,
        "ball_index": "flat" if cells is None else "ivf",
        **({} if cells is None else {"ivf_lists": cells.lists, "ivf_probes": cells.probes}),
    }
    return picks, figures


def probcover_reference(
    vectors: np.ndarray, uris: Sequence[str], budget: int, delta: float, labeled: Sequence[str] = (), seed: int = 0, shards: int = 1,
    ball_index: str = "flat", ivf_lists: int | None = None, ivf_probes: int = IVF_PROBES,
) -> list[Pick]:
    """ProbCover on in-memory vectors [N, D], used as given (the method normalizes the store's embeddings first).

    `shards` cuts the rows into that many in-process shards: the picks do not change.
    `ball_index` ('flat', 'ivf' or 'auto'), `ivf_lists`, `ivf_probes`: as --ball-index etc.
    """
    return probcover_reference_figures(vectors, uris, budget, delta, labeled, seed, shards, ball_index, ivf_lists, ivf_probes)[0]


def probcover_reference_figures(
    vectors: np.ndarray, uris: Sequence[str], budget: int, delta: float, labeled: Sequence[str] = (), seed: int = 0, shards: int = 1,
    ball_index: str = "flat", ivf_lists: int | None = None, ivf_probes: int = IVF_PROBES,
) -> tuple[list[Pick], dict]:
    """`probcover_reference` with the run's figures (edges, coverage, ...)."""
    group, index = open_memory_pool(vectors, uris, labeled, budget, shards)
    cells = None
    if ball_index_for(ball_index, index.count) == "ivf":
        cells = ivf_cells_on_pool(group, index, ivf_lists, ivf_probes, seed)
    return probcover_on_pool(group, index, budget, delta, seed, cells)


def select_on_pool(group: PoolGroup, index: PoolIndex, config: SelectConfig) -> tuple[list[Pick], dict]:
    """Normalize, delta (given or by the purity rule), then the greedy: what the method runs on its shards."""
    zero = [row for row in group.call("normalize") if row >= 0]
    if zero:
        raise InvalidVectorError(f"the embedding of {index.uri(min(zero))} is zero: it has no direction")
    figures: dict = {"delta_source": "--delta"}
    delta = config.delta
    if delta is None:
        delta, figures = purity_delta_on_pool(group, index, config.purity_clusters, config.purity_alpha, config.seed)
    cells = None
    if ball_index_for(config.ball_index, index.count) == "ivf":
        cells = ivf_cells_on_pool(group, index, config.ivf_lists, config.ivf_probes, config.seed)
    picks, graph_figures = probcover_on_pool(group, index, config.budget, delta, config.seed, cells)
    return picks, {**figures, **graph_figures}


@register_method("probcover")
class ProbCoverMethod(SelectionMethod):
    """Greedy max coverage of delta-balls on normalized embeddings; delta by the purity rule unless given."""

    fingerprint_options = ("delta", "purity_alpha", "purity_clusters", "ball_index", "ivf_lists", "ivf_probes")

    def validate(self, config: SelectConfig) -> None:
        if config.distance is not None:
            raise SelectionConfigError("--distance does not apply to probcover (Euclidean distance on normalized embeddings)")
        if config.delta is not None and not 0.0 < config.delta <= MAX_DELTA:
            raise SelectionConfigError(f"--delta must be in (0, {MAX_DELTA}] (distances between unit vectors), got {config.delta}")
        if not 0.0 < config.purity_alpha <= 1.0:
            raise SelectionConfigError(f"--purity-alpha must be in (0, 1], got {config.purity_alpha}")
        if config.purity_clusters is not None and (not isinstance(config.purity_clusters, int) or config.purity_clusters < 2):
            raise SelectionConfigError(f"--purity-clusters must be >= 2, got {config.purity_clusters}")
        if config.ball_index not in BALL_INDEXES:
            raise SelectionConfigError(f"--ball-index must be one of {', '.join(BALL_INDEXES)}, got {config.ball_index!r}")
        if config.ivf_lists is not None and config.ivf_lists < 1:
            raise SelectionConfigError(f"--ivf-lists must be >= 1, got {config.ivf_lists}")
        if config.ivf_probes < 1:
            raise SelectionConfigError(f"--ivf-probes must be >= 1, got {config.ivf_probes}")

    def select(self, config: SelectConfig, store: FeatureStore, context: SelectionContext) -> pa.Table:
        self.validate(config)
        group, index = open_store_pool(store, config.shards, context.labeled, config.budget, f"labeled file {config.labeled!r}")
        try:
            picks, figures = select_on_pool(group, index, config)
            shard_stats = group.stats()
        finally:
            group.close()
        context.record(picks)
        context.stats.update(images=index.count, labeled=int(index.labeled.sum()), picks=len(picks), shard_stats=shard_stats, **figures)
        return selection_table(picks)
