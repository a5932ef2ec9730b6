"""The method base of `geal` and `coreset`: K-Center-Greedy over the vectors of one column, on shard actors."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import pyarrow as pa
import pyarrow.parquet as pq

from raysel import schema, storage
from raysel.config import SelectConfig
from raysel.select.base import Pick, SelectionContext, SelectionMethod, selection_table
from raysel.select.distances import check_distance, storage_dtype
from raysel.select.errors import SelectionConfigError
from raysel.select.kcenter.kernel import SAMPLINGS, SHARD_KERNELS
from raysel.select.kcenter.driver import check_budget, run_kcenter
from raysel.select.pool.store_rows import READ_BATCH_ROWS, RowSlice, plan_shards
from raysel.store import FeatureStore


SHARD_OVERHEAD_BYTES = 256 * 2**20  # a shard actor's process before it loads anything
PER_VECTOR_BYTES = 8 + 8 + 8 + 1  # factor, min-distance, nearest center (int64 at most), live flag


def shard_memory_bytes(store: FeatureStore, slices: list[RowSlice], column: str, dtype: str) -> int:
    """What a shard actor will hold, to declare to Ray (0 when the footers do not say).

    Per row: the column's uncompressed float32 bytes (from the Parquet footer) at the
    storage dtype's size, plus the per-vector state, plus a read batch in flight.
    """
    rows = sum(piece.stop - piece.start for piece in slices)
    if not rows:
        return 0
    try:
        fs, path = storage.filesystem(slices[0].file, store.options)
        with fs.open(path, "rb") as handle:
            metadata = pq.ParquetFile(handle).metadata
        leaf = f"{column}."
        raw = sum(
            group.column(index).total_uncompressed_size
            for group in (metadata.row_group(g) for g in range(metadata.num_row_groups))
            for index in range(group.num_columns)
            if group.column(index).path_in_schema.startswith(leaf)
        )
        float32_per_row = raw / max(1, metadata.num_rows)
    except Exception:  # noqa: BLE001 - an estimate only: without it Ray just is not told
        return 0
    vectors_per_row = float32_per_row / 4 / 64  # K x D / 64: assumes D >= 64 (over-counts the small per-vector state)
    stored = float32_per_row * storage_dtype(dtype).itemsize / 4
    read_batch = READ_BATCH_ROWS * float32_per_row * 3  # decoding Parquet lists needs several times the bytes
    return int(SHARD_OVERHEAD_BYTES + rows * (stored + PER_VECTOR_BYTES * vectors_per_row) + read_batch)


class KCenterMethod(SelectionMethod):
    """K-Center-Greedy over the vectors in `column`, distributed over `config.shards` actors."""

    column: ClassVar[str] = schema.CLUSTERS
    supports_resume = True
    fingerprint_options = ("random_start",)

    def validate(self, config: SelectConfig) -> None:
        if config.sampling not in SAMPLINGS:
            raise SelectionConfigError(f"--sampling must be one of {list(SAMPLINGS)}, got {config.sampling!r}")
        check_distance(config.distance or self.default_distance)
        storage_dtype(config.dtype)
        if config.shards < 1:
            raise SelectionConfigError(f"--shards must be >= 1, got {config.shards}")
        if config.shard_kernel not in SHARD_KERNELS:
            raise SelectionConfigError(f"--shard-kernel must be one of {list(SHARD_KERNELS)}, got {config.shard_kernel!r}")
        if config.candidates < 1:
            raise SelectionConfigError(f"--candidates must be >= 1, got {config.candidates}")
        if config.random_start < 0 or config.random_start > config.budget:
            raise SelectionConfigError(f"--random-start must be in 0 .. --budget ({config.budget}), got {config.random_start}")

    def select(self, config: SelectConfig, store: FeatureStore, context: SelectionContext) -> pa.Table:
        from raysel.runtime import ensure_ray
        from raysel.select.kcenter.shard_actor import RayShardGroup

        distance = config.distance or self.default_distance
        plan = plan_shards(store, config.shards)
        check_budget(config.budget, sum(s.stop - s.start for part in plan for s in part), len(context.labeled))
        ensure_ray()
        resumed = list(context.resumed)
        if config.random_start:
            resumed = self._random_start(config, store, context)
        seeds = list(context.labeled) + [pick.uri for pick in resumed]
        group = RayShardGroup(
            store,
            plan,
            self.column,
            distance,
            config.dtype,
            seeds,
            pruning=not config.no_pruning,
            kernel=config.shard_kernel,
            memory_per_actor=[shard_memory_bytes(store, part, self.column, config.dtype) for part in plan],
        )
        try:
            picks, stats = run_kcenter(
                group,
                config.budget,
                distance,
                sampling=config.sampling,
                candidates=config.candidates,
                seed=config.seed,
                labeled=context.labeled,
                resumed=resumed,
                record=context.record,
            )
            context.stats.update(stats.as_dict(), recoveries=group.recoveries)
        finally:
            group.close()
        return selection_table(picks)

    @staticmethod
    def _random_start(config: SelectConfig, store: FeatureStore, context: SelectionContext) -> list[Pick]:
        """The released FreeSel `--random_num`: the first N picks are a seeded uniform sample of the unlabeled
        images (never --labeled ones), recorded as picks (score null) and counted toward the budget; K-Center
        then starts from them as from picks restored from a checkpoint."""
        from raysel.select.methods.random_sampling import RandomMethod

        sample = RandomMethod().select(
            dataclasses.replace(config, budget=config.random_start), store,
            SelectionContext(labeled=list(context.labeled)),
        )
        drawn = [Pick(uri, None) for uri in sample.column(schema.URI).to_pylist()]
        restored = list(context.resumed)
        if [p.uri for p in restored[: len(drawn)]] != [p.uri for p in drawn[: len(restored)]]:
            raise SelectionConfigError("the checkpoint does not start with this run's --random-start draws")
        context.record(drawn[len(restored) :])
        context.stats.update(random_start=len(drawn))
        return drawn + restored[len(drawn) :]
