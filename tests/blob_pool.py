"""A tiny labeled pool and test split: well-separated gaussian blobs written as real feature stores."""
from __future__ import annotations

import csv
import os

import numpy as np
import pyarrow as pa

from raysel.store import write_store

CLASSES = 3
DIMENSIONS = 8


def blob_table(prefix: str, per_class: int, seed: int) -> tuple[pa.Table, dict[str, int]]:
    """Store rows (uri, embedding, clusters [K=2], pretext_loss) of `per_class` images per class, and their labels."""
    rng = np.random.default_rng(seed)
    centers = np.eye(CLASSES, DIMENSIONS) * 8.0  # pairwise distance ~11, noise std 1: separable
    labels = np.repeat(np.arange(CLASSES), per_class)
    embedding = (centers[labels] + rng.normal(size=(len(labels), DIMENSIONS))).astype(np.float32)
    clusters = np.stack([embedding, embedding + rng.normal(scale=0.5, size=embedding.shape)], axis=1).astype(np.float32)
    uris = [f"mem://{prefix}/img-{i:03d}.png" for i in range(len(labels))]
    table = pa.table(
        {
            "uri": uris,
            "embedding": pa.array(list(embedding), pa.list_(pa.float32())),
            "clusters": pa.array([list(c) for c in clusters], pa.list_(pa.list_(pa.float32()))),
            "pretext_loss": pa.array(rng.random(len(labels)), pa.float32()),
        }
    )
    return table, dict(zip(uris, labels.tolist()))


def write_labels(path: str, labels: dict[str, object]) -> str:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uri", "label"])
        writer.writerows(labels.items())
    return path


def write_blob_splits(folder, pool_per_class: int = 20, test_per_class: int = 10) -> dict[str, str]:
    """Pool (3 x 20 images) and test split (3 x 10) stores with labels CSVs; returns their paths."""
    folder = str(folder)
    pool, pool_labels = blob_table("pool", pool_per_class, seed=1)
    test, test_labels = blob_table("test", test_per_class, seed=2)
    return {
        "store": write_store(os.path.join(folder, "pool-store"), pool).uri,
        "labels": write_labels(os.path.join(folder, "pool-labels.csv"), pool_labels),
        "test_store": write_store(os.path.join(folder, "test-store"), test).uri,
        "test_labels": write_labels(os.path.join(folder, "test-labels.csv"), test_labels),
    }
