"""The feature store: a directory of Parquet shards plus metadata (see docs/feature-store.md).

Written chunk by chunk by `raysel featurize` (each finished work chunk is one
shard, written atomically, so a rerun skips what exists), or in one go by any
other tool through `write_store`. Read by the selectors shard by shard, so no
process needs the whole store in memory.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raysel import schema, storage
from raysel.storage import StorageOptions


class FeatureStoreError(ValueError):
    """A feature store that is missing, malformed or inconsistent."""


def shard_name(chunk_id: int) -> str:
    return f"part-{chunk_id:06d}.parquet"


def chunk_id_of(shard_uri: str) -> int:
    name = shard_uri.rstrip("/").rsplit("/", 1)[-1]
    try:
        return int(name[len("part-"):-len(".parquet")])
    except ValueError as exc:
        raise FeatureStoreError(f"unexpected file name in feature store: {shard_uri}") from exc


@dataclass
class FeatureStore:
    """A handle on a store directory. Cheap to create and to pickle."""

    uri: str
    options: StorageOptions = StorageOptions()

    # --- paths ---
    def path(self, *parts: str) -> str:
        return storage.join(self.uri, *parts)

    def shard_uris(self) -> list[str]:
        return storage.list_files(self.path(schema.SHARDS_DIR), self.options, suffix=".parquet")

    def error_uris(self) -> list[str]:
        return storage.list_files(self.path(schema.ERRORS_DIR), self.options, suffix=".parquet")

    # --- metadata ---
    def exists(self) -> bool:
        return storage.exists(self.path(schema.STORE_METADATA_FILE), self.options)

    def is_complete(self) -> bool:
        return storage.exists(self.path(schema.STORE_SUCCESS_FILE), self.options)

    def metadata(self) -> dict[str, Any]:
        try:
            return storage.read_json(self.path(schema.STORE_METADATA_FILE), self.options)
        except FileNotFoundError as exc:
            raise FeatureStoreError(
                f"{self.uri} is not a feature store: {schema.STORE_METADATA_FILE} is missing"
            ) from exc
        except ValueError as exc:
            raise FeatureStoreError(f"{self.uri}: {schema.STORE_METADATA_FILE} is not valid JSON: {exc}") from exc

    def write_metadata(self, metadata: dict[str, Any]) -> None:
        storage.write_json_atomic(self.path(schema.STORE_METADATA_FILE), metadata, self.options)

    def mark_complete(self, summary: dict[str, Any]) -> None:
        storage.write_json_atomic(self.path(schema.STORE_SUCCESS_FILE), summary, self.options)

    # --- rows ---
    def read_shard(self, shard_uri: str, columns: list[str] | None = None) -> pa.Table:
        try:
            return storage.read_parquet(shard_uri, self.options, columns=columns)
        except (pa.ArrowInvalid, OSError) as exc:
            raise FeatureStoreError(f"cannot read shard {shard_uri}: {exc}") from exc

    def iter_tables(self, columns: list[str] | None = None, shard_uris: list[str] | None = None) -> Iterator[pa.Table]:
        for shard_uri in shard_uris if shard_uris is not None else self.shard_uris():
            yield self.read_shard(shard_uri, columns)

    def read_errors(self) -> pa.Table:
        tables = [storage.read_parquet(u, self.options) for u in self.error_uris()]
        return pa.concat_tables(tables) if tables else schema.ERRORS_SCHEMA.empty_table()

    def num_rows(self) -> int:
        total = 0
        for shard_uri in self.shard_uris():
            fs, path = storage.filesystem(shard_uri, self.options)
            with fs.open(path, "rb") as handle:
                total += pq.ParquetFile(handle).metadata.num_rows
        return total


def vectors_of(column: pa.ChunkedArray | pa.Array, expected_ndim: int) -> np.ndarray:
    """A list / fixed-size-list column as a dense float32 array.

    `embedding` ([N, D], expected_ndim=2) or `clusters` ([N, K, D], expected_ndim=3).
    Accepts list and fixed_size_list at every level; rejects ragged rows with a clear error.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], type=column.type)
    n = len(column)
    shape = [n]
    array: pa.Array = column
    for level in range(expected_ndim - 1):
        if not (pa.types.is_list(array.type) or pa.types.is_large_list(array.type) or pa.types.is_fixed_size_list(array.type)):
            raise FeatureStoreError(f"expected a nested list of depth {expected_ndim - 1}, got type {column.type}")
        if array.null_count:
            raise FeatureStoreError("vector column has null entries")
        if pa.types.is_fixed_size_list(array.type):
            width = array.type.list_size
            values = array.flatten()
        else:
            lengths = np.asarray(array.value_lengths())
            width = int(lengths[0]) if len(lengths) else 0
            if len(lengths) and (lengths != width).any():
                raise FeatureStoreError(
                    f"rows have different lengths at nesting level {level + 1} "
                    f"(found {sorted(set(lengths.tolist()))[:5]}): mixed K or dimensions"
                )
            values = array.flatten()
        shape.append(width)
        array = values
    if n and shape[-1] == 0:
        raise FeatureStoreError("vectors have dimension 0")
    flat = array.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(shape)


def write_store(
    uri: str,
    table: pa.Table,
    metadata: dict[str, Any] | None = None,
    options: StorageOptions | None = None,
    rows_per_shard: int = 100_000,
) -> FeatureStore:
    """Write a complete feature store from an in-memory table (bring-your-own embeddings, tests)."""
    store = FeatureStore(uri, options or StorageOptions())
    if schema.URI not in table.column_names:
        raise FeatureStoreError(f"a feature store table needs a '{schema.URI}' column")
    store.write_metadata({"format_version": schema.STORE_FORMAT_VERSION, "created": time.time(), **(metadata or {})})
    for chunk_id, start in enumerate(range(0, max(table.num_rows, 1), rows_per_shard)):
        storage.write_parquet_atomic(
            table.slice(start, rows_per_shard), store.path(schema.SHARDS_DIR, shard_name(chunk_id)), store.options
        )
    store.mark_complete({"rows": table.num_rows})
    return store
