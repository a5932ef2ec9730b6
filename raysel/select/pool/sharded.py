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
import logging
import os
import resource
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import ray
from ray.exceptions import GetTimeoutError, RayActorError

from raysel.process_memory import peak_rss_bytes
from raysel.runtime import LOST_ACTOR_ERRORS, ShardNotLoadedError, get_reraising_input_errors
from raysel.select.blas import single_threaded
from raysel.select.pool.embedding_pool import PoolIndex, check_budget, index_pool
from raysel.select.pool.pool_shard import PoolShard
from raysel.select.pool.store_rows import RowSlice, plan_shards
from raysel.storage import StorageOptions
from raysel.store import FeatureStore

log = logging.getLogger(__name__)

PLACEMENT_TIMEOUT_S = 600.0


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

    def ping(self) -> tuple[str, int]:
        """(node id, CPUs usable by this process)."""
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return ray.get_runtime_context().get_node_id(), cpus

    def is_loaded(self) -> bool:
        """False in a fresh (or restarted) actor: its rows are not loaded yet."""
        return self.shard is not None

    @single_threaded
    def load(self, store_uri: str, options: StorageOptions, slices: list[RowSlice], threads: int = 1) -> dict:
        self.shard = PoolShard.from_store(store_uri, options, slices, threads)
        return self.shard.summary()

    def _loaded(self) -> PoolShard:
        if self.shard is None:
            raise ShardNotLoadedError(f"pool shard actor {self.index} holds no rows (restarted after it died)")
        return self.shard

    @single_threaded
    def run(self, method: str, *args: Any) -> Any:
        return getattr(self._loaded(), method)(*args)

    @single_threaded
    def run_split(self, method: str, *args: Any) -> Any:
        parts = getattr(self._loaded(), method)(*args)
        return tuple(parts) if len(parts) > 1 else parts[0]

    def stats(self) -> dict:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "shard": self.index,
            "rows": len(self.shard.ids) if self.shard is not None else 0,
            "threads": self.shard.threads if self.shard is not None else 0,
            "vector_bytes": self.shard.vector_bytes() if self.shard is not None else 0,
            "peak_rss_bytes": peak_rss_bytes(),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
            "pid": os.getpid(),
        }


RemotePoolShardActor = ray.remote(PoolShardActor)

MAX_RESTARTS = 3  # Ray restarts a dead pool shard actor up to this many times
RECOVERY_TIMEOUT_S = 120.0  # how long to wait for a restarted actor to answer
# PoolShard calls that change a shard's state, replayed (in order) into a restarted actor. A
# labels call replaces the one before it (each sets all labels from its arguments alone).
STATEFUL_CALLS = {"set_ids", "normalize", "set_cells", "ball_search", "finish_graph"}
LABEL_CALLS = {"kmeans_step", "assign", "reset_labels"}


@dataclass(frozen=True)
class ExportOf:
    """In the replay log: "shard `index`'s export()", fetched afresh when replayed."""

    index: int


class RayPoolGroup(PoolGroup):
    """One `PoolShardActor` per entry of `plan` (row slices of the store), restarted and replayed on death.

    Fault tolerance, as the K-Center shard actors (`kcenter/shard_actor.py`): actors have
    `max_restarts`; the group logs every state-changing call per shard (`STATEFUL_CALLS`,
    the latest of `LABEL_CALLS`). When a call fails with `RayActorError` (the actor died
    during it) or `ShardNotLoadedError` (it died between calls and Ray restarted it empty
    before this call reached it), every actor that came back empty reloads its rows and
    replays its log (the ball searches last, against the other shards' exports fetched
    afresh: nothing after them changes a shard's vectors or cells), then the failed calls
    are sent again. Every call is a pure function of the shard's rows and the arguments,
    so the picks are those of a run without the death.
    """

    def __init__(self, store: FeatureStore, plan: list[list[RowSlice]], max_restarts: int = MAX_RESTARTS) -> None:
        self.store = store
        self.plan = plan
        self.num_shards = len(plan)
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        actor_cpus = min(1.0, cpus / self.num_shards)
        self.actors = [
            RemotePoolShardActor.options(num_cpus=actor_cpus, max_restarts=max_restarts, max_task_retries=0).remote(i)
            for i in range(self.num_shards)
        ]
        self.log: list[list[tuple[str, tuple]]] = [[] for _ in range(self.num_shards)]
        self.recoveries = 0
        self.after_submit: Callable[[str, "RayPoolGroup"], None] | None = None  # test hook: runs with calls in flight
        pings = [actor.ping.remote() for actor in self.actors]
        _, waiting = ray.wait(pings, num_returns=len(pings), timeout=PLACEMENT_TIMEOUT_S)
        if waiting:
            self.close()
            raise RuntimeError(
                f"{len(waiting)} of {self.num_shards} pool shard actors did not start within {PLACEMENT_TIMEOUT_S:.0f}s "
                f"({actor_cpus:g} CPU each)"
            )
        placed = ray.get(pings)
        per_node: dict[str, int] = {}
        for node, _ in placed:
            per_node[node] = per_node.get(node, 0) + 1
        # as the K-Center shards: each actor's kernels use its node's cores shared among the node's actors
        self.threads = [max(1, cpus // per_node[node]) for node, cpus in placed]
        self.summaries = self._gather("load", lambda i: self.actors[i].load.remote(*self._load_args(i)))

    # --- restart and replay ---
    def _load_args(self, index: int) -> tuple:
        return self.store.uri, self.store.options, self.plan[index], self.threads[index]

    def _remember(self, index: int, method: str, args: tuple) -> None:
        if method in LABEL_CALLS:
            self.log[index] = [entry for entry in self.log[index] if entry[0] not in LABEL_CALLS]
        if method in STATEFUL_CALLS or method in LABEL_CALLS:
            self.log[index].append((method, args))

    def _resolve(self, args: tuple) -> tuple:
        return tuple(self.actors[a.index].run.remote("export") if isinstance(a, ExportOf) else a for a in args)

    def _heal(self) -> set[int]:
        """Reload and replay every actor that restarted empty; returns their indices."""
        deadline = time.monotonic() + RECOVERY_TIMEOUT_S
        healed: set[int] = set()
        for index, actor in enumerate(self.actors):
            while True:
                try:
                    if not ray.get(actor.is_loaded.remote(), timeout=10):
                        ray.get(actor.load.remote(*self._load_args(index)))
                        healed.add(index)
                    break
                except (RayActorError, GetTimeoutError) as exc:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"pool shard actor {index} died and did not come back: {exc}") from exc
                    time.sleep(0.5)
        if healed:
            self.recoveries += len(healed)
            log.warning("pool shard actors %s restarted; replaying their calls", sorted(healed))
        searches = {i: next((n for n, e in enumerate(self.log[i]) if e[0] == "ball_search"), len(self.log[i])) for i in healed}
        for phase in ("before the ball search", "the ball search on"):  # every healed shard's vectors first
            for index in sorted(healed):
                entries = self.log[index][: searches[index]] if phase.startswith("before") else self.log[index][searches[index] :]
                for method, args in entries:
                    get_reraising_input_errors(self.actors[index].run.remote(method, *self._resolve(args)))
        return healed

    def _gather(self, method: str, submit: Callable[[int], Any], healed: Callable[[set[int]], None] | None = None) -> list:
        """submit(i) -> a ref for every shard; the results, healing dead actors and resubmitting their calls.

        `healed(indices)` runs after a recovery, before the failed calls are sent again (to
        refresh references that came from the restarted actors).
        """
        refs = [submit(index) for index in range(self.num_shards)]
        if self.after_submit is not None:
            self.after_submit(method, self)
        results: list = [None] * self.num_shards
        pending = list(range(self.num_shards))
        for attempt in range(MAX_RESTARTS + 2):
            failed: list[int] = []
            for index in pending:
                try:
                    results[index] = get_reraising_input_errors(refs[index])
                except LOST_ACTOR_ERRORS:
                    if attempt == MAX_RESTARTS + 1:
                        raise
                    failed.append(index)
            if not failed:
                return results
            recovered = self._heal()
            if healed is not None:
                healed(recovered)
            for index in failed:
                refs[index] = submit(index)
            pending = failed
        raise AssertionError("unreachable")

    def _run_each(self, method: str, args: Sequence[tuple]) -> list:
        results = self._gather(method, lambda i: self.actors[i].run.remote(method, *args[i]))
        for index in range(self.num_shards):
            self._remember(index, method, args[index])
        return results

    # --- PoolGroup ---
    def call(self, method: str, *args: Any) -> list:
        return self._run_each(method, [args] * self.num_shards)

    def call_each(self, method: str, args: Sequence[tuple]) -> list:
        return self._run_each(method, list(args))

    def put(self, value: Any) -> Any:
        return ray.put(value)

    def exchange(self, split: str, split_args: tuple, combine: str, combine_args: Sequence[tuple]) -> list:
        parts = self.num_shards

        def split_of(index: int) -> list:
            refs = self.actors[index].run_split.options(num_returns=parts).remote(split, *split_args, parts)
            return refs if parts > 1 else [refs]

        splits = [split_of(index) for index in range(parts)]

        def refresh(recovered: set[int]) -> None:
            for index in recovered:
                splits[index] = split_of(index)

        def submit(p: int) -> Any:
            return self.actors[p].run.remote(combine, *combine_args[p], *[splits[i][p] for i in range(parts)])

        return self._gather(combine, submit, refresh)

    def round_robin(self, method: str, *args: Any) -> list:
        exports = [actor.run.remote("export") for actor in self.actors]

        def refresh(recovered: set[int]) -> None:
            for index in recovered:
                exports[index] = self.actors[index].run.remote("export")

        totals = [0] * self.num_shards
        for r in range(self.num_shards):
            base = [(i + r) % self.num_shards for i in range(self.num_shards)]
            found = self._gather(method, lambda i: self.actors[i].run.remote(method, *args, exports[base[i]]), refresh)
            for index in range(self.num_shards):
                self._remember(index, method, (*args, ExportOf(base[index])))
            totals = [t + f for t, f in zip(totals, found)]
        exports.clear()  # drop the shards' exports now, not when the closure goes
        return totals

    def stats(self) -> list[dict]:
        return self._gather("stats", lambda i: self.actors[i].stats.remote())

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
    group = LocalPoolGroup([PoolShard(uris[a:b], np.array(vectors[a:b], dtype=np.float32)) for a, b in zip(bounds[:-1], bounds[1:])])  # own copies: shards change their rows in place
    index = _number(group, group.call("summary"), labeled, budget, what, "the pool")
    return group, index
