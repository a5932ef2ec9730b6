"""The method base of `geal` and `coreset`: K-Center-Greedy over the vectors of one column, on shard actors."""
from __future__ import annotations

from typing import ClassVar

import pyarrow as pa

from raysel import schema
from raysel.config import SelectConfig
from raysel.select.base import SelectionContext, SelectionMethod, selection_table
from raysel.select.distances import check_distance, storage_dtype
from raysel.select.errors import SelectionConfigError
from raysel.select.kcenter.kernel import SAMPLINGS
from raysel.select.kcenter.driver import check_budget, run_kcenter
from raysel.select.pool.store_rows import plan_shards
from raysel.store import FeatureStore


class KCenterMethod(SelectionMethod):
    """K-Center-Greedy over the vectors in `column`, distributed over `config.shards` actors."""

    column: ClassVar[str] = schema.CLUSTERS
    supports_resume = True

    def validate(self, config: SelectConfig) -> None:
        if config.sampling not in SAMPLINGS:
            raise SelectionConfigError(f"--sampling must be one of {list(SAMPLINGS)}, got {config.sampling!r}")
        check_distance(config.distance or self.default_distance)
        storage_dtype(config.dtype)
        if config.shards < 1:
            raise SelectionConfigError(f"--shards must be >= 1, got {config.shards}")
        if config.candidates < 1:
            raise SelectionConfigError(f"--candidates must be >= 1, got {config.candidates}")

    def select(self, config: SelectConfig, store: FeatureStore, context: SelectionContext) -> pa.Table:
        from raysel.runtime import ensure_ray
        from raysel.select.kcenter.shard_actor import RayShardGroup

        distance = config.distance or self.default_distance
        plan = plan_shards(store, config.shards)
        check_budget(config.budget, sum(s.stop - s.start for part in plan for s in part), len(context.labeled))
        ensure_ray()
        seeds = list(context.labeled) + [pick.uri for pick in context.resumed]
        group = RayShardGroup(store, plan, self.column, distance, config.dtype, seeds)
        try:
            picks, stats = run_kcenter(
                group,
                config.budget,
                distance,
                sampling=config.sampling,
                candidates=config.candidates,
                seed=config.seed,
                labeled=context.labeled,
                resumed=context.resumed,
                record=context.record,
            )
            context.stats.update(stats.as_dict(), recoveries=group.recoveries)
        finally:
            group.close()
        return selection_table(picks)
