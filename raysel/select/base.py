"""What every selection method is: config + store in, selection table out.

    class MyMethod(SelectionMethod):
        def select(self, config, store, context) -> pa.Table: ...

    register_method("mine")(MyMethod)   # see registry.py

`run_selection` (runner.py) resolves the config, builds the `SelectionContext`
(labeled uris, picks of a checkpoint to resume from, progress + checkpointing)
and writes what `select` returns; methods never write files themselves.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Callable, ClassVar, NamedTuple, Sequence

import pyarrow as pa

from raysel import schema
from raysel.config import SelectConfig
from raysel.store import FeatureStore


class Pick(NamedTuple):
    """One selected image: its uri and the score that won it (None for a random pick)."""

    uri: str
    score: float | None


def selection_table(picks: Sequence[Pick]) -> pa.Table:
    """Picks in order as a table with `schema.SELECTION_SCHEMA` (uri, rank, score)."""
    return pa.table(
        {
            schema.URI: pa.array([pick.uri for pick in picks], pa.string()),
            schema.RANK: pa.array(range(len(picks)), pa.int64()),
            schema.SCORE: pa.array([pick.score for pick in picks], pa.float64()),
        },
        schema=schema.SELECTION_SCHEMA,
    )


def picks_of(table: pa.Table) -> list[Pick]:
    """The inverse of `selection_table`, in rank order."""
    rows = sorted(table.to_pylist(), key=lambda row: row[schema.RANK])
    return [Pick(row[schema.URI], row[schema.SCORE]) for row in rows]


@dataclass
class SelectionContext:
    """What a method gets besides config and store.

    Attributes:
        labeled: uris of already-labeled images (seed the pool, never picked), deduplicated.
        resumed: picks restored from a checkpoint; a method that supports resume continues after them.
        record: call with each batch of new picks, in order (progress bar, checkpoints).
        stats: a method may put figures here (passes, round trips); they land in `<out>.config.json`.
    """

    labeled: list[str] = field(default_factory=list)
    resumed: list[Pick] = field(default_factory=list)
    record: Callable[[Sequence[Pick]], None] = lambda picks: None
    stats: dict = field(default_factory=dict)


class SelectionMethod(abc.ABC):
    """A way of choosing images; subclasses register by name with `@register_method("name")`.

    Class attributes:
        name: set by `register_method`.
        default_distance: the distance used when `--distance` is not given (None: distances unused).
        supports_resume: True when `select` honours `context.resumed` (checkpoints are then written).
        fingerprint_options: `SelectConfig` fields, besides the common ones, that change the picks
            (a rerun with other values must not reuse the output).
    """

    name: ClassVar[str] = ""
    default_distance: ClassVar[str | None] = None
    supports_resume: ClassVar[bool] = False
    fingerprint_options: ClassVar[tuple[str, ...]] = ()

    def validate(self, config: SelectConfig) -> None:
        """Reject options this method cannot use (called before anything is read)."""

    @abc.abstractmethod
    def select(self, config: SelectConfig, store: FeatureStore, context: SelectionContext) -> pa.Table:
        """Pick `config.budget` images from `store`; returns a `schema.SELECTION_SCHEMA` table."""
