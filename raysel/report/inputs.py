"""What a report is about: the feature store, the selection and its recorded config, found and checked.

`STORE_OR_RUN` is either a feature store directory or a run directory holding
`store/` and `selection.parquet` (the layout `raysel demo` writes). Every
problem raises a `ReportInputError` (a ValueError) naming the file and the fix.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from raysel import schema, storage
from raysel.config import ReportConfig
from raysel.select.checkpoint import config_uri
from raysel.store import FeatureStore

RUN_STORE_DIR = "store"  # a run directory's feature store
RUN_SELECTION_FILE = "selection.parquet"  # a run directory's selection


class ReportInputError(ValueError):
    """An input of `raysel report` that is missing or malformed."""


@dataclass
class Selection:
    """The picks, in rank order: `uris` [B], `scores` [B] float64 (NaN for a random pick)."""

    uri: str
    uris: list[str]
    scores: np.ndarray
    config: dict[str, Any] = field(default_factory=dict)  # the selection's resolved SelectConfig, {} if unknown

    @property
    def method(self) -> str | None:
        return self.config.get("method")


@dataclass
class ReportInputs:
    store: FeatureStore
    metadata: dict[str, Any]
    selection: Selection


def resolve_inputs(config: ReportConfig) -> ReportInputs:
    """The store and the selection named by `config`, checked."""
    options = config.storage()
    source = config.source
    if storage.exists(storage.join(source, schema.STORE_METADATA_FILE), options):
        store_uri, default_selection = source, None
    elif storage.exists(storage.join(source, RUN_STORE_DIR, schema.STORE_METADATA_FILE), options):
        store_uri = storage.join(source, RUN_STORE_DIR)
        default_selection = storage.join(source, RUN_SELECTION_FILE)
    elif not storage.exists(source, options):
        raise ReportInputError(f"{source!r} does not exist: give a feature store or a run directory")
    else:
        raise ReportInputError(
            f"{source!r} is neither a feature store (no {schema.STORE_METADATA_FILE}) nor a run directory "
            f"(no {RUN_STORE_DIR}/{schema.STORE_METADATA_FILE})"
        )
    store = FeatureStore(store_uri, options)
    selection_uri = config.selection or default_selection
    if selection_uri is None:
        raise ReportInputError(f"{source!r} is a feature store: pass the selection with --selection FILE.parquet")
    return ReportInputs(store=store, metadata=store.metadata(), selection=read_selection(selection_uri, options))


def read_selection(uri: str, options: storage.StorageOptions | None = None) -> Selection:
    """A selection manifest (`uri`, `rank`, `score`), sorted by rank, with its `<uri>.config.json` if present."""
    if not uri.lower().endswith(".parquet"):
        raise ReportInputError(f"selection {uri!r} must be a .parquet file (what `raysel select --out` writes)")
    try:
        table = storage.read_parquet(uri, options)
    except FileNotFoundError as exc:
        raise ReportInputError(f"selection {uri!r} does not exist") from exc
    except (pa.ArrowInvalid, OSError) as exc:
        raise ReportInputError(f"selection {uri!r} is not a readable Parquet file: {exc}") from exc
    missing = [c for c in (schema.URI, schema.RANK) if c not in table.column_names]
    if missing:
        raise ReportInputError(f"selection {uri!r} has no {missing} column(s) (columns: {table.column_names})")
    if table.num_rows == 0:
        raise ReportInputError(f"selection {uri!r} is empty")
    uris = table.column(schema.URI).to_pylist()
    ranks = table.column(schema.RANK).to_pylist()
    if any(not isinstance(u, str) or not u for u in uris):
        raise ReportInputError(f"selection {uri!r} has an empty '{schema.URI}'")
    if len(set(uris)) != len(uris):
        raise ReportInputError(f"selection {uri!r} lists an image more than once")
    if sorted(r for r in ranks if r is not None) != list(range(len(ranks))):
        raise ReportInputError(f"selection {uri!r}: ranks must be 0 .. {len(ranks) - 1}, each once")
    if schema.SCORE in table.column_names:
        scores = np.array([np.nan if s is None else float(s) for s in table.column(schema.SCORE).to_pylist()])
    else:
        scores = np.full(len(uris), np.nan)
    order = np.argsort(ranks)
    recorded = {}
    if storage.exists(config_uri(uri), options):
        try:
            recorded = storage.read_json(config_uri(uri), options).get("config", {})
        except ValueError as exc:
            raise ReportInputError(f"{config_uri(uri)} is not valid JSON: {exc}") from exc
    return Selection(uri=uri, uris=[uris[i] for i in order], scores=scores[order], config=recorded)
