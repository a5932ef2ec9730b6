"""`run_selection(config)`: what `raysel select` and `raysel.api.select` call.

1. Resolve and check the config (method, options, budget) before touching data.
2. Skip when the output exists and was written by the same configuration.
3. Restore the picks of a checkpoint written by the same configuration.
4. Run the method; it reports picks as it goes (progress bar, checkpoints).
5. Write the selection atomically, then `<out>.config.json`, then drop the checkpoint.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import sys
import time
from typing import Sequence

import pyarrow as pa
from tqdm import tqdm

from raysel import __version__, storage
from raysel.config import SelectConfig, to_dict
from raysel.fingerprints import store_state
from raysel.select import checkpoint
from raysel.select.base import Pick, SelectionContext
from raysel.select.distances import check_distance, storage_dtype
from raysel.select.errors import BudgetError, SelectionConfigError
from raysel.select.supervision.labeled import read_labeled
from raysel.select.registry import get_method
from raysel.select.pool.store_rows import file_row_counts
from raysel.store import FeatureStore

log = logging.getLogger(__name__)


def resolve_config(config: SelectConfig) -> SelectConfig:
    """A copy with defaults filled in (distance per method), checked; raises SelectionConfigError."""
    method = get_method(config.method)
    resolved = dataclasses.replace(config, distance=config.distance or method.default_distance)
    if not resolved.store:
        raise SelectionConfigError("select needs a STORE (feature store directory)")
    if not resolved.out:
        raise SelectionConfigError("select needs --out SELECTION.parquet")
    if not isinstance(resolved.budget, int) or resolved.budget < 1:
        raise BudgetError(f"--budget must be >= 1, got {resolved.budget}")
    if resolved.distance is not None:
        check_distance(resolved.distance)
    storage_dtype(resolved.dtype)
    if resolved.shards < 1:
        raise SelectionConfigError(f"--shards must be >= 1, got {resolved.shards}")
    if resolved.candidates < 1:
        raise SelectionConfigError(f"--candidates must be >= 1, got {resolved.candidates}")
    if resolved.checkpoint_every < 0:
        raise SelectionConfigError(f"--checkpoint-every must be >= 0 (0: never), got {resolved.checkpoint_every}")
    method().validate(resolved)
    return resolved


class PickLog:
    """Collects picks as a method reports them: progress bar (picks/s, stderr) and checkpoints."""

    def __init__(self, config: SelectConfig, fingerprint: str, resumed: Sequence[Pick], progress: bool | None, save: bool) -> None:
        self.config = config
        self.fingerprint = fingerprint
        self.picks = list(resumed)
        self.save = save and config.checkpoint_every > 0
        self.saved = len(self.picks)
        self.bar = tqdm(
            total=config.budget,
            initial=min(len(self.picks), config.budget),
            unit="pick",
            desc=f"select {config.method}",
            file=sys.stderr,
            disable=None if progress is None else not progress,
            dynamic_ncols=True,
        )

    def record(self, new: Sequence[Pick]) -> None:
        self.picks.extend(new)
        self.bar.update(len(new))
        every = self.config.checkpoint_every
        if self.save and len(self.picks) < self.config.budget and len(self.picks) // every > self.saved // every:
            checkpoint.write_checkpoint(self.config.out, self.fingerprint, self.picks, self.config.storage())
            self.saved = len(self.picks)

    def close(self) -> None:
        self.bar.close()


def _finished(config: SelectConfig, fingerprint: str) -> pa.Table | None:
    """The existing output when the same configuration already wrote it, else None."""
    options = config.storage()
    if not (storage.exists(config.out, options) and storage.exists(checkpoint.config_uri(config.out), options)):
        return None
    try:
        written = storage.read_json(checkpoint.config_uri(config.out), options)
    except ValueError:
        return None
    if written.get("fingerprint") != fingerprint or written.get("config", {}).get("budget") != config.budget:
        return None
    return storage.read_parquet(config.out, options)


def run_selection(config: SelectConfig, progress: bool | None = None) -> pa.Table:
    """Select `config.budget` images from the feature store `config.store`, write them to `config.out`.

    Args:
        config: the selection options (see `SelectConfig`).
        progress: show a progress bar on stderr (None: only on a terminal).

    Returns:
        The selection: `uri` string, `rank` int64 (0-based pick order), `score` float64
        (the distance that won the pick; null for a random pick). Also written to
        `config.out` (Parquet), with the resolved config and run figures in `<out>.config.json`.
    """
    started = time.time()
    resolved = resolve_config(config)
    method = get_method(resolved.method)()
    options = resolved.storage()
    store = FeatureStore(resolved.store, options)
    labeled = read_labeled(resolved.labeled, options) if resolved.labeled else []
    # One run per output: a second select with the same --out fails instead of tearing the checkpoint.
    with storage.Lease(checkpoint.lease_uri(resolved.out), options, what=f"--out {resolved.out}"):
        # Fingerprint what the source store holds (the exclusion view below is rewritten on every run).
        fingerprint = checkpoint.fingerprint(resolved, store_state(store, file_row_counts(store)), labeled)
        exclusion, excluded_rows = None, 0
        if resolved.exclude:  # every method then reads a view of the store without those rows
            from raysel.dedup.exclude import exclusion_view

            store, exclusion, excluded_rows = exclusion_view(store, resolved.exclude, resolved.out, labeled, options)
            fingerprint = hashlib.sha256(f"{fingerprint}:exclude:{exclusion}".encode()).hexdigest()
        return _select_under_lease(resolved, method, store, labeled, fingerprint, progress, started, exclusion, excluded_rows)


def _select_under_lease(
    resolved, method, store, labeled, fingerprint, progress, started, exclusion=None, excluded_rows=0
) -> pa.Table:
    options = resolved.storage()
    existing = _finished(resolved, fingerprint)
    if existing is not None:
        log.info("%s already holds this selection; nothing to do", resolved.out)
        if exclusion is not None:
            from raysel.dedup.exclude import remove_view

            remove_view(resolved.out, options)
        return existing

    resumed: list[Pick] = []
    if method.supports_resume:
        saved = checkpoint.read_checkpoint(resolved.out, options)
        if saved is not None and saved.fingerprint == fingerprint:
            resumed = saved.picks
            log.info("resuming from %s: %d picks", checkpoint.checkpoint_uri(resolved.out), len(resumed))
        elif saved is not None:
            log.warning("ignoring %s: another configuration wrote it", checkpoint.checkpoint_uri(resolved.out))

    pick_log = PickLog(resolved, fingerprint, resumed, progress, save=method.supports_resume)
    context = SelectionContext(labeled=labeled, resumed=resumed, record=pick_log.record)
    try:
        table = method.select(resolved, store, context)
    finally:
        pick_log.close()

    # The old record goes first: a crash between the two writes leaves an output without a
    # record (recomputed on rerun), never a new output under an old record or the reverse.
    storage.remove(checkpoint.config_uri(resolved.out), options)
    storage.write_parquet_atomic(table, resolved.out, options)
    storage.write_json_atomic(
        checkpoint.config_uri(resolved.out),
        {
            "config": to_dict(resolved),
            "fingerprint": fingerprint,
            "raysel_version": __version__,
            "labeled_images": len(labeled),
            **({"excluded_images": excluded_rows} if exclusion is not None else {}),
            "stats": context.stats,
            "wall_seconds": round(time.time() - started, 3),
        },
        options,
    )
    checkpoint.remove_checkpoint(resolved.out, options)
    if exclusion is not None:
        from raysel.dedup.exclude import remove_view

        remove_view(resolved.out, options)
    return table
