"""The whole dedup in one process, with the same kernels and the same per-file sums as the actors.

The reference `run_dedup` is tested against (same input -> the same duplicates table); also a
plain way to dedup a small store without Ray.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from raysel.config import DedupConfig
from raysel.dedup import kernel
from raysel.dedup.driver import default_clusters, duplicates_table
from raysel.dedup.shard_actor import duplicates_of_bundles
from raysel.dedup.store_files import read_file, store_files
from raysel.store import FeatureStore


def dedup_reference(config: DedupConfig) -> pa.Table:
    """The duplicates table `run_dedup(config)` writes, computed in this process (nothing written)."""
    config.validate()
    store = FeatureStore(config.store, config.storage())
    loaded = [read_file(store, uri) for uri, _ in store_files(store)]
    uris = [u for file_uris, _ in loaded for u in file_uris]
    total = len(uris)
    clusters = min(config.clusters or default_clusters(total), total)
    everything = np.concatenate([vectors for _, vectors in loaded])
    centers = everything[kernel.initial_rows(total, clusters, config.seed)].copy()
    previous = None
    for _ in range(config.kmeans_iters):
        sums = np.zeros((clusters, centers.shape[1]), np.float64)
        counts = np.zeros(clusters, np.int64)
        labels = []
        for _, vectors in loaded:
            file_labels, _ = kernel.assign(vectors, centers)
            file_sums, file_counts = kernel.center_sums(vectors, file_labels, clusters)
            sums += file_sums
            counts += file_counts
            labels.append(file_labels)
        labels = np.concatenate(labels)
        centers = kernel.next_centers(centers, sums, counts)
        if previous is not None and np.array_equal(previous, labels):
            break
        previous = labels
    assigned = [kernel.assign(vectors, centers) for _, vectors in loaded]
    bundle = {
        "uris": uris,
        "vectors": everything,
        "similarity": np.concatenate([s for _, s in assigned]),
        "clusters": np.concatenate([l for l, _ in assigned]),
    }
    table, _ = duplicates_table([duplicates_of_bundles(float(config.threshold), [bundle])])
    return table
