"""K-Center-Greedy over knowledge clusters (GEAL Algorithm 1), as plain numpy.

Every image has K vectors (its knowledge clusters; K = 1 for Core-Set on one
embedding). Each vector keeps its distance to the nearest selected vector
(`min_distance`); an image's score is the max over its K vectors; the image with
the top score is picked and all its K vectors join the selected pool.
Ties go to the smallest uri.

Three pieces live here, all free of Ray:

- `kcenter_greedy_reference`: one full distance pass per pick. The oracle.
- `KCenterShard`: the rows of one shard and their min-distances; what a Ray
  `ShardActor` holds (shard_actor.py) and what the single-process path uses.
- The driver's side of a batched pass, `merge_proposals` + `simulate_greedy`:
  shards propose their top-m images; the driver picks as many of them as it can
  prove the reference would pick (see docs/selection.md), in one round trip.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from raysel.select import draws
from raysel.select.base import Pick
from raysel.select.distances import norm_factors, pairwise_distances, prepare_vectors, storage_dtype, update_min_distance
from raysel.select.kcenter.bounds import NearestCenters
from raysel.select.errors import BudgetError, DuplicateUriError, LabeledError

SAMPLINGS = ("greedy", "prob")
SHARD_KERNELS = ("numpy", "torch")


def uri_ranks(uris: Sequence[str]) -> np.ndarray:
    """Position of each uri in sorted order: comparing ranks == comparing uris. [N] int64."""
    ranks = np.empty(len(uris), dtype=np.int64)
    ranks[sorted(range(len(uris)), key=uris.__getitem__)] = np.arange(len(uris))
    return ranks


def beats(score: float, uri: str, other: tuple[float, str] | None) -> bool:
    """True when (score, uri) comes before `other` in pick order (higher score, then smaller uri)."""
    return other is None or score > other[0] or (score == other[0] and uri < other[1])


@dataclass
class CenterBatch:
    """Vectors joining the selected pool. vectors: [c, D] stored dtype; factors: [c] float64."""

    vectors: np.ndarray
    factors: np.ndarray


def concat_batches(batches: Iterable[CenterBatch]) -> CenterBatch | None:
    batches = [batch for batch in batches if batch is not None and len(batch.vectors)]
    if not batches:
        return None
    return CenterBatch(np.concatenate([b.vectors for b in batches]), np.concatenate([b.factors for b in batches]))


@dataclass
class Proposal:
    """A shard's answer to a greedy pass.

    Attributes:
        shard: the shard's index.
        rows: [m] int64 local rows of its best eligible images, best first.
        uris: [m] their uris. scores: [m] float64.
        cluster_min: [m, K] float64 min-distance of each of their clusters.
        vectors: [m, K, D] stored vectors. factors: [m, K] float64.
        held_back: (score, uri) of its best image not proposed, None when there is none.
    """

    shard: int
    rows: np.ndarray
    uris: list[str]
    scores: np.ndarray
    cluster_min: np.ndarray
    vectors: np.ndarray
    factors: np.ndarray
    held_back: tuple[float, str] | None


@dataclass
class Draw:
    """A shard's candidate for a random pick (first pick, or one `prob` pick).

    key: smaller wins (ties: smaller uri, then smaller cluster). weighted: False for a
    uniform fallback draw (no eligible image has a positive weight). distance: the
    drawn cluster's min-distance (None for a uniform draw). vectors [K, D], factors [K].
    """

    shard: int
    row: int
    uri: str
    key: float
    cluster: int
    weighted: bool
    distance: float | None
    vectors: np.ndarray
    factors: np.ndarray
    weight_sum: float = 0.0

    def order(self) -> tuple:
        return (not self.weighted, self.key, self.uri, self.cluster)


def best_draw(candidates: Iterable[Draw | None]) -> Draw:
    """The global winner among the shards' draws (an exponential race is decided by the min key)."""
    present = [draw for draw in candidates if draw is not None]
    if not present:
        raise RuntimeError("no eligible image left to draw from")
    return min(present, key=Draw.order)


class KCenterShard:
    """One shard's rows and their K-Center state.

    Holds `vectors` [n, K, D] (float32 or float16), `factors` [n, K] float64,
    `min_distance` [n, K] float64 and `eligible` [n] bool: shard bytes plus O(n)
    (with pruning also each vector's nearest center, and the selected centers).

    Args:
        uris: [n] image uris.
        vectors: [n, K, D] float32 raw vectors (checked, normalised per `distance`),
            or vectors already in the storage dtype from `distances.store_vectors`
            (`stored=True`: only the norm factors are computed).
        distance: "cosine" or "euclidean".
        dtype: storage dtype, "float32" or "float16".
        seeds: uris whose vectors start in the selected pool and that are never picked
            (labeled images, picks restored from a checkpoint).
        shard: this shard's index (echoed in proposals).
        pruning: skip the distances the triangle inequality proves cannot change a
            min-distance (bounds.py); the min-distances, and so the picks, are the same bits.
        stored: `vectors` are already checked and in the storage dtype.
        kernel: "numpy" (CPU, the default) or "torch": vectors held on `device` (a GPU
            where there is one; torch_kernel.py), every distance computed (no pruning).
        device: the torch device for kernel "torch" (default: cuda when available).
    """

    def __init__(
        self,
        uris: list[str],
        vectors: np.ndarray,
        distance: str,
        dtype: str = "float32",
        seeds: Iterable[str] = (),
        shard: int = 0,
        pruning: bool = True,
        stored: bool = False,
        kernel: str = "numpy",
        device: str | None = None,
    ) -> None:
        self.shard = shard
        self.uris = list(uris)
        self.distance = distance
        if stored:
            if vectors.dtype != storage_dtype(dtype):
                raise ValueError(f"stored vectors are {vectors.dtype}, expected {dtype}")
            self.vectors, self.factors = np.ascontiguousarray(vectors), norm_factors(vectors, distance)
        else:
            self.vectors, self.factors = prepare_vectors(vectors, self.uris, distance, dtype)
        count, clusters = self.vectors.shape[:2]
        self.distinct = draws.distinct_clusters(self.vectors)  # [n, K]: repeats take no part in prob draws
        self.min_distance = np.full((count, clusters), np.inf)
        if kernel not in SHARD_KERNELS:
            raise ValueError(f"kernel must be one of {SHARD_KERNELS}, got {kernel!r}")
        self.kernel = kernel
        self.device_pass = None
        if kernel == "torch":
            from raysel.select.kcenter.torch_kernel import TorchMinDistance

            pruning = False
            self.device_pass = TorchMinDistance(
                self.vectors.reshape(count * clusters, self.vectors.shape[2]), self.factors.reshape(-1), distance, device
            )
        self.pruning = pruning
        self.bounds = (
            NearestCenters(
                self.vectors.reshape(count * clusters, self.vectors.shape[2]), self.factors.reshape(-1), distance, self.min_distance.reshape(-1)
            )
            if pruning
            else None
        )
        self.unpruned_evaluations = 0
        self.eligible = np.ones(count, dtype=bool)
        self.uri_rank = uri_ranks(self.uris)
        self.hashes = draws.uri_hashes(self.uris)
        seed_set = set(seeds)
        self.seed_rows = np.array([row for row, uri in enumerate(self.uris) if uri in seed_set], dtype=np.int64)
        self.eligible[self.seed_rows] = False
        self.passes = 0

    # --- what the driver asks once ---
    @property
    def num_rows(self) -> int:
        return len(self.uris)

    @property
    def shape(self) -> tuple[int, int]:
        """(K, D)."""
        return int(self.vectors.shape[1]), int(self.vectors.shape[2])

    def matched_seeds(self) -> list[str]:
        return [self.uris[row] for row in self.seed_rows]

    def seed_batch(self) -> CenterBatch:
        """The vectors of this shard's seed rows, to be applied on every shard."""
        return self.batch_of(self.seed_rows)

    def batch_of(self, rows: np.ndarray | Sequence[int]) -> CenterBatch:
        rows = np.asarray(rows, dtype=np.int64)
        _, dims = self.shape
        return CenterBatch(self.vectors[rows].reshape(-1, dims), self.factors[rows].reshape(-1))

    def first_draw(self, seed: int, index: int = 0) -> Draw | None:
        """This shard's entry in a uniform draw among eligible images (the random first pick)."""
        keys = draws.uniform_keys(self.hashes, seed, draws.FIRST_PICK_STREAM, index)[:, 0]
        rows = np.flatnonzero(self.eligible)
        if not len(rows):
            return None
        row = int(rows[np.lexsort((self.uri_rank[rows], keys[rows]))[0]])
        return self._draw(row, float(keys[row]), cluster=0, weighted=False, distance=None)

    # --- per pass ---
    def apply(self, batches: Iterable[CenterBatch], picked_rows: Iterable[int] = ()) -> None:
        """Take new centers into the min-distances and retire picked rows (idempotent)."""
        picked = np.asarray(list(picked_rows), dtype=np.int64)
        if len(picked):
            self.eligible[picked] = False
        centers = concat_batches(batches)
        if centers is None or not self.num_rows:
            return
        _, dims = self.shape
        if self.bounds is not None:
            live = np.repeat(self.eligible, self.vectors.shape[1])
            self.bounds.update(centers.vectors, centers.factors, live)
        elif self.device_pass is not None:
            self.device_pass.update(centers.vectors, centers.factors, self.min_distance.reshape(-1))
            self.unpruned_evaluations += self.vectors.shape[0] * self.vectors.shape[1] * len(centers.factors)
        else:
            update_min_distance(
                self.vectors.reshape(-1, dims),
                self.factors.reshape(-1),
                centers.vectors,
                centers.factors,
                self.distance,
                self.min_distance.reshape(-1),
            )
            self.unpruned_evaluations += self.vectors.shape[0] * self.vectors.shape[1] * len(centers.factors)
        self.passes += 1

    @property
    def distance_evaluations(self) -> int:
        """(vector, center) distances computed by this shard's passes so far."""
        return self.bounds.distance_evaluations if self.bounds is not None else self.unpruned_evaluations

    def work_stats(self) -> dict:
        """Passes and distance work of this shard (for `<out>.config.json`)."""
        bounds = self.bounds
        return {
            "passes": self.passes,
            "pruning": self.pruning,
            "kernel": self.kernel if self.device_pass is None else f"torch:{self.device_pass.device}",
            "distance_evaluations": int(self.distance_evaluations),
            "center_distance_evaluations": int(bounds.center_distance_evaluations) if bounds is not None else 0,
        }

    def scores(self) -> np.ndarray:
        """Image scores: max over clusters of min-distance; -inf when not eligible. [n] float64."""
        if not self.num_rows:
            return np.empty(0)
        return np.where(self.eligible, self.min_distance.max(axis=1), -np.inf)

    def best_rows(self, count: int) -> np.ndarray:
        """The `count` best eligible rows, best first (score desc, uri asc). [<= count] int64."""
        scores = self.scores()
        count = min(count, int(self.eligible.sum()))
        if count <= 0:
            return np.empty(0, dtype=np.int64)
        if count < len(scores):
            cutoff = scores[np.argpartition(-scores, count - 1)[:count]].min()
            chosen = np.flatnonzero(scores >= cutoff)  # every tie at the cutoff, sorted by uri below
        else:
            chosen = np.flatnonzero(self.eligible)
        order = np.lexsort((self.uri_rank[chosen], -scores[chosen]))
        return chosen[order[:count]]

    def propose(self, count: int) -> Proposal:
        """The `count` best eligible images with what the driver needs to simulate picks among them."""
        best = self.best_rows(count + 1)
        rows, rest = best[:count], best[count:]
        scores = self.scores()
        held_back = (float(scores[rest[0]]), self.uris[rest[0]]) if len(rest) else None
        return Proposal(
            shard=self.shard,
            rows=rows,
            uris=[self.uris[row] for row in rows],
            scores=scores[rows],
            cluster_min=self.min_distance[rows],
            vectors=self.vectors[rows],
            factors=self.factors[rows],
            held_back=held_back,
        )

    def draw(self, seed: int, index: int) -> Draw | None:
        """This shard's entry in the exponential race of `prob` pick `index`."""
        rows = np.flatnonzero(self.eligible)
        if not len(rows):
            return None
        weights = draws.prob_weights(self.min_distance, self.eligible, self.distinct)
        weight_sum = float(weights.sum())
        keys = draws.exponential_race_keys(weights, self.hashes, seed, index)
        best_key = keys.min()
        if not np.isfinite(best_key):
            fallback = self.first_draw(seed, index)
            fallback.weight_sum = 0.0
            return fallback
        tied_rows, tied_clusters = np.nonzero(keys == best_key)
        pick = np.lexsort((tied_clusters, self.uri_rank[tied_rows]))[0]
        row, cluster = int(tied_rows[pick]), int(tied_clusters[pick])
        drawn = self._draw(row, float(best_key), cluster, weighted=True, distance=float(self.min_distance[row, cluster]))
        drawn.weight_sum = weight_sum
        return drawn

    def _draw(self, row: int, key: float, cluster: int, weighted: bool, distance: float | None) -> Draw:
        return Draw(
            shard=self.shard,
            row=row,
            uri=self.uris[row],
            key=key,
            cluster=cluster,
            weighted=weighted,
            distance=distance,
            vectors=self.vectors[row],
            factors=self.factors[row],
        )


# --- the driver's side of a batched greedy pass ---


@dataclass
class CandidatePool:
    """The global top-m images of a pass, merged from the shards' proposals.

    bound: (score, uri) of the best image outside the pool when the pass started
    (None: there is none). Scores only go down, so no outsider can beat it later.
    """

    uris: list[str]
    scores: np.ndarray  # [m] float64
    cluster_min: np.ndarray  # [m, K] float64
    vectors: np.ndarray  # [m, K, D]
    factors: np.ndarray  # [m, K] float64
    shards: np.ndarray  # [m] int64
    rows: np.ndarray  # [m] int64
    bound: tuple[float, str] | None

    def centers(self, members: Sequence[int]) -> CenterBatch:
        members = np.asarray(members, dtype=np.int64)
        dims = self.vectors.shape[2]
        return CenterBatch(self.vectors[members].reshape(-1, dims), self.factors[members].reshape(-1))


def merge_proposals(proposals: Sequence[Proposal], count: int) -> CandidatePool:
    """The global top-`count` of the shards' proposals, and the bound for everything else."""
    entries = [(-float(p.scores[i]), p.uris[i], index, i) for index, p in enumerate(proposals) for i in range(len(p.rows))]
    entries.sort()
    kept, dropped = entries[:count], entries[count:]
    outside = [p.held_back for p in proposals if p.held_back is not None]
    outside += [(-negative, uri) for negative, uri, _, _ in dropped[:1]]
    bound = min(outside, key=lambda item: (-item[0], item[1])) if outside else None

    def gather(attribute: str) -> np.ndarray:
        return np.stack([getattr(proposals[index], attribute)[i] for _, _, index, i in kept]) if kept else np.empty(0)

    return CandidatePool(
        uris=[uri for _, uri, _, _ in kept],
        scores=np.array([-negative for negative, _, _, _ in kept], dtype=np.float64),
        cluster_min=gather("cluster_min"),
        vectors=gather("vectors"),
        factors=gather("factors"),
        shards=np.array([proposals[index].shard for _, _, index, _ in kept], dtype=np.int64),
        rows=np.array([proposals[index].rows[i] for _, _, index, i in kept], dtype=np.int64),
        bound=bound,
    )


def simulate_greedy(pool: CandidatePool, max_steps: int, distance: str) -> list[tuple[int, float]]:
    """Greedy picks among the pool that the one-pass-per-pick reference would make too.

    After each pick the pool's min-distances are updated with the picked image's
    clusters (same kernel, same bits as on the shards). A pick is certain while the
    best pool member still beats `pool.bound`: outsiders' scores can only have
    dropped since the pass. Returns (pool index, score) in pick order, at least one.
    """
    count = len(pool.uris)
    if count == 0:
        raise RuntimeError("no eligible image left to pick")
    clusters, dims = pool.vectors.shape[1:]
    points = pool.vectors.reshape(-1, dims)
    point_factors = pool.factors.reshape(-1)
    cluster_min = pool.cluster_min.copy()
    alive = np.ones(count, dtype=bool)
    ranks = uri_ranks(pool.uris)
    steps: list[tuple[int, float]] = []
    while len(steps) < max_steps and alive.any():
        scores = np.where(alive, cluster_min.max(axis=1), -np.inf)
        best = int(np.lexsort((ranks, -scores))[0])
        if not beats(float(scores[best]), pool.uris[best], pool.bound):
            break
        steps.append((best, float(scores[best])))
        alive[best] = False
        picked = pool.centers([best])
        to_picked = pairwise_distances(points, point_factors, picked.vectors, picked.factors, distance)
        np.minimum(cluster_min, to_picked.min(axis=1).reshape(count, clusters), out=cluster_min)
    if not steps:
        raise RuntimeError("internal error: the best candidate of a pass did not beat the bound")
    return steps


# --- the reference: one full pass per pick ---


def kcenter_greedy_reference(
    vectors: np.ndarray,
    uris: Sequence[str],
    budget: int,
    distance: str = "cosine",
    sampling: str = "greedy",
    labeled: Iterable[str] = (),
    seed: int = 0,
    dtype: str = "float32",
) -> list[Pick]:
    """K-Center-Greedy, one distance pass over all vectors per pick (GEAL Algorithm 1).

    The oracle the batched and distributed paths are tested against pick for pick.

    Args:
        vectors: [N, K, D] (knowledge clusters) or [N, D] (one embedding, K = 1), float.
        uris: [N] unique image uris; ties go to the smallest.
        budget: images to pick, 1 <= budget <= N - len(labeled).
        distance: "cosine" or "euclidean".
        sampling: "greedy" (top score) or "prob" (cluster drawn with probability
            proportional to its squared min-distance, then its image).
        labeled: uris that seed the pool and are never picked. Without them the
            first pick is a seeded uniform draw (score None).
        seed: for the first pick and `prob` draws.
        dtype: storage rounding ("float16" rounds the vectors first, like the shards).

    Returns:
        `budget` picks in order.
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim == 2:
        vectors = vectors[:, None, :]
    uris = list(uris)
    if len(set(uris)) != len(uris):
        raise DuplicateUriError("uris must be unique")
    index_of = {uri: row for row, uri in enumerate(uris)}
    labeled = list(dict.fromkeys(labeled))
    unknown = [uri for uri in labeled if uri not in index_of]
    if unknown:
        raise LabeledError(f"{len(unknown)} labeled uri(s) not among the vectors, e.g. {unknown[:3]}")
    if not 1 <= budget <= len(uris) - len(labeled):
        raise BudgetError(f"budget {budget} must be between 1 and the unlabeled pool size {len(uris) - len(labeled)}")
    shard = KCenterShard(uris, vectors, distance, dtype, seeds=labeled)
    scores_rank = shard.uri_rank
    picks: list[Pick] = []
    new_rows: list[int] = list(shard.seed_rows)
    if not new_rows:
        first = shard.first_draw(seed, 0)
        picks.append(Pick(first.uri, None))
        new_rows = [first.row]
    while len(picks) < budget:
        shard.apply([shard.batch_of(new_rows)], new_rows)
        if sampling == "greedy":
            scores = shard.scores()
            row = int(np.lexsort((scores_rank, -scores))[0])
            picks.append(Pick(uris[row], float(scores[row])))
        else:
            drawn = shard.draw(seed, len(picks))
            row = drawn.row
            picks.append(Pick(drawn.uri, drawn.distance))
        new_rows = [row]
    return picks
