"""Pruned exact passes (triangle-inequality skips) against unpruned passes and the reference."""
from __future__ import annotations

import numpy as np
import pytest

from raysel.select import kcenter_greedy_batched, kcenter_greedy_reference
from raysel.select.distances import pairwise_distances
from raysel.select.errors import InvalidVectorError
from raysel.select.kcenter.kernel import KCenterShard

pytestmark = pytest.mark.pure


def low_dimensional(count: int, clusters: int, dims: int, seed: int = 0, intrinsic: int = 2) -> np.ndarray:
    """[count, clusters, dims] float32 on an `intrinsic`-dimensional manifold: where the bounds skip work."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((intrinsic, dims))
    latent = rng.uniform(-3, 3, (count, 1, intrinsic)) + 0.1 * rng.standard_normal((count, clusters, intrinsic))
    return (latent @ basis + 2.0).astype(np.float32)  # offset: cosine is not degenerate either


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
@pytest.mark.parametrize("shards", [1, 2, 4])
@pytest.mark.parametrize("setting", ["plain", "labeled", "float16"])
def test_pruned_equals_unpruned_and_reference(synth, distance, shards, setting):
    vectors = low_dimensional(1200, 3, 10, seed=shards)
    uris = synth.uris(1200, seed=shards)
    labeled = uris[::53] if setting == "labeled" else []
    dtype = "float16" if setting == "float16" else "float32"
    reference = kcenter_greedy_reference(vectors, uris, 150, distance, labeled=labeled, seed=3, dtype=dtype)
    unpruned, plain = kcenter_greedy_batched(
        vectors, uris, 150, distance, labeled=labeled, seed=3, dtype=dtype, shards=shards, candidates=16, pruning=False
    )
    pruned, stats = kcenter_greedy_batched(
        vectors, uris, 150, distance, labeled=labeled, seed=3, dtype=dtype, shards=shards, candidates=16
    )
    assert pruned == unpruned == reference
    assert stats.passes == plain.passes and stats.round_trips == plain.round_trips
    assert stats.distance_evaluations * 3 < plain.distance_evaluations, (stats.as_dict(), plain.as_dict())
    figures = stats.as_dict()
    assert figures["distance_evaluations"] == stats.distance_evaluations > 0 and figures["passes"] == stats.passes


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_prob_sampling_is_unchanged_by_pruning(synth, distance):
    vectors = low_dimensional(600, 2, 6, seed=5)
    uris = synth.uris(600, seed=5)
    reference = kcenter_greedy_reference(vectors, uris, 60, distance, "prob", seed=9)
    for shards in (1, 3):
        pruned, stats = kcenter_greedy_batched(vectors, uris, 60, distance, "prob", seed=9, shards=shards)
        assert pruned == reference
        assert stats.distance_evaluations < 600 * 2 * 60 * 2  # unpruned: every vector against every center


def shard_state_is_exact(shard: KCenterShard, centers: np.ndarray, center_factors: np.ndarray) -> None:
    """Live min-distances are the bitwise min over all centers; each is the distance to its nearest center."""
    count, clusters, dims = shard.vectors.shape
    points, factors = shard.vectors.reshape(-1, dims), shard.factors.reshape(-1)
    live = np.repeat(shard.eligible, clusters)
    full = pairwise_distances(points[live], factors[live], centers, center_factors, shard.distance)
    assert np.array_equal(shard.min_distance.reshape(-1)[live], full.min(axis=1))
    bounds = shard.bounds
    owner = bounds.nearest[live]
    assert np.array_equal(full[np.arange(len(owner)), owner], full.min(axis=1))
    metric = np.sqrt(2 * full.min(axis=1)) if shard.distance == "cosine" else full.min(axis=1)
    assert (bounds.radius[owner] >= metric).all()  # every cell radius bounds its members


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_replaying_all_centers_at_once_rebuilds_the_same_state(synth, distance):
    vectors = low_dimensional(700, 3, 8, seed=2)
    uris = synth.uris(700, seed=2)
    incremental = KCenterShard(uris, vectors, distance)
    rng = np.random.default_rng(0)
    rows = rng.choice(700, 60, replace=False)
    for group in np.array_split(rows, 12):  # picks arriving a few at a time, as passes
        incremental.apply([incremental.batch_of(group)], group)
    replayed = KCenterShard(uris, vectors, distance)  # a restarted shard actor: one apply with the whole history
    replayed.apply([replayed.batch_of(group) for group in np.array_split(rows, 12)], rows)
    unpruned = KCenterShard(uris, vectors, distance, pruning=False)
    unpruned.apply([unpruned.batch_of(rows)], rows)
    assert np.array_equal(incremental.scores(), unpruned.scores())
    assert np.array_equal(replayed.scores(), unpruned.scores())
    everything = incremental.batch_of(rows)
    shard_state_is_exact(incremental, everything.vectors, everything.factors)
    shard_state_is_exact(replayed, everything.vectors, everything.factors)
    assert incremental.distance_evaluations < unpruned.distance_evaluations


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_degenerate_data_all_identical_and_exact_ties(synth, distance):
    identical = np.ones((40, 2, 5), dtype=np.float32)
    uris = synth.uris(40, seed=1)
    reference = kcenter_greedy_reference(identical, uris, 25, distance, seed=2)
    for shards in (1, 4):
        assert kcenter_greedy_batched(identical, uris, 25, distance, seed=2, shards=shards, candidates=3)[0] == reference
    assert [p.uri for p in reference[1:]] == sorted(p.uri for p in reference[1:])  # all scores 0: uri order
    grid = np.random.default_rng(4).integers(-2, 3, (300, 2, 3)).astype(np.float32)
    grid[np.abs(grid).sum(-1) == 0] = 1.0
    grid = np.concatenate([grid, grid])  # every image twice: exact ties everywhere
    uris = synth.uris(600, seed=4)
    reference = kcenter_greedy_reference(grid, uris, 400, distance, seed=5)
    for shards in (1, 2, 4):
        pruned, _ = kcenter_greedy_batched(grid, uris, 400, distance, seed=5, shards=shards, candidates=7)
        assert pruned == reference


def test_float16_with_values_beyond_its_range(synth):
    vectors = low_dimensional(300, 2, 6, seed=8) * 1e5  # |x| up to ~1e6: beyond float16 (65504)
    uris = synth.uris(300, seed=8)
    reference = kcenter_greedy_reference(vectors, uris, 40, "cosine", dtype="float16")  # normalised, then rounded
    assert kcenter_greedy_batched(vectors, uris, 40, "cosine", dtype="float16", shards=2)[0] == reference
    with pytest.raises(InvalidVectorError, match="exceed the float16 range"):
        kcenter_greedy_batched(vectors, uris, 40, "euclidean", dtype="float16")


def test_zero_vector_under_cosine_is_rejected_naming_its_uri(synth):
    vectors = low_dimensional(50, 2, 4, seed=1)
    uris = synth.uris(50, seed=1)
    vectors[17, 1] = 0.0
    with pytest.raises(InvalidVectorError, match=f"zero vector in '{uris[17]}'"):
        kcenter_greedy_batched(vectors, uris, 5, "cosine", shards=2)
    assert len(kcenter_greedy_batched(vectors, uris, 5, "euclidean", shards=2)[0]) == 5  # fine under euclidean
