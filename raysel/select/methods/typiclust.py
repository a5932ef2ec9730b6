"""`typiclust`: TypiClust (Hacohen, Dekel, Weinshall, "Active Learning on a Budget", ICML 2022).

    raysel select STORE --method typiclust --budget 100 --labeled labels.csv [--shards 2] --out next.parquet

At low budgets, label typical images of regions no label covers yet:

1. K-Means (seeded, `pool/kmeans.py`) cuts the pool (labeled + unlabeled
   `embedding`s) into min(|labeled| + budget, --typiclust-max-clusters) clusters.
2. Clusters are visited in order: fewest labeled-or-picked images first, then the
   largest, then the one holding the smallest uri. Clusters of at most
   MIN_CLUSTER_SIZE (5) images come after all others (the paper's code drops them:
   a lone outlier is not typical of anything; here they are used only when the
   other clusters run out of images). A cluster gets a second pick only once every
   cluster has one, and so on.
3. From the visited cluster, pick its most typical unlabeled, unpicked image:
   typicality(x) = 1 / mean Euclidean distance to its k nearest neighbours in the
   cluster, k = min(20, cluster size - 1) (0 for a cluster of one image; inf for
   duplicates). Ties: the smallest uri.

Score column: the typicality. Typicality is measured over all the cluster's images,
labeled ones included, once per cluster. The paper's code differs in small ways:
faiss' squared L2 distances and 1 / (mean + 1e-5), k = min(20, size // 2), and
labeled or picked images left out of the neighbourhoods.

How it distributes (`--shards S`, pool/sharded.py): each shard actor holds N / S rows.
K-Means: the driver draws the k-means++ sample and runs the init, then every Lloyd
step sends the centers to the shards, which assign their rows (BLAS) and return
fixed-point cluster sums, reduced exactly on the driver. The driver then knows each
cluster's size and labeled count, so it plans the whole visit order; each cluster
it picks from gets an owner shard, every shard sends the owners their members
(through Ray's object store), and owners compute typicality per cluster. Driver
memory: the sorted uris + O(k x D); shard memory: its rows + its clusters' members.
Cost: O(iterations x N x k x D / S) per shard for K-Means, O(size^2 x D) per
picked cluster. Same picks for any S, and the same as `typiclust_reference`.
"""
from __future__ import annotations

import heapq
from typing import Sequence

import numpy as np
import pyarrow as pa

from raysel.config import SelectConfig
from raysel.select.base import Pick, SelectionContext, SelectionMethod, selection_table
from raysel.select.errors import SelectionConfigError, SelectionError
from raysel.select.pool.embedding_pool import PoolIndex
from raysel.select.pool.kmeans import distributed_kmeans
from raysel.select.pool.sharded import PoolGroup, open_memory_pool, open_store_pool
from raysel.select.pool.typicality import TYPICALITY_NEIGHBOURS, typicality  # noqa: F401  (re-exported)
from raysel.select.registry import register_method
from raysel.store import FeatureStore

MIN_CLUSTER_SIZE = 5  # clusters of at most this many images are visited last (the paper's code drops them)


class TooFewImagesError(SelectionError):
    """Fewer images in the pool than the clusters TypiClust asks for."""


def visit_order(sizes: np.ndarray, covered: np.ndarray, first: np.ndarray, budget: int) -> list[int]:
    """The cluster each pick comes from, in pick order (see the module docstring, step 2).

    Args:
        sizes, covered, first: [k] images, labeled images, lowest id per cluster.
    """
    queue = [
        (bool(sizes[c] <= MIN_CLUSTER_SIZE), int(covered[c]), -int(sizes[c]), int(first[c]), int(c))
        for c in np.flatnonzero(sizes)
    ]
    heapq.heapify(queue)
    eligible = (sizes - covered).astype(np.int64)
    order: list[int] = []
    while len(order) < budget and queue:
        tiny, count, negative_size, lowest, cluster = heapq.heappop(queue)
        if eligible[cluster] <= 0:
            continue  # every image of the cluster is labeled or picked
        eligible[cluster] -= 1
        order.append(cluster)
        heapq.heappush(queue, (tiny, count + 1, negative_size, lowest, cluster))
    return order


def owners(clusters: Sequence[int], sizes: np.ndarray, shards: int, total: int) -> np.ndarray:
    """[total] owner shard of each cluster (-1: not needed), largest clusters first to the least loaded shard."""
    owner = np.full(total, -1, dtype=np.int64)
    load = [0] * shards
    for cluster in sorted(clusters, key=lambda c: (-int(sizes[c]), c)):
        target = min(range(shards), key=lambda s: (load[s], s))
        owner[cluster] = target
        load[target] += int(sizes[cluster])
    return owner


def typiclust_on_pool(group: PoolGroup, index: PoolIndex, budget: int, max_clusters: int, seed: int) -> tuple[list[Pick], dict]:
    """TypiClust's picks from a numbered, checked pool, in order; and figures for the stats."""
    clusters = min(int(index.labeled.sum()) + budget, max_clusters)
    if clusters > index.count:
        raise TooFewImagesError(f"typiclust asks for {clusters} clusters but the pool holds only {index.count} images")
    _, centers, steps = distributed_kmeans(group, index.count, index.low, index.high, clusters, seed)
    k = len(centers)
    summaries = group.call("cluster_summary", k, index.count)
    sizes = np.sum([s[0] for s in summaries], axis=0)
    covered = np.sum([s[1] for s in summaries], axis=0)
    first = np.min([s[2] for s in summaries], axis=0)
    order = visit_order(sizes, covered, first, budget)
    wanted: dict[int, int] = {}
    for cluster in order:
        wanted[cluster] = wanted.get(cluster, 0) + 1
    owner = owners(list(wanted), sizes, group.num_shards, k)
    per_owner = [({c: n for c, n in wanted.items() if owner[c] == p},) for p in range(group.num_shards)]
    ranked: dict[int, list[tuple[float, int]]] = {}
    for part in group.exchange("members_for", (owner,), "typicality_top", per_owner):
        ranked.update(part)
    taken = {cluster: 0 for cluster in wanted}
    picks: list[Pick] = []
    for cluster in order:
        score, row = ranked[cluster][taken[cluster]]
        taken[cluster] += 1
        picks.append(Pick(index.uri(row), score))
    figures = {
        "clusters": clusters,
        "nonempty_clusters": int((sizes > 0).sum()),
        "kmeans_steps": steps,
        "clusters_picked_from": len(wanted),
        "shards": group.num_shards,
    }
    return picks, figures


def typiclust_reference(
    vectors: np.ndarray,
    uris: Sequence[str],
    budget: int,
    labeled: Sequence[str] = (),
    max_clusters: int = 500,
    seed: int = 0,
    shards: int = 1,
) -> list[Pick]:
    """TypiClust on in-memory vectors [N, D], in this process (what the method does with the store's embeddings).

    `shards` cuts the rows into that many in-process shards: the picks do not change.
    """
    group, index = open_memory_pool(vectors, uris, labeled, budget, shards)
    return typiclust_on_pool(group, index, budget, max_clusters, seed)[0]


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
        group, index = open_store_pool(store, config.shards, context.labeled, config.budget, f"labeled file {config.labeled!r}")
        try:
            picks, figures = typiclust_on_pool(group, index, config.budget, config.typiclust_max_clusters, config.seed)
            shard_stats = group.stats()
        finally:
            group.close()
        context.record(picks)
        context.stats.update(images=index.count, labeled=int(index.labeled.sum()), picks=len(picks), shard_stats=shard_stats, **figures)
        return selection_table(picks)
