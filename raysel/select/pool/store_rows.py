"""Which rows of the feature store each shard actor holds, and reading them.

The store's Parquet files are laid end to end and cut into `shards` contiguous
row ranges of equal size (a file may be split between two actors), so any
number of actors works with any number of files. The driver only reads the file
footers (row counts); each actor reads its own rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raysel import schema, storage
from raysel.select.errors import EmptyStoreError, InconsistentVectorsError
from raysel.store import FeatureStore, FeatureStoreError, vectors_of

VECTOR_COLUMNS = {schema.CLUSTERS: 3, schema.EMBEDDING: 2}  # column -> nesting depth of [N, (K,) D]


@dataclass(frozen=True)
class RowSlice:
    """Rows [start, stop) of one Parquet file of the store."""

    file: str
    start: int
    stop: int


def file_row_counts(store: FeatureStore) -> list[tuple[str, int]]:
    """(file uri, rows) of every shard file, in store order (reads footers only)."""
    counts = []
    for uri in store.shard_uris():
        fs, path = storage.filesystem(uri, store.options)
        try:
            with fs.open(path, "rb") as handle:
                counts.append((uri, pq.ParquetFile(handle).metadata.num_rows))
        except Exception as exc:  # noqa: BLE001 - any unreadable footer is a broken store
            raise FeatureStoreError(f"cannot read shard {uri}: {exc}") from exc
    return counts


def plan_shards(store: FeatureStore, shards: int) -> list[list[RowSlice]]:
    """Split the store's rows into `shards` contiguous, equal-sized lists of row slices."""
    if not store.exists():
        store.metadata()  # raises the store's own "is not a feature store" error
    counts = file_row_counts(store)
    total = sum(rows for _, rows in counts)
    if total == 0:
        raise EmptyStoreError(f"the feature store {store.uri} has no rows")
    bounds = [total * part // shards for part in range(shards + 1)]
    plan: list[list[RowSlice]] = []
    for first, last in zip(bounds[:-1], bounds[1:]):
        slices, offset = [], 0
        for uri, rows in counts:
            start, stop = max(first, offset), min(last, offset + rows)
            if start < stop:
                slices.append(RowSlice(uri, start - offset, stop - offset))
            offset += rows
        plan.append(slices)
    return plan


def describe(slices: list[RowSlice]) -> str:
    if not slices:
        return "no rows"
    names = [s.file.rstrip("/").rsplit("/", 1)[-1] for s in slices]
    return names[0] if len(names) == 1 else f"{names[0]}..{names[-1]}"


READ_BATCH_ROWS = 2048  # rows decoded at a time: Parquet's nested-list decoding needs several times the bytes


def _read_batches(store: FeatureStore, piece: RowSlice, columns: list[str]):
    """Record batches covering rows [piece.start, piece.stop) of one file, decoded a few rows at a time."""
    fs, path = storage.filesystem(piece.file, store.options)
    try:
        with fs.open(path, "rb") as handle:
            offset = 0
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=READ_BATCH_ROWS, columns=columns):
                start, stop = max(piece.start, offset), min(piece.stop, offset + batch.num_rows)
                if start < stop:
                    yield batch.slice(start - offset, stop - start)
                offset += batch.num_rows
                if offset >= piece.stop:
                    break
    except (pa.ArrowInvalid, OSError) as exc:
        raise FeatureStoreError(f"cannot read shard {piece.file}: {exc}") from exc


def load_rows(
    store: FeatureStore,
    slices: list[RowSlice],
    column: str,
    convert: Callable[[np.ndarray, list[str]], np.ndarray] | None = None,
    dtype: str = "float32",
) -> tuple[list[str], np.ndarray]:
    """Uris and vectors of the rows in `slices`.

    Args:
        store: the feature store.
        slices: rows to read.
        column: `clusters` ([K][D] per row) or `embedding` ([D] per row, read as K = 1).
        convert: applied to each read batch ([b, K, D] float32, its uris) before it is
            stored, returning [b, K, D] in `dtype` (e.g. check and round to float16), so
            no float32 copy of the whole shard is ever built.
        dtype: the dtype of the returned vectors (what `convert` returns).

    Returns:
        uris [n], vectors [n, K, D] `dtype` (peak memory: these plus a few thousand rows).
    """
    if column not in VECTOR_COLUMNS:
        raise ValueError(f"unknown vector column {column!r}; expected one of {sorted(VECTOR_COLUMNS)}")
    total = sum(s.stop - s.start for s in slices)
    uris: list[str] = []
    vectors: np.ndarray | None = None
    filled = 0
    for piece in slices:
        for batch in _read_batches(store, piece, [schema.URI, column]):
            try:
                part = vectors_of(batch.column(column), VECTOR_COLUMNS[column])
            except FeatureStoreError as exc:
                raise InconsistentVectorsError(f"{piece.file}: column {column!r}: {exc}") from exc
            if part.ndim == 2:
                part = part[:, None, :]
            if vectors is None:
                vectors = np.empty((total,) + part.shape[1:], dtype=dtype)
            elif part.shape[1:] != vectors.shape[1:]:
                raise InconsistentVectorsError(
                    f"{piece.file}: rows have K={part.shape[1]}, D={part.shape[2]} but earlier rows of the store have "
                    f"K={vectors.shape[1]}, D={vectors.shape[2]} (column {column!r}): mixed K or dimensions"
                )
            batch_uris = batch.column(schema.URI).to_pylist()
            vectors[filled : filled + len(part)] = part if convert is None else convert(part, batch_uris)
            filled += len(part)
            uris.extend(batch_uris)
    if vectors is None:
        vectors = np.empty((0, 1, 1), dtype=dtype)
    if any(uri is None for uri in uris):
        raise FeatureStoreError(f"null uris in {describe(slices)}")
    return uris, vectors
