"""The store files dedup reads: whole Parquet files (a file's rows are one unit of the K-Means sums)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raysel import schema, storage
from raysel.dedup.errors import DedupError
from raysel.dedup.kernel import normalized
from raysel.store import FeatureStore, FeatureStoreError, vectors_of


def store_files(store: FeatureStore) -> list[tuple[str, int]]:
    """(file uri, rows) of every store file, in store order; DedupError without an 'embedding' column."""
    store.metadata()  # "is not a feature store" when it is not one
    files = []
    for uri in store.shard_uris():
        fs, path = storage.filesystem(uri, store.options)
        try:
            with fs.open(path, "rb") as handle:
                parquet = pq.ParquetFile(handle)
                names, rows = parquet.schema_arrow.names, parquet.metadata.num_rows
        except Exception as exc:  # noqa: BLE001 - any unreadable footer is a broken store
            raise FeatureStoreError(f"cannot read shard {uri}: {exc}") from exc
        if schema.EMBEDDING not in names:
            raise DedupError(
                f"the feature store {store.uri} has no '{schema.EMBEDDING}' column (file {uri} has {names}): "
                f"dedup compares embeddings"
            )
        files.append((uri, rows))
    if not files or sum(rows for _, rows in files) == 0:
        raise DedupError(f"the feature store {store.uri} has no rows")
    return files


def read_file(store: FeatureStore, uri: str) -> tuple[list[str], np.ndarray]:
    """(uris [n], unit embeddings [n, D] float32) of one store file."""
    table = store.read_shard(uri, columns=[schema.URI, schema.EMBEDDING])
    uris = table.column(schema.URI).to_pylist()
    if any(u is None for u in uris):
        raise DedupError(f"{uri} has rows without a uri")
    try:
        vectors = vectors_of(table.column(schema.EMBEDDING), 2)
    except (FeatureStoreError, pa.ArrowInvalid) as exc:
        raise DedupError(f"{uri}: column '{schema.EMBEDDING}': {exc}") from exc
    return uris, normalized(vectors, uris)
