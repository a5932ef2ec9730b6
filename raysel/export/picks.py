"""The selection an export starts from: its picks in rank order and the config that produced them."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


from raysel import schema, storage
from raysel.export.errors import ExportError
from raysel.storage import StorageOptions

SELECTION_CONFIG_SUFFIX = ".config.json"  # what `raysel select` writes next to its output (select/checkpoint.py)


@dataclass
class Picks:
    """Selected images in rank order: `uris` [B], `ranks` [B] int, `scores` [B] float or None."""

    source: str
    uris: list[str]
    ranks: list[int]
    scores: list[float | None]
    selection_config: dict[str, Any] = field(default_factory=dict)  # the selection's <out>.config.json, {} if absent

    @property
    def method(self) -> str | None:
        return (self.selection_config.get("config") or {}).get("method")

    @property
    def store(self) -> str | None:
        return (self.selection_config.get("config") or {}).get("store")


def read_picks(uri: str, options: StorageOptions | None = None) -> Picks:
    """The selection file `uri` (.parquet or .csv): `uri` required, `rank` and `score` optional.

    Raises:
        ExportError: unreadable file, no `uri` column, empty or repeated uris, no rows.
    """
    table = storage.read_uri_table(uri, "selection", ExportError, options)
    if table.num_rows == 0:
        raise ExportError(f"selection {uri!r} has no rows: nothing to export")
    uris = table.column(schema.URI).to_pylist()
    for row, value in enumerate(uris):
        if not isinstance(value, str) or not value:
            raise ExportError(f"selection {uri!r}: row {row} has no '{schema.URI}'")
    if len(set(uris)) != len(uris):
        repeated = sorted({u for u in uris if uris.count(u) > 1})[:3]
        raise ExportError(f"selection {uri!r} lists images more than once: {repeated}")
    ranks = table.column(schema.RANK).to_pylist() if schema.RANK in table.column_names else list(range(len(uris)))
    scores = table.column(schema.SCORE).to_pylist() if schema.SCORE in table.column_names else [None] * len(uris)
    scores = [None if s is None or (isinstance(s, float) and math.isnan(s)) else float(s) for s in scores]
    order = sorted(range(len(uris)), key=lambda i: (ranks[i], uris[i]))
    config: dict[str, Any] = {}
    config_uri = uri + SELECTION_CONFIG_SUFFIX
    if storage.exists(config_uri, options):
        try:
            config = storage.read_json(config_uri, options)
        except ValueError as exc:
            raise ExportError(f"{config_uri} is not valid JSON: {exc}") from exc
    return Picks(
        source=uri,
        uris=[uris[i] for i in order],
        ranks=[int(ranks[i]) for i in order],
        scores=[scores[i] for i in order],
        selection_config=config,
    )
