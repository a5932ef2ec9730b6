"""`typiclust`: TypiClust (Hacohen, Dekel, Weinshall, "Active Learning on a Budget", ICML 2022).

    raysel select STORE --method typiclust --budget 100 --labeled labels.csv --out next.parquet

At low budgets, label typical images of regions no label covers yet:

1. K-Means (seeded, `pool_kmeans.py`) cuts the pool (labeled + unlabeled
   `embedding`s) into min(|labeled| + budget, --typiclust-max-clusters) clusters.
2. Clusters are visited in order: fewest labeled-or-picked images first, then the
   largest, then the one holding the smallest uri. Clusters of fewer than
   MIN_CLUSTER_SIZE images come after all others (the paper's code drops them:
   a lone outlier is not typical of anything). A cluster gets a second pick only
   once every cluster has one, and so on.
3. From the visited cluster, pick its most typical unlabeled, unpicked image:
   typicality(x) = 1 / mean Euclidean distance to its k nearest neighbours in the
   cluster, k = min(20, cluster size - 1) (0 for a cluster of one image; inf for
   duplicates). Ties: the smallest uri.

Score column: the typicality. Typicality is measured over all the cluster's images,
labeled ones included, once per cluster. The paper's code differs in small ways:
faiss' squared L2 distances and 1 / (mean + 1e-5), k = min(20, size // 2), and
labeled or picked images left out of the neighbourhoods.

Cost: K-Means O(iterations x N x clusters x D); typicality O(size^2 x D) for each
cluster a pick comes from. Everything runs in the driver; memory N x D float32 plus
O(block x cluster size).
"""
from __future__ import annotations

import heapq
from typing import Sequence

import numpy as np
import pyarrow as pa

from raysel.config import SelectConfig
from raysel.select.base import Pick, SelectionContext, SelectionMethod, selection_table
from raysel.select.pool.embedding_pool import EmbeddingPool, make_pool, read_pool
from raysel.select.errors import SelectionConfigError
from raysel.select.pool.kmeans import seeded_kmeans
from raysel.select.registry import register_method
from raysel.store import FeatureStore

TYPICALITY_NEIGHBOURS = 20  # the paper's k
MIN_CLUSTER_SIZE = 5  # smaller clusters are visited last (the paper's code skips them)
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
        nearest = np.partition(np.maximum(squared, 0.0), k - 1, axis=1)[:, :k]
        mean_distance[start : start + len(block)] = np.sqrt(nearest).mean(axis=1)
    with np.errstate(divide="ignore"):
        return 1.0 / mean_distance


def typiclust_picks(pool: EmbeddingPool, budget: int, max_clusters: int, seed: int) -> tuple[list[Pick], dict]:
    """TypiClust's picks from a checked pool (rows sorted by uri), in order; and figures for the stats."""
    clusters = min(int(pool.labeled.sum()) + budget, max_clusters)
    labels, steps = seeded_kmeans(pool.vectors, clusters, seed)
    members = np.argsort(labels, kind="stable")  # row indices grouped by cluster, ascending (= by uri) within
    counts = np.bincount(labels, minlength=clusters)
    bounds = np.concatenate([[0], np.cumsum(counts)])

    queue: list[tuple[bool, int, int, int, int]] = []  # (tiny, covered, -size, first row, cluster)
    for cluster in np.flatnonzero(counts):
        rows = members[bounds[cluster] : bounds[cluster + 1]]
        covered = int(pool.labeled[rows].sum())
        queue.append((bool(counts[cluster] < MIN_CLUSTER_SIZE), covered, -int(counts[cluster]), int(rows[0]), int(cluster)))
    heapq.heapify(queue)

    ranked: dict[int, list[tuple[float, int]]] = {}  # cluster -> eligible (typicality, row), most typical last
    picks: list[Pick] = []
    while len(picks) < budget:
        tiny, covered, negative_size, first, cluster = heapq.heappop(queue)
        if cluster not in ranked:
            rows = members[bounds[cluster] : bounds[cluster + 1]]
            scores = typicality(pool.vectors[rows])
            eligible = [(float(scores[i]), int(row)) for i, row in enumerate(rows) if not pool.labeled[row]]
            ranked[cluster] = sorted(eligible, key=lambda item: (item[0], -item[1]))  # pop() gives max, smallest uri
        if not ranked[cluster]:
            continue  # every image of the cluster is labeled or picked
        score, row = ranked[cluster].pop()
        picks.append(Pick(pool.uris[row], score))
        heapq.heappush(queue, (tiny, covered + 1, negative_size, first, cluster))
    return picks, {"clusters": clusters, "nonempty_clusters": int((counts > 0).sum()), "kmeans_steps": steps}


def typiclust_reference(
    vectors: np.ndarray, uris: Sequence[str], budget: int, labeled: Sequence[str] = (), max_clusters: int = 500, seed: int = 0
) -> list[Pick]:
    """TypiClust on in-memory vectors [N, D] (what the method does with the store's embeddings)."""
    return typiclust_picks(make_pool(vectors, uris, labeled, budget), budget, max_clusters, seed)[0]


@register_method("typiclust")
class TypiClustMethod(SelectionMethod):
    """K-Means into labeled + budget clusters; the most typical image of each uncovered cluster, largest first."""

    fingerprint_options = ("typiclust_max_clusters",)

    def validate(self, config: SelectConfig) -> None:
        if config.distance is not None:
            raise SelectionConfigError("--distance does not apply to typiclust (Euclidean distance on the embedding)")
        if not isinstance(config.typiclust_max_clusters, int) or config.typiclust_max_clusters < 1:
            raise SelectionConfigError(f"--typiclust-max-clusters must be >= 1, got {config.typiclust_max_clusters}")

    def select(self, config: SelectConfig, store: FeatureStore, context: SelectionContext) -> pa.Table:
        self.validate(config)
        pool = read_pool(store, context.labeled, config)
        picks, figures = typiclust_picks(pool, config.budget, config.typiclust_max_clusters, config.seed)
        context.record(picks)
        context.stats.update(images=len(pool.uris), labeled=int(pool.labeled.sum()), picks=len(picks), **figures)
        return selection_table(picks)
