"""Reading the already-labeled images (`--labeled`): Parquet or CSV with a `uri` column."""
from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from raysel import schema, storage
from raysel.select.errors import LabeledError
from raysel.storage import StorageOptions


def read_labeled(uri: str, options: StorageOptions | None = None) -> list[str]:
    """The distinct uris of a labeled file, in file order.

    Raises:
        LabeledError: unreadable file, no `uri` column, or null uris.
    """
    try:
        data = storage.read_bytes(uri, options)
        if uri.lower().endswith(".csv"):
            table = pa_csv.read_csv(io.BytesIO(data))
        else:
            table = pq.read_table(io.BytesIO(data))
    except (OSError, pa.ArrowException) as exc:
        raise LabeledError(f"cannot read the labeled file {uri}: {exc}") from exc
    if schema.URI not in table.column_names:
        raise LabeledError(f"the labeled file {uri} has no '{schema.URI}' column (columns: {table.column_names})")
    uris = table.column(schema.URI).to_pylist()
    if any(value is None for value in uris):
        raise LabeledError(f"the labeled file {uri} has empty '{schema.URI}' values")
    return list(dict.fromkeys(str(value) for value in uris))
