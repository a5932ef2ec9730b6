"""Ray plumbing of K-Center-Greedy: `ShardActor` holds one shard, `RayShardGroup` drives them.

A `ShardActor` reads its rows once (store_rows.py) into a `KCenterShard` and
answers the driver's passes. The K-Center math is all in kcenter.py; this file
only moves messages.

Fault tolerance: actors are created with `max_restarts`, so Ray restarts a killed
one (its constructor runs again, empty). When a call fails with `RayActorError`
(the actor died during it) or `ShardNotLoadedError` (it died before it and came
back empty), the group waits for the actor, has it reload its rows and replay
every center batch and pick so far (min-distances are a min over centers, so
replaying in any grouping rebuilds them to the bit), then repeats the call.
Center batches are `ray.put` once per pass and kept as references, so the
driver never holds them.
"""
from __future__ import annotations

import logging
import os
import resource
import time
from typing import Any, Callable, Sequence

import numpy as np
import ray
from ray.exceptions import GetTimeoutError, RayActorError

from raysel.process_memory import peak_rss_bytes
from raysel.runtime import LOST_ACTOR_ERRORS, ShardNotLoadedError, get_reraising_input_errors
from raysel.select import distances
from raysel.select.kcenter.kernel import CenterBatch, Draw, KCenterShard, Proposal
from raysel.select.kcenter.driver import ShardGroup, ShardSummary
from raysel.select.pool.store_rows import RowSlice, describe, load_rows
from raysel.storage import StorageOptions
from raysel.store import FeatureStore

log = logging.getLogger(__name__)

MAX_RESTARTS = 3  # Ray restarts a dead shard actor up to this many times
RECOVERY_TIMEOUT_S = 120.0  # how long to wait for a restarted actor to answer
PLACEMENT_TIMEOUT_S = 600.0  # how long to wait for all shard actors to be placed


def cpu_seconds() -> float:
    """User + system CPU time of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class ShardActor:
    """One shard of the store in a Ray actor: rows, min-distances, eligibility."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.shard: KCenterShard | None = None
        self.load_seconds = 0.0
        self.cpu_at_start = cpu_seconds()

    def ping(self) -> tuple[str, int]:
        """(node id, CPUs usable by this process)."""
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return ray.get_runtime_context().get_node_id(), cpus

    def load(
        self,
        store_uri: str,
        options: StorageOptions,
        slices: list[RowSlice],
        column: str,
        distance: str,
        dtype: str,
        seeds: list[str],
        threads: int,
        seed: int,
        pruning: bool = True,
        kernel: str = "numpy",
    ) -> ShardSummary:
        started = time.perf_counter()
        distances.set_threads(threads)
        distances.storage_dtype(dtype)

        def to_storage(part: np.ndarray, uris: list[str]) -> np.ndarray:
            return distances.store_vectors(part, uris, distance, dtype)  # checked and rounded per read batch

        uris, vectors = load_rows(FeatureStore(store_uri, options), slices, column, convert=to_storage, dtype=dtype)
        self.shard = KCenterShard(uris, vectors, distance, dtype, seeds=seeds, shard=self.index, pruning=pruning, stored=True,
            kernel=kernel, device=None)
        del vectors
        self.load_seconds = time.perf_counter() - started
        shard = self.shard
        return ShardSummary(
            shard=self.index,
            rows=shard.num_rows,
            shape=shard.shape if shard.num_rows else None,
            matched_seeds=shard.matched_seeds(),
            first=shard.first_draw(seed),
            source=describe(slices),
        )

    def is_loaded(self) -> bool:
        """False in a fresh (or restarted) actor: its rows are not loaded yet."""
        return self.shard is not None

    def _loaded(self) -> KCenterShard:
        if self.shard is None:
            raise ShardNotLoadedError(f"shard actor {self.index} holds no rows (restarted after it died)")
        return self.shard

    def hash_buckets(self, parts: int) -> list[np.ndarray] | np.ndarray:
        """This shard's uri hashes split by hash % parts (one return value per part)."""
        hashes = self._loaded().hashes
        buckets = [np.sort(hashes[hashes % np.uint64(parts) == np.uint64(part)]) for part in range(parts)]
        return buckets if parts > 1 else buckets[0]

    def repeated_hashes(self, *buckets: np.ndarray) -> np.ndarray:
        """Hashes found more than once across the given buckets (all shards' share of one part)."""
        merged = np.sort(np.concatenate(buckets)) if buckets else np.empty(0, dtype=np.uint64)
        return np.unique(merged[1:][merged[1:] == merged[:-1]])

    def uris_with_hashes(self, hashes: np.ndarray) -> list[str]:
        shard = self._loaded()
        return [shard.uris[row] for row in np.flatnonzero(np.isin(shard.hashes, hashes))]

    def seed_batch(self) -> CenterBatch:
        return self._loaded().seed_batch()

    def restore(self, picked_rows: list[int], *batches: CenterBatch) -> None:
        self._loaded().apply(batches, picked_rows)

    def propose(self, count: int, picked_rows: list[int], *batches: CenterBatch) -> Proposal:
        shard = self._loaded()
        shard.apply(batches, picked_rows)
        return shard.propose(count)

    def draw(self, seed: int, index: int, picked_rows: list[int], *batches: CenterBatch) -> Draw | None:
        shard = self._loaded()
        shard.apply(batches, picked_rows)
        return shard.draw(seed, index)

    def stats(self) -> dict:
        shard = self.shard
        return {
            "shard": self.index,
            "rows": shard.num_rows if shard else 0,
            **(shard.work_stats() if shard else {"passes": 0}),
            "vector_bytes": int(shard.vectors.nbytes) if shard else 0,
            "load_seconds": round(self.load_seconds, 3),
            "peak_rss_bytes": peak_rss_bytes(),
            "cpu_seconds": round(cpu_seconds() - self.cpu_at_start, 3),
        }


RemoteShardActor = ray.remote(ShardActor)


class RayShardGroup(ShardGroup):
    """`shards` ShardActors over the store's rows, with restart-and-replay on actor death.

    Args:
        store: the feature store.
        plan: each actor's row slices (`store_rows.plan_shards`); one actor per entry.
        column: `clusters` or `embedding`.
        distance, dtype: as in SelectConfig.
        seeds: uris that start in the selected pool (labeled + restored picks).
        max_restarts: passed to Ray for every actor.
    """

    def __init__(
        self,
        store: FeatureStore,
        plan: list[list[RowSlice]],
        column: str,
        distance: str,
        dtype: str,
        seeds: Sequence[str],
        max_restarts: int = MAX_RESTARTS,
        pruning: bool = True,
        memory_per_actor: Sequence[int] | None = None,
        kernel: str = "numpy",
    ) -> None:
        self.store = store
        self.plan = plan
        self.column = column
        self.distance = distance
        self.dtype = dtype
        self.seeds = list(seeds)
        num_shards = len(plan)
        self.num_shards = num_shards
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        self.actor_cpus = min(1.0, cpus / num_shards)  # never more than the cluster has in all
        self.pruning = pruning
        self.kernel = kernel
        gpus = float(ray.cluster_resources().get("GPU", 0.0))
        self.actor_gpus = min(1.0, gpus / num_shards) if kernel == "torch" and gpus > 0 else 0.0  # CPU torch without GPUs
        self.memory_per_actor = list(memory_per_actor) if memory_per_actor is not None else [0] * num_shards
        self.actors = [
            RemoteShardActor.options(
                num_cpus=self.actor_cpus,
                num_gpus=self.actor_gpus,
                max_restarts=max_restarts,
                max_task_retries=0,
                scheduling_strategy="SPREAD",  # shards over the nodes, not packed on the first
                **({"memory": self.memory_per_actor[index]} if self.memory_per_actor[index] > 0 else {}),
            ).remote(index)
            for index in range(num_shards)
        ]
        self.threads = [1] * num_shards
        self.seed = 0
        self.history: list[Any] = []  # every center batch sent so far (object refs), in order
        self.picked: list[list[int]] = [[] for _ in range(num_shards)]  # picked rows per shard
        self.recoveries = 0
        self.after_submit: Callable[[str, "RayShardGroup"], None] | None = None  # test hook: runs mid-round

    # --- calls with restart-and-replay ---
    def _load_args(self, index: int) -> tuple:
        return (
            self.store.uri,
            self.store.options,
            self.plan[index],
            self.column,
            self.distance,
            self.dtype,
            self.seeds,
            self.threads[index],
            self.seed,
            self.pruning,
            self.kernel,
        )

    def _recover(self, index: int) -> None:
        """Wait for a restarted actor, reload its rows and replay all centers and picks."""
        self.recoveries += 1
        log.warning("shard actor %d died; waiting for its restart and replaying %d center batches", index, len(self.history))
        deadline = time.monotonic() + RECOVERY_TIMEOUT_S
        actor = self.actors[index]
        while True:
            try:
                ray.get(actor.ping.remote(), timeout=10)
                ray.get(actor.load.remote(*self._load_args(index)))
                ray.get(actor.restore.remote(self.picked[index], *self.history))
                return
            except (RayActorError, GetTimeoutError) as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"shard actor {index} died and did not come back: {exc}") from exc
                time.sleep(0.5)

    def _get(self, ref: Any) -> Any:
        return get_reraising_input_errors(ref)

    def _call_all(self, method: str, args_of: Callable[[int], tuple], retry_args_of: Callable[[int], tuple] | None = None) -> list:
        """Call `method` on every actor at once and gather; a dead actor is recovered and asked again."""
        refs = [getattr(actor, method).remote(*args_of(index)) for index, actor in enumerate(self.actors)]
        if self.after_submit is not None:
            self.after_submit(method, self)
        try:
            return self._get(refs)  # one ray.get for all actors: the common case
        except LOST_ACTOR_ERRORS:
            pass  # some actor died: gather one by one, recovering the dead ones
        results = []
        for index, ref in enumerate(refs):
            for attempt in range(MAX_RESTARTS + 2):
                try:
                    results.append(self._get(ref))
                    break
                except LOST_ACTOR_ERRORS:
                    if attempt == MAX_RESTARTS + 1:
                        raise
                    self._recover(index)
                    ref = getattr(self.actors[index], method).remote(*(retry_args_of or args_of)(index))
        return results

    # --- ShardGroup ---
    def start(self, seed: int) -> list[ShardSummary]:
        self.seed = seed
        pings = [actor.ping.remote() for actor in self.actors]
        _, waiting = ray.wait(pings, num_returns=len(pings), timeout=PLACEMENT_TIMEOUT_S)
        if waiting:
            raise RuntimeError(
                f"{len(waiting)} of {self.num_shards} shard actors did not start within {PLACEMENT_TIMEOUT_S:.0f}s: "
                f"the cluster has too few free CPUs ({self.actor_cpus:g} per actor) or cannot start workers"
            )
        placed = self._call_all("ping", lambda i: ())
        per_node: dict[str, int] = {}
        for node, _ in placed:
            per_node[node] = per_node.get(node, 0) + 1
        self.threads = [max(1, cpus // per_node[node]) for node, cpus in placed]
        return self._call_all("load", self._load_args)

    def _recover_lost(self) -> list[int]:
        """Recover every actor that is dead or came back empty; returns their indices.

        Each actor is asked after the calls already sent to it (an actor runs them in order).
        """
        lost = []
        for index, actor in enumerate(self.actors):
            try:
                loaded = ray.get(actor.is_loaded.remote(), timeout=RECOVERY_TIMEOUT_S)
            except (RayActorError, GetTimeoutError):
                loaded = False
            if not loaded:
                self._recover(index)
                lost.append(index)
        return lost

    def duplicate_uris(self) -> list[str]:
        """Hash-partitioned check: actor p gathers every shard's hashes with hash % S == p.

        The driver only passes references around, so no process sees all uris. A lost
        actor (during or before the check) is recovered and the whole check run again.
        """
        for attempt in range(MAX_RESTARTS + 2):
            try:
                return self._duplicate_uris_once()
            except LOST_ACTOR_ERRORS:
                if attempt == MAX_RESTARTS + 1:
                    raise
                self._recover_lost()
        raise AssertionError("unreachable")

    def _duplicate_uris_once(self) -> list[str]:
        parts = self.num_shards
        buckets = []
        for actor in self.actors:
            refs = actor.hash_buckets.options(num_returns=parts).remote(parts)
            buckets.append(refs if parts > 1 else [refs])
        repeated = self._get(
            [self.actors[part].repeated_hashes.remote(*[buckets[i][part] for i in range(parts)]) for part in range(parts)]
        )
        hashes = np.unique(np.concatenate(repeated))
        if not len(hashes):
            return []
        counts: dict[str, int] = {}
        for uris in self._call_all("uris_with_hashes", lambda i: (hashes,)):
            for uri in uris:
                counts[uri] = counts.get(uri, 0) + 1
        return sorted(uri for uri, count in counts.items() if count > 1)

    def seed_batches(self) -> list[Any]:
        """References to every shard's batch of labeled seeds (the driver never holds them).

        A reference whose actor was lost before or during `seed_batch` would carry that
        error into every later pass and replay, so the actors lost by then are recovered
        and asked again.
        """
        if not self.seeds:
            return []
        refs = [actor.seed_batch.remote() for actor in self.actors]
        for attempt in range(MAX_RESTARTS + 2):
            lost = self._recover_lost()
            if not lost:
                return refs
            if attempt == MAX_RESTARTS + 1:
                break
            for index in lost:
                refs[index] = self.actors[index].seed_batch.remote()
        raise RuntimeError(f"shard actors {lost} were lost {MAX_RESTARTS + 2} times while making their seed batches")

    def put(self, batch: CenterBatch) -> Any:
        return ray.put(batch)

    def _remember(self, batches: Sequence[Any], picked: Sequence[tuple[int, int]]) -> list[list[int]]:
        self.history.extend(batches)
        mine: list[list[int]] = [[] for _ in range(self.num_shards)]
        for shard, row in picked:
            mine[shard].append(row)
            self.picked[shard].append(row)
        return mine

    def propose(self, batches, picked, count) -> list[Proposal]:
        mine = self._remember(batches, picked)
        return self._call_all("propose", lambda i: (count, mine[i], *batches), lambda i: (count, []))

    def draw(self, batches, picked, seed, index) -> list[Draw | None]:
        mine = self._remember(batches, picked)
        return self._call_all("draw", lambda i: (seed, index, mine[i], *batches), lambda i: (seed, index, []))

    def shard_stats(self) -> list[dict]:
        stats = self._call_all("stats", lambda i: ())
        for entry, threads in zip(stats, self.threads):
            entry["threads"] = threads
        return stats

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []
