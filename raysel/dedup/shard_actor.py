"""A Ray actor holding whole files of the store (unit embeddings) and running the kernel on them.

The driver gives each actor a contiguous run of files. K-Means: `step` returns the center sums of
each of its files (the driver adds them in file order). Pairwise: `bundles` cuts the actor's rows by
the actor that owns their cluster (returned as separate objects, so each goes straight to its
owner through the object store), `duplicates` runs the kernel over the clusters it owns.
"""
from __future__ import annotations

import os

import numpy as np
import ray

from raysel.dedup import kernel
from raysel.dedup.store_files import read_file
from raysel.storage import StorageOptions
from raysel.store import FeatureStore


def _set_blas_threads(count: int) -> None:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # the BLAS keeps the thread count Ray gave the process
        return
    threadpool_limits(limits=max(1, count))


class DedupShard:
    def __init__(self) -> None:
        self.uris: list[str] = []
        self.vectors = np.zeros((0, 0), np.float32)
        self.file_bounds: list[tuple[int, int]] = []  # [start, stop) of each file in this actor's rows
        self.first_row = 0  # global index of this actor's first row
        self.labels: np.ndarray | None = None
        self.similarity: np.ndarray | None = None

    def ping(self) -> tuple[str, int]:
        context = ray.get_runtime_context()
        return context.get_node_id(), int(os.cpu_count() or 1)

    def load(self, store_uri: str, options: StorageOptions, files: list[str], first_row: int, threads: int) -> int:
        _set_blas_threads(threads)
        store = FeatureStore(store_uri, options)
        parts, uris, offset = [], [], 0
        for uri in files:
            file_uris, vectors = read_file(store, uri)
            parts.append(vectors)
            uris.extend(file_uris)
            self.file_bounds.append((offset, offset + len(file_uris)))
            offset += len(file_uris)
        self.uris = uris
        self.vectors = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
        self.first_row = first_row
        return int(self.vectors.shape[1]) if len(self.vectors) else 0

    def rows(self, global_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the global indices this actor holds, their vectors)."""
        local = global_rows - self.first_row
        mine = (local >= 0) & (local < len(self.uris))
        return global_rows[mine], self.vectors[local[mine]]

    def step(self, centers: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, int]]:
        """Per file, in order: (center sums [k, D] float64, counts [k], rows whose center changed)."""
        results = []
        labels = np.empty(len(self.uris), dtype=np.int64)
        for start, stop in self.file_bounds:
            file_labels, _ = kernel.assign(self.vectors[start:stop], centers)
            labels[start:stop] = file_labels
            sums, counts = kernel.center_sums(self.vectors[start:stop], file_labels, len(centers))
            changed = len(file_labels) if self.labels is None else int((self.labels[start:stop] != file_labels).sum())
            results.append((sums, counts, changed))
        self.labels = labels
        return results

    def final(self, centers: np.ndarray) -> np.ndarray:
        """Assign with the final centers; [k] rows per cluster."""
        labels = np.empty(len(self.uris), dtype=np.int64)
        similarity = np.empty(len(self.uris), dtype=np.float32)
        for start, stop in self.file_bounds:
            labels[start:stop], similarity[start:stop] = kernel.assign(self.vectors[start:stop], centers)
        self.labels, self.similarity = labels, similarity
        return np.bincount(labels, minlength=len(centers))

    def bundles(self, owner: np.ndarray, parts: int) -> list[dict] | dict:
        """One bundle per actor (`parts` of them): this actor's rows whose cluster that actor owns."""
        destination = owner[self.labels]
        out = []
        for part in range(parts):
            rows = np.nonzero(destination == part)[0]
            out.append({
                "uris": [self.uris[i] for i in rows],
                "vectors": self.vectors[rows],
                "similarity": self.similarity[rows],
                "clusters": self.labels[rows],
            })
        return out if len(out) > 1 else out[0]

    def peak_rss_bytes(self) -> int:
        from raysel.process_memory import peak_rss_bytes

        return peak_rss_bytes()

    def duplicates(self, threshold: float, *bundles: dict) -> dict:
        """Removed rows of the clusters in `bundles`: uri, duplicate_of, similarity, cluster; and group count."""
        return duplicates_of_bundles(threshold, list(bundles))


def duplicates_of_bundles(threshold: float, bundles: list[dict]) -> dict:
    """The kernel over every cluster found in `bundles` (rows in any order; members sorted by uri).

    Returns columns uri, duplicate_of, similarity (float64 cosine of the removed image to the kept
    one), cluster; and `groups`, the number of duplicate groups.
    """
    uris = [u for b in bundles for u in b["uris"]]
    removed: dict = {"uri": [], "duplicate_of": [], "similarity": [], "cluster": [], "groups": 0}
    if not uris:
        return removed
    vectors = np.concatenate([b["vectors"] for b in bundles])
    similarity = np.concatenate([b["similarity"] for b in bundles])
    clusters = np.concatenate([b["clusters"] for b in bundles])
    order = np.lexsort((np.array(uris), clusters))  # by cluster, then uri
    starts = np.concatenate([[0], np.flatnonzero(np.diff(clusters[order])) + 1, [len(order)]])
    for first, stop in zip(starts[:-1], starts[1:]):
        members = order[first:stop]
        if len(members) < 2:
            continue
        member_uris = [uris[i] for i in members]
        member_vectors = np.ascontiguousarray(vectors[members])
        gone, kept = kernel.cluster_duplicates(member_uris, member_vectors, similarity[members], threshold)
        removed["groups"] += len(set(kept.tolist()))
        cluster = int(clusters[members[0]])
        for g, k in zip(gone.tolist(), kept.tolist()):
            removed["uri"].append(member_uris[g])
            removed["duplicate_of"].append(member_uris[k])
            removed["similarity"].append(
                float(np.dot(member_vectors[g].astype(np.float64), member_vectors[k].astype(np.float64)))
            )
            removed["cluster"].append(cluster)
    return removed


RemoteDedupShard = ray.remote(DedupShard)
