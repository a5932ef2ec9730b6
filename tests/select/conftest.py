"""Small synthetic feature stores for the selection tests."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Callable

import numpy as np
import pyarrow as pa
import pytest

from raysel.store import write_store


def clustered_vectors(count: int, clusters: int, dims: int, seed: int = 0, groups: int = 6) -> np.ndarray:
    """[count, clusters, dims] float32: images around a few group centers, clusters around each image."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((groups, dims)) * 2.0
    images = centers[rng.integers(0, groups, count)] + 0.6 * rng.standard_normal((count, dims))
    return (images[:, None, :] + 0.4 * rng.standard_normal((count, clusters, dims))).astype(np.float32)


def shuffled_uris(count: int, seed: int = 0) -> list[str]:
    """Unique uris whose sorted order differs from row order (so tie-breaking by uri is tested)."""
    order = np.random.default_rng(seed + 1000).permutation(count)
    return [f"s3://pool/img-{index:05d}.jpg" for index in order]


def store_table(uris: list[str], clusters: np.ndarray, embedding: np.ndarray | None = None, fixed_size: bool = False) -> pa.Table:
    """A feature-store table: uri, embedding list<float32>[D], clusters list<list<float32>>[K][D]."""
    count, k, d = clusters.shape
    if embedding is None:
        embedding = clusters.mean(axis=1)
    flat_clusters = pa.array(clusters.reshape(-1), pa.float32())
    flat_embedding = pa.array(np.ascontiguousarray(embedding, dtype=np.float32).reshape(-1), pa.float32())
    if fixed_size:
        inner = pa.FixedSizeListArray.from_arrays(flat_clusters, d)
        clusters_column = pa.FixedSizeListArray.from_arrays(inner, k)
        embedding_column = pa.FixedSizeListArray.from_arrays(flat_embedding, embedding.shape[1])
    else:
        inner = pa.ListArray.from_arrays(pa.array(np.arange(0, count * k * d + 1, d, dtype=np.int32)), flat_clusters)
        clusters_column = pa.ListArray.from_arrays(pa.array(np.arange(0, count * k + 1, k, dtype=np.int32)), inner)
        embedding_column = pa.ListArray.from_arrays(
            pa.array(np.arange(0, count * embedding.shape[1] + 1, embedding.shape[1], dtype=np.int32)), flat_embedding
        )
    return pa.table({"uri": pa.array(uris, pa.string()), "embedding": embedding_column, "clusters": clusters_column})


@pytest.fixture
def make_store(tmp_path) -> Callable[..., str]:
    """make_store(table, name="store", rows_per_shard=...) -> store directory."""

    def make(table: pa.Table, name: str = "store", rows_per_shard: int = 250) -> str:
        path = str(tmp_path / name)
        write_store(path, table, rows_per_shard=rows_per_shard)
        return path

    return make


@pytest.fixture
def synth() -> SimpleNamespace:
    """The data helpers above, for test modules (conftest modules are not importable by name)."""
    return SimpleNamespace(vectors=clustered_vectors, uris=shuffled_uris, table=store_table)
