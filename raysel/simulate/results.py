"""The tidy results table: one row per (method, seed, round), as Parquet and CSV.

Columns: method, seed, round (0-based), labeled (images labeled after the round),
accuracy (test accuracy of the probe, [0, 1]), picked_by (the method that chose
the round's images: the method itself, or "random" for a cold start, see rounds.py).
"""
from __future__ import annotations

import io
from typing import Sequence

import pyarrow as pa
import pyarrow.csv as pacsv

from raysel import storage
from raysel.storage import StorageOptions

RESULTS_PARQUET = "results.parquet"
RESULTS_CSV = "results.csv"
RESULTS_SCHEMA = pa.schema(
    [
        ("method", pa.string()),
        ("seed", pa.int64()),
        ("round", pa.int64()),
        ("labeled", pa.int64()),
        ("accuracy", pa.float64()),
        ("picked_by", pa.string()),
    ]
)


def results_table(rows: Sequence[dict]) -> pa.Table:
    """Rows sorted by (method, seed, round) as a `RESULTS_SCHEMA` table."""
    ordered = sorted(rows, key=lambda row: (row["method"], row["seed"], row["round"]))
    return pa.Table.from_pylist(ordered, schema=RESULTS_SCHEMA)


def write_results(rows: Sequence[dict], out: str, options: StorageOptions) -> pa.Table:
    """Write `results.parquet` and `results.csv` under `out` (atomically each); returns the table."""
    table = results_table(rows)
    storage.write_parquet_atomic(table, storage.join(out, RESULTS_PARQUET), options)
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer)
    storage.write_bytes_atomic(storage.join(out, RESULTS_CSV), buffer.getvalue(), options)
    return table


def read_results(out: str, options: StorageOptions) -> list[dict]:
    """Rows of an earlier run's `results.parquet` under `out`; [] when there is none."""
    uri = storage.join(out, RESULTS_PARQUET)
    if not storage.exists(uri, options):
        return []
    return storage.read_parquet(uri, options).select(RESULTS_SCHEMA.names).to_pylist()
