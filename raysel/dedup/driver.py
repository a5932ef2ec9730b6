"""`run_dedup(config)`: what `raysel dedup` and `raysel.api.dedup` call.

1. Check the options and the store (an 'embedding' column, rows) before starting anything.
2. Cut the store's files into `shards` contiguous runs, one per actor; each loads its unit embeddings.
3. Spherical K-Means: seeded initial rows, then Lloyd steps; the actors return per-file center sums,
   the driver adds them in file order (so any number of actors gives the same centers).
4. Each cluster gets an owner actor (largest clusters first, to the least loaded); every actor
   sends each owner its rows of the owner's clusters through the object store (the driver only
   passes references); each owner finds the duplicate groups of its clusters (kernel.cluster_duplicates).
5. Write the duplicates (uri, duplicate_of, similarity, cluster; sorted by uri) atomically, then
   `<out>.config.json` with the config and figures.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import ray

from raysel import __version__, storage
from raysel.runtime import get_reraising_input_errors
from raysel.config import DedupConfig, to_dict
from raysel.dedup import kernel
from raysel.dedup.shard_actor import RemoteDedupShard
from raysel.dedup.store_files import store_files
from raysel.store import FeatureStore

log = logging.getLogger(__name__)

DUPLICATE_OF = "duplicate_of"  # the kept image a removed one duplicates
SIMILARITY = "similarity"  # float64 cosine of the removed image to the kept one
CLUSTER = "cluster"  # int64 K-Means cluster both belong to
DUPLICATES_SCHEMA = pa.schema(
    [("uri", pa.string()), (DUPLICATE_OF, pa.string()), (SIMILARITY, pa.float64()), (CLUSTER, pa.int64())]
)
PLACEMENT_TIMEOUT_S = 120.0


@dataclass
class DedupSummary:
    out: str
    images: int
    removed: int
    groups: int
    clusters: int
    kmeans_steps: int
    seconds: dict = field(default_factory=dict)

    def lines(self) -> str:
        return (f"{self.removed} of {self.images} images are near-duplicates ({self.groups} groups, "
                f"{self.clusters} clusters) -> {self.out}")


def default_clusters(images: int) -> int:
    return max(1, min(images, math.ceil(math.sqrt(images))))


def file_runs(rows: list[int], shards: int) -> list[list[int]]:
    """Indices of the files each actor loads: contiguous runs of about equal row counts (none empty)."""
    shards = max(1, min(shards, len(rows)))
    total, runs, cumulative = sum(rows), [[] for _ in range(shards)], 0
    for index, count in enumerate(rows):
        part = min(shards - 1, cumulative * shards // max(total, 1))
        runs[part].append(index)
        cumulative += count
    return [run for run in runs if run]


def owners(sizes: np.ndarray, actors: int) -> np.ndarray:
    """[k] actor index owning each cluster: largest first to the least loaded (ties: lowest index)."""
    load = np.zeros(actors, dtype=np.int64)
    owner = np.zeros(len(sizes), dtype=np.int64)
    for cluster in np.lexsort((np.arange(len(sizes)), -sizes)):
        target = int(np.argmin(load))
        owner[cluster] = target
        load[target] += int(sizes[cluster]) ** 2  # pairwise work grows with the square
    return owner


def duplicates_table(parts: list[dict]) -> tuple[pa.Table, int]:
    columns = {name: [v for part in parts for v in part[name]] for name in ("uri", DUPLICATE_OF, SIMILARITY, CLUSTER)}
    table = pa.table(columns, schema=DUPLICATES_SCHEMA)
    table = table.sort_by("uri") if table.num_rows else table
    return table, sum(part["groups"] for part in parts)


_get = get_reraising_input_errors


def run_dedup(config: DedupConfig) -> pa.Table:
    """Find the near-duplicates of the store `config.store`; write them to `config.out`.

    Returns:
        The duplicates: `uri` (a removed image), `duplicate_of` (the kept image of its group),
        `similarity` float64 (their cosine), `cluster` int64; sorted by uri. Summary figures in
        `<out>.config.json`.
    """
    started = time.time()
    config.validate()
    options = config.storage()
    store = FeatureStore(config.store, options)
    files = store_files(store)
    total = sum(rows for _, rows in files)
    clusters = min(config.clusters or default_clusters(total), total)
    runs = file_runs([rows for _, rows in files], config.shards)

    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    actor_cpus = min(1.0, cpus / len(runs))
    actors = [RemoteDedupShard.options(num_cpus=actor_cpus).remote() for _ in runs]
    seconds: dict[str, float] = {}
    try:
        pings = [actor.ping.remote() for actor in actors]
        _, waiting = ray.wait(pings, num_returns=len(pings), timeout=PLACEMENT_TIMEOUT_S)
        if waiting:
            raise RuntimeError(f"{len(waiting)} of {len(actors)} dedup actors did not start within {PLACEMENT_TIMEOUT_S:.0f}s")
        placed = ray.get(pings)
        per_node: dict[str, int] = {}
        for node, _ in placed:
            per_node[node] = per_node.get(node, 0) + 1
        offsets = np.cumsum([0] + [rows for _, rows in files])
        tick = time.time()
        _get([
            actor.load.remote(store.uri, options, [files[i][0] for i in run], int(offsets[run[0]]),
                              max(1, node_cpus // per_node[node]))
            for actor, run, (node, node_cpus) in zip(actors, runs, placed)
        ])
        seconds["load"] = time.time() - tick

        tick = time.time()
        start_rows = kernel.initial_rows(total, clusters, config.seed)
        found = _get([actor.rows.remote(start_rows) for actor in actors])
        centers = np.empty((clusters, 0), np.float32)
        by_row = {int(r): v for rows, vectors in found for r, v in zip(rows, vectors)}
        centers = np.stack([by_row[int(r)] for r in start_rows]).astype(np.float32)
        steps = 0
        for steps in range(1, config.kmeans_iters + 1):
            per_actor = _get([actor.step.remote(centers) for actor in actors])
            sums = np.zeros((clusters, centers.shape[1]), np.float64)
            counts = np.zeros(clusters, np.int64)
            changed = 0
            for file_results in per_actor:
                for file_sums, file_counts, file_changed in file_results:
                    sums += file_sums
                    counts += file_counts
                    changed += file_changed
            centers = kernel.next_centers(centers, sums, counts)
            if changed == 0:
                break
        sizes = np.sum(_get([actor.final.remote(centers) for actor in actors]), axis=0)
        seconds["kmeans"] = time.time() - tick

        tick = time.time()
        owner = owners(sizes, len(actors))
        parts = len(actors)
        bundle_refs = [actor.bundles.options(num_returns=parts).remote(owner, parts) for actor in actors]
        if parts == 1:
            bundle_refs = [[ref] for ref in bundle_refs]
        results = _get([
            actors[dest].duplicates.remote(float(config.threshold), *[bundle_refs[src][dest] for src in range(parts)])
            for dest in range(parts)
        ])
        seconds["pairwise"] = time.time() - tick
        actor_peak_rss = _get([actor.peak_rss_bytes.remote() for actor in actors])
    finally:
        for actor in actors:
            ray.kill(actor)

    table, groups = duplicates_table(results)
    storage.write_parquet_atomic(table, config.out, options)
    summary = DedupSummary(config.out, total, table.num_rows, groups, clusters, steps,
                           {k: round(v, 3) for k, v in seconds.items()})
    storage.write_json_atomic(
        config.out + ".config.json",
        {
            "config": to_dict(config),
            "images": total,
            "removed": table.num_rows,
            "groups": groups,
            "clusters": clusters,
            "kmeans_steps": steps,
            "largest_cluster": int(sizes.max()),
            "actors": len(actors),
            "actor_peak_rss_bytes": actor_peak_rss,
            "seconds": summary.seconds,
            "wall_seconds": round(time.time() - started, 3),
            "raysel_version": __version__,
        },
        options,
    )
    log.info(summary.lines())
    return table
