"""The embedding pool cut into shards: in this process (references, tests) or one Ray actor each.

    group, index = open_store_pool(store, shards=4, labeled=uris, budget=100)   # Ray actors
    group, index = open_memory_pool(vectors, uris, labeled, budget, shards=1)   # in-process

Both groups expose the same calls on `PoolShard`s (`pool_shard.py`), so the
methods' driver code (typiclust, probcover) runs unchanged on either and gives the
same picks. Data between shards (cluster members, shard vectors for the ball
search) moves through Ray's object store, never through the driver.
"""
from __future__ import annotations

import abc
import os
import resource
import time
from typing import Any, Sequence

import numpy as np
import ray
from ray.exceptions import RayTaskError

from raysel.select.pool.blas import single_threaded
from raysel.select.pool.embedding_pool import PoolIndex, check_budget, index_pool
from raysel.select.pool.pool_shard import PoolShard
from raysel.select.pool.store_rows import RowSlice, plan_shards
from raysel.storage import StorageOptions
from raysel.store import FeatureStore

PLACEMENT_TIMEOUT_S = 600.0


def peak_rss_bytes() -> int:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PoolGroup(abc.ABC):
    """Shards of one pool; every call goes to all shards and returns their answers in shard order."""

    num_shards: int

    @abc.abstractmethod
    def call(self, method: str, *args: Any) -> list:
        """`PoolShard.method(*args)` on every shard."""

    @abc.abstractmethod
    def call_each(self, method: str, args: Sequence[tuple]) -> list:
        """`PoolShard.method(*args[i])` on shard i."""

    @abc.abstractmethod
    def put(self, value: Any) -> Any:
        """A handle to pass the same (large) value to every shard once."""

    @abc.abstractmethod
    def exchange(self, split: str, split_args: tuple, combine: str, combine_args: Sequence[tuple]) -> list:
        """Shard i's `split(*split_args)` returns one part per shard; shard p then runs
        `combine(*combine_args[p], part from shard 0, part from shard 1, ...)`."""

    @abc.abstractmethod
    def round_robin(self, method: str, *args: Any) -> list:
        """For r in 0 .. S-1: shard i runs `method(*args, shard (i + r) % S's export())`; total per shard."""

    def stats(self) -> list[dict]:
        return []

    def close(self) -> None:
        pass


class LocalPoolGroup(PoolGroup):
    """Shards held in this process."""

    def __init__(self, shards: Sequence[PoolShard]) -> None:
        self.shards = list(shards)
        self.num_shards = len(self.shards)

    @single_threaded
    def call(self, method: str, *args: Any) -> list:
        return [getattr(shard, method)(*args) for shard in self.shards]

    @single_threaded
    def call_each(self, method: str, args: Sequence[tuple]) -> list:
        return [getattr(shard, method)(*a) for shard, a in zip(self.shards, args)]

    def put(self, value: Any) -> Any:
        return value

    @single_threaded
    def exchange(self, split: str, split_args: tuple, combine: str, combine_args: Sequence[tuple]) -> list:
        parts = [getattr(shard, split)(*split_args, self.num_shards) for shard in self.shards]
        return [
            getattr(shard, combine)(*combine_args[p], *[parts[i][p] for i in range(self.num_shards)])
            for p, shard in enumerate(self.shards)
        ]

    @single_threaded
    def round_robin(self, method: str, *args: Any) -> list:
        exports = [shard.export() for shard in self.shards]
        totals = [0] * self.num_shards
        for r in range(self.num_shards):
            for i, shard in enumerate(self.shards):
                totals[i] += getattr(shard, method)(*args, exports[(i + r) % self.num_shards])
        return totals


class PoolShardActor:
    """A `PoolShard` inside a Ray actor."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.shard: PoolShard | None = None
        self.started = time.time()

    def ping(self) -> str:
        return ray.get_runtime_context().get_node_id()

    @single_threaded
    def load(self, store_uri: str, options: StorageOptions, slices: list[RowSlice]) -> dict:
        self.shard = PoolShard.from_store(store_uri, options, slices)
        return self.shard.summary()

    @single_threaded
    def run(self, method: str, *args: Any) -> Any:
        return getattr(self.shard, method)(*args)

    @single_threaded
    def run_split(self, method: str, *args: Any) -> Any:
        parts = getattr(self.shard, method)(*args)
        return tuple(parts) if len(parts) > 1 else parts[0]

    def stats(self) -> dict:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "shard": self.index,
            "rows": len(self.shard.ids) if self.shard is not None else 0,
            "vector_bytes": self.shard.vector_bytes() if self.shard is not None else 0,
            "peak_rss_bytes": peak_rss_bytes(),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
            "pid": os.getpid(),
        }


RemotePoolShardActor = ray.remote(PoolShardActor)


def _get(refs: Any) -> Any:
    """ray.get, re-raising an input error from inside an actor as itself."""
    try:
        return ray.get(refs)
    except RayTaskError as exc:
        if isinstance(exc.cause, ValueError):
            raise exc.cause from None
        raise


class RayPoolGroup(PoolGroup):
    """One `PoolShardActor` per entry of `plan` (row slices of the store)."""

    def __init__(self, store: FeatureStore, plan: list[list[RowSlice]]) -> None:
        self.num_shards = len(plan)
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        actor_cpus = min(1.0, cpus / self.num_shards)
        self.actors = [RemotePoolShardActor.options(num_cpus=actor_cpus).remote(i) for i in range(self.num_shards)]
        pings = [actor.ping.remote() for actor in self.actors]
        _, waiting = ray.wait(pings, num_returns=len(pings), timeout=PLACEMENT_TIMEOUT_S)
        if waiting:
            self.close()
            raise RuntimeError(
                f"{len(waiting)} of {self.num_shards} pool shard actors did not start within {PLACEMENT_TIMEOUT_S:.0f}s "
                f"({actor_cpus:g} CPU each)"
            )
        self.summaries = _get([actor.load.remote(store.uri, store.options, slices) for actor, slices in zip(self.actors, plan)])

    def call(self, method: str, *args: Any) -> list:
        return _get([actor.run.remote(method, *args) for actor in self.actors])

    def call_each(self, method: str, args: Sequence[tuple]) -> list:
        return _get([actor.run.remote(method, *a) for actor, a in zip(self.actors, args)])

    def put(self, value: Any) -> Any:
        return ray.put(value)

    def exchange(self, split: str, split_args: tuple, combine: str, combine_args: Sequence[tuple]) -> list:
        parts = self.num_shards
        splits = []
        for actor in self.actors:
            refs = actor.run_split.options(num_returns=parts).remote(split, *split_args, parts)
            splits.append(refs if parts > 1 else [refs])
        return _get([
            actor.run.remote(combine, *combine_args[p], *[splits[i][p] for i in range(parts)])
            for p, actor in enumerate(self.actors)
        ])

    def round_robin(self, method: str, *args: Any) -> list:
        exports = [actor.run.remote("export") for actor in self.actors]
        totals = [0] * self.num_shards
        for r in range(self.num_shards):
            found = _get([
                actor.run.remote(method, *args, exports[(i + r) % self.num_shards]) for i, actor in enumerate(self.actors)
            ])
            totals = [t + f for t, f in zip(totals, found)]
        del exports
        return totals

    def stats(self) -> list[dict]:
        return _get([actor.stats.remote() for actor in self.actors])

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []


def _number(group: PoolGroup, summaries: Sequence[dict], labeled: Sequence[str], budget: int, what: str, source: str) -> PoolIndex:
    index, shard_ids, labeled_ids = index_pool(summaries, labeled, budget, what, source)
    group.call_each("set_ids", [(ids, labeled_ids) for ids in shard_ids])
    return index


def open_store_pool(store: FeatureStore, shards: int, labeled: Sequence[str], budget: int, what: str = "labeled uris") -> tuple[RayPoolGroup, PoolIndex]:
    """The store's `embedding`s on `shards` Ray actors, numbered and checked (`index_pool`)."""
    from raysel.runtime import ensure_ray

    plan = plan_shards(store, shards)
    check_budget(budget, sum(s.stop - s.start for part in plan for s in part), len(set(labeled)))
    ensure_ray()
    group = RayPoolGroup(store, plan)
    try:
        index = _number(group, group.summaries, labeled, budget, what, f"the feature store {store.uri}")
    except BaseException:
        group.close()
        raise
    return group, index


def open_memory_pool(vectors: np.ndarray, uris: Sequence[str], labeled: Sequence[str], budget: int, shards: int = 1, what: str = "labeled uris") -> tuple[LocalPoolGroup, PoolIndex]:
    """In-memory vectors [N, D] cut into `shards` contiguous parts held in this process."""
    vectors = np.asarray(vectors, dtype=np.float32)
    uris = [str(uri) for uri in uris]
    if vectors.ndim != 2 or len(vectors) != len(uris):
        raise ValueError(f"vectors must be [N, D] with N = {len(uris)} uris, got shape {vectors.shape}")
    bounds = [len(uris) * part // shards for part in range(shards + 1)]
    group = LocalPoolGroup([PoolShard(uris[a:b], vectors[a:b]) for a, b in zip(bounds[:-1], bounds[1:])])
    index = _number(group, group.call("summary"), labeled, budget, what, "the pool")
    return group, index
