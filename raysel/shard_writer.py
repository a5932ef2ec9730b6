"""Shards written where the rows are: part files from the workers, one commit per finished chunk.

The last Ray Data stage (`PartWriter`, on the workers) writes each batch's rows
of a chunk as a part file under `_parts/part-XXXXXX/` and passes on only
`chunk_id` and a row count, so the driver never holds a feature row. When a
chunk's count is reached the driver has `commit_chunk` run (in the run's committer actor), which
reads the chunk's parts, keeps one row per URI (a retried batch may have
written its part twice), checks that the URIs are exactly the chunk's URIs from
the manifest, writes the errors, then the shard (the chunk's commit marker),
atomically, and removes the parts.
"""
from __future__ import annotations

import uuid

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raysel import schema, storage
from raysel.store import FeatureStore, shard_name

CHUNK_ID = "chunk_id"
ROWS = "rows"
PARTS_DIR = "_parts"  # part-XXXXXX/<uuid>.parquet: rows of unfinished chunks; removed at commit


def parts_dir(store: FeatureStore, chunk_id: int) -> str:
    return store.path(PARTS_DIR, shard_name(chunk_id).removesuffix(".parquet"))


def rows_table(columns: dict[str, np.ndarray]) -> pa.Table:
    """A batch's rows (store columns + `error`) as an Arrow table; failed rows keep zero vectors."""
    from raysel.pipeline import features_table

    table = features_table(
        uris=[str(u) for u in columns[schema.URI]],
        embedding=np.asarray(columns[schema.EMBEDDING], dtype=np.float32),
        clusters=np.asarray(columns[schema.CLUSTERS], dtype=np.float32),
        num_kept_patches=np.asarray(columns[schema.NUM_KEPT_PATCHES], dtype=np.int32),
        pretext_loss=np.asarray(columns[schema.PRETEXT_LOSS], dtype=np.float32) if schema.PRETEXT_LOSS in columns else None,
    )
    return table.append_column(schema.ERROR, pa.array([str(e) for e in columns[schema.ERROR]], pa.string()))


class PartWriter:
    """Ray Data batch function: the batch's rows -> part files; returns `chunk_id` and `rows` per part."""

    def __init__(self, store: FeatureStore):
        self.store = store

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        chunk_ids = np.asarray(batch[CHUNK_ID]).astype(np.int64)
        written_ids, written_rows = [], []
        for chunk_id in np.unique(chunk_ids):
            rows = chunk_ids == chunk_id
            table = rows_table({key: np.asarray(value)[rows] for key, value in batch.items() if key != CHUNK_ID})
            uri = storage.join(parts_dir(self.store, int(chunk_id)), f"{uuid.uuid4().hex}.parquet")
            storage.write_parquet_atomic(table, uri, self.store.options)
            written_ids.append(int(chunk_id))
            written_rows.append(int(rows.sum()))
        return {CHUNK_ID: np.array(written_ids, dtype=np.int64), ROWS: np.array(written_rows, dtype=np.int64)}


def commit_chunk(store: FeatureStore, chunk_id: int, uris: list[str]) -> list[str]:
    """Turn chunk `chunk_id`'s parts into its shard (and errors file). Returns the chunk's URIs with no row ([] = committed).

    Nothing is written unless every URI of the chunk has a row; rows of URIs
    outside the chunk are an error (they would duplicate another chunk's).
    """
    directory = parts_dir(store, chunk_id)
    parts = [storage.read_parquet(u, store.options) for u in storage.list_files(directory, store.options, suffix=".parquet")]
    if not parts:
        return sorted(uris)
    table = pa.concat_tables(parts, promote_options="default")
    order = pc.sort_indices(table, sort_keys=[(schema.URI, "ascending")])  # deterministic row order
    table = table.take(order)
    column = table.column(schema.URI).to_numpy(zero_copy_only=False)
    first = np.ones(len(column), dtype=bool)
    first[1:] = column[1:] != column[:-1]  # a retried batch's second copy of a row is dropped
    table = table.filter(pa.array(first))
    got = set(table.column(schema.URI).to_pylist())
    expected = set(uris)
    if got - expected:
        raise ValueError(f"chunk {chunk_id}: rows for URIs outside the chunk, e.g. {sorted(got - expected)[:3]}")
    missing = sorted(expected - got)
    if missing:
        return missing
    failed = pc.not_equal(table.column(schema.ERROR), "")
    errors = table.filter(failed).select([schema.URI, schema.ERROR])
    if errors.num_rows:
        storage.write_parquet_atomic(errors.cast(schema.ERRORS_SCHEMA), store.path(schema.ERRORS_DIR, shard_name(chunk_id)), store.options)
    good = table.filter(pc.invert(failed)).drop_columns([schema.ERROR])
    with_loss = schema.PRETEXT_LOSS in good.column_names
    good = good.cast(schema.feature_schema(with_pretext_loss=with_loss))
    # The shard is the chunk's commit marker, so it is written last; then the parts go.
    storage.write_parquet_atomic(good, store.path(schema.SHARDS_DIR, shard_name(chunk_id)), store.options)
    storage.remove_tree(directory, store.options)
    return []
