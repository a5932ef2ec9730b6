"""The K-Center-Greedy driver: checks the shards, then runs passes until the budget is met.

The driver talks to a `ShardGroup`: in-process `KCenterShard`s (`LocalShardGroup`,
the single-process path) or Ray `ShardActor`s (`RayShardGroup` in
shard_actor.py). It never holds the vectors of the store, only the uris of its
picks and, per pass, the m candidates' vectors (m x K x D).

greedy, one round trip per pass:
    driver -> shards   the centers picked in the previous pass
    shards -> driver   their top-m images (score, per-cluster min-distance, vectors)
                       and the best image they held back
    driver             merges to the global top-m, picks among them while the pick
                       provably equals the reference's (kcenter.simulate_greedy)
prob, one round trip per pick:
    shards -> driver   their weight sum and the winner of their part of the
                       exponential race; the smallest key overall wins.
"""
from __future__ import annotations

import abc
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from raysel.select.base import Pick
from raysel.select.errors import (
    BudgetError,
    CheckpointError,
    DuplicateUriError,
    EmptyStoreError,
    InconsistentVectorsError,
    LabeledError,
    SelectionConfigError,
)
from raysel.select.kcenter.kernel import (
    SAMPLINGS,
    CenterBatch,
    Draw,
    KCenterShard,
    Proposal,
    best_draw,
    merge_proposals,
    simulate_greedy,
)


@dataclass
class ShardSummary:
    """What a shard reports once loaded."""

    shard: int
    rows: int
    shape: tuple[int, int] | None  # (K, D); None for an empty shard
    matched_seeds: list[str]
    first: Draw | None  # its entry in the uniform first-pick draw
    source: str = ""  # where its rows came from, for error messages


class ShardGroup(abc.ABC):
    """The shards as the driver sees them; every call is one round trip to all of them."""

    num_shards: int

    @abc.abstractmethod
    def start(self, seed: int) -> list[ShardSummary]:
        """Load (and check) every shard's rows."""

    @abc.abstractmethod
    def duplicate_uris(self) -> list[str]:
        """Uris that appear on more than one row anywhere."""

    @abc.abstractmethod
    def seed_batches(self) -> list[Any]:
        """Handles on each shard's seed vectors (labeled images, restored picks)."""

    @abc.abstractmethod
    def put(self, batch: CenterBatch) -> Any:
        """A handle on centers to send to every shard (Ray: one object, shared)."""

    @abc.abstractmethod
    def propose(self, batches: Sequence[Any], picked: Sequence[tuple[int, int]], count: int) -> list[Proposal]:
        """Apply new centers and retire picked (shard, row)s, then return each shard's top `count`."""

    @abc.abstractmethod
    def draw(self, batches: Sequence[Any], picked: Sequence[tuple[int, int]], seed: int, index: int) -> list[Draw | None]:
        """Apply new centers and retire picked rows, then draw for `prob` pick `index`."""

    def shard_stats(self) -> list[dict]:
        return []

    def close(self) -> None:
        pass


class LocalShardGroup(ShardGroup):
    """`KCenterShard`s in this process: the single-process path, and tests of the pass logic."""

    def __init__(self, shards: Sequence[KCenterShard]) -> None:
        self.shards = list(shards)
        self.num_shards = len(self.shards)

    def start(self, seed: int) -> list[ShardSummary]:
        return [
            ShardSummary(s.shard, s.num_rows, s.shape if s.num_rows else None, s.matched_seeds(), s.first_draw(seed), f"shard {s.shard}")
            for s in self.shards
        ]

    def duplicate_uris(self) -> list[str]:
        counts = Counter(uri for s in self.shards for uri in s.uris)
        return sorted(uri for uri, count in counts.items() if count > 1)

    def seed_batches(self) -> list[CenterBatch]:
        return [s.seed_batch() for s in self.shards if len(s.seed_rows)]

    def put(self, batch: CenterBatch) -> CenterBatch:
        return batch

    def _apply(self, batches: Sequence[CenterBatch], picked: Sequence[tuple[int, int]]) -> None:
        for s in self.shards:
            s.apply(batches, [row for shard, row in picked if shard == s.shard])

    def propose(self, batches, picked, count) -> list[Proposal]:
        self._apply(batches, picked)
        return [s.propose(count) for s in self.shards]

    def draw(self, batches, picked, seed, index) -> list[Draw | None]:
        self._apply(batches, picked)
        return [s.draw(seed, index) for s in self.shards]

    def shard_stats(self) -> list[dict]:
        return [{"shard": s.shard, "rows": s.num_rows, **s.work_stats()} for s in self.shards]


def check_shards(
    summaries: Sequence[ShardSummary],
    group: ShardGroup,
    budget: int,
    labeled: Sequence[str],
    resumed: Sequence[Pick],
) -> int:
    """Every input check that needs the rows; raises before anything is picked. Returns N."""
    total = sum(s.rows for s in summaries)
    if total == 0:
        raise EmptyStoreError("the feature store has no rows")
    shapes = {s.shape for s in summaries if s.shape is not None}
    if len(shapes) > 1:
        described = "; ".join(f"{s.source}: K={s.shape[0]}, D={s.shape[1]}" for s in summaries if s.shape is not None)
        raise InconsistentVectorsError(f"shards disagree on the number of clusters K or the dimension D ({described})")
    duplicates = group.duplicate_uris()
    if duplicates:
        raise DuplicateUriError(f"{len(duplicates)} uri(s) appear on more than one row of the store, e.g. {duplicates[:3]}")
    matched = {uri for s in summaries for uri in s.matched_seeds}
    unknown = [uri for uri in labeled if uri not in matched]
    if unknown:
        raise LabeledError(f"{len(unknown)} labeled uri(s) are not in the feature store, e.g. {unknown[:3]}")
    lost = [pick.uri for pick in resumed if pick.uri not in matched]
    if lost:
        raise CheckpointError(f"the checkpoint names {len(lost)} uri(s) the store no longer has, e.g. {lost[:3]}")
    check_budget(budget, total, len(labeled))
    return total


def check_budget(budget: int, images: int, labeled: int) -> None:
    """1 <= budget <= images - labeled, or a BudgetError saying which."""
    if budget < 1:
        raise BudgetError(f"--budget must be >= 1, got {budget}")
    pool = images - labeled
    if budget > pool:
        raise BudgetError(
            f"--budget {budget} exceeds the unlabeled pool: {images} images in the store, "
            f"{labeled} labeled, {pool} left to pick from"
        )


@dataclass
class KCenterStats:
    """How a run went: the figures `raysel select` reports."""

    images: int = 0
    picks: int = 0
    resumed_picks: int = 0
    round_trips: int = 0  # selection round trips (passes for greedy, picks for prob)
    setup_round_trips: int = 0
    seconds: float = 0.0
    driver_distance_evaluations: int = 0  # the driver's simulated picks among the candidates
    shards: list[dict] = field(default_factory=list)

    @property
    def distance_evaluations(self) -> int:
        """(vector, center) distances computed on all shards."""
        return sum(int(shard.get("distance_evaluations", 0)) for shard in self.shards)

    @property
    def passes(self) -> int:
        """Passes over the stored vectors (the most any shard made: seeding + one per round trip)."""
        return max((int(shard.get("passes", 0)) for shard in self.shards), default=0)

    @property
    def picks_per_round_trip(self) -> float:
        new = self.picks - self.resumed_picks
        return new / self.round_trips if self.round_trips else float(new)

    def as_dict(self) -> dict:
        return {
            "images": self.images,
            "picks": self.picks,
            "resumed_picks": self.resumed_picks,
            "round_trips": self.round_trips,
            "setup_round_trips": self.setup_round_trips,
            "picks_per_round_trip": round(self.picks_per_round_trip, 3),
            "seconds": round(self.seconds, 3),
            "passes": self.passes,
            "distance_evaluations": self.distance_evaluations,
            "center_distance_evaluations": sum(int(s.get("center_distance_evaluations", 0)) for s in self.shards),
            "driver_distance_evaluations": self.driver_distance_evaluations,
            "shards": self.shards,
        }


def run_kcenter(
    group: ShardGroup,
    budget: int,
    distance: str,
    sampling: str = "greedy",
    candidates: int = 64,
    seed: int = 0,
    labeled: Sequence[str] = (),
    resumed: Sequence[Pick] = (),
    record: Callable[[Sequence[Pick]], None] = lambda picks: None,
) -> tuple[list[Pick], KCenterStats]:
    """Pick `budget` images over the group's shards, exactly as `kcenter_greedy_reference` would.

    The group's shards must have been built with seeds = labeled + resumed uris.

    Returns:
        all picks (resumed ones first) and the run's figures.
    """
    if sampling not in SAMPLINGS:
        raise SelectionConfigError(f"--sampling must be one of {list(SAMPLINGS)}, got {sampling!r}")
    if candidates < 1:
        raise SelectionConfigError(f"--candidates must be >= 1, got {candidates}")
    started = time.perf_counter()
    stats = KCenterStats()
    summaries = group.start(seed)
    stats.images = check_shards(summaries, group, budget, labeled, resumed)
    stats.setup_round_trips = 2
    picks = list(resumed)[:budget]
    stats.resumed_picks = len(picks)
    pending = group.seed_batches()
    stats.setup_round_trips += 1
    picked: list[tuple[int, int]] = []
    if not picks and not labeled:
        first = best_draw(s.first for s in summaries)
        new = [Pick(first.uri, None)]
        picks += new
        record(new)
        pending.append(group.put(CenterBatch(first.vectors, first.factors)))
        picked = [(first.shard, first.row)]
    while len(picks) < budget:
        if sampling == "greedy":
            proposals = group.propose(pending, picked, candidates)
            pool = merge_proposals(proposals, candidates)
            steps = simulate_greedy(pool, budget - len(picks), distance)
            stats.driver_distance_evaluations += len(steps) * pool.cluster_min.size * pool.cluster_min.shape[1]
            members = [member for member, _ in steps]
            new = [Pick(pool.uris[member], score) for member, score in steps]
            pending = [group.put(pool.centers(members))]
            picked = [(int(pool.shards[m]), int(pool.rows[m])) for m in members]
        else:
            drawn = best_draw(group.draw(pending, picked, seed, len(picks)))
            new = [Pick(drawn.uri, drawn.distance)]
            pending = [group.put(CenterBatch(drawn.vectors, drawn.factors))]
            picked = [(drawn.shard, drawn.row)]
        stats.round_trips += 1
        picks += new
        record(new)
    stats.picks = len(picks)
    stats.shards = group.shard_stats()
    stats.seconds = time.perf_counter() - started
    return picks, stats


def split_rows(count: int, parts: int) -> list[tuple[int, int]]:
    """`parts` contiguous [start, stop) ranges covering range(count), sizes differing by at most 1."""
    bounds = [count * part // parts for part in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def kcenter_greedy_batched(
    vectors: np.ndarray,
    uris: Sequence[str],
    budget: int,
    distance: str = "cosine",
    sampling: str = "greedy",
    labeled: Iterable[str] = (),
    seed: int = 0,
    dtype: str = "float32",
    shards: int = 1,
    candidates: int = 64,
    pruning: bool = True,
    kernel: str = "numpy",
    device: str | None = None,
) -> tuple[list[Pick], KCenterStats]:
    """The single-process path: the batched passes over in-process shards (no Ray).

    Same arguments and picks as `kcenter_greedy_reference`; `shards` splits the
    rows into that many in-process shards (to test the merge logic without Ray);
    `pruning`, `kernel` and `device` as in `KCenterShard` (the picks do not depend on them).
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim == 2:
        vectors = vectors[:, None, :]
    uris = list(uris)
    labeled = list(dict.fromkeys(labeled))
    parts = [
        KCenterShard(uris[start:stop], vectors[start:stop], distance, dtype, seeds=labeled, shard=index, pruning=pruning, kernel=kernel, device=device)
        for index, (start, stop) in enumerate(split_rows(len(uris), shards))
    ]
    return run_kcenter(
        LocalShardGroup(parts), budget, distance, sampling=sampling, candidates=candidates, seed=seed, labeled=labeled
    )
