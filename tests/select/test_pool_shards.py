"""The sharded embedding pool: typiclust and probcover give their references' picks on 1, 2 and 4 shards."""
from __future__ import annotations

import os

import numpy as np
import pytest

from actor_kills import kill_and_wait_for_restart
from raysel.config import SelectConfig
from raysel.select import BudgetError, InvalidVectorError, run_selection
from raysel.select.methods import probcover, typiclust
from raysel.select.methods.probcover import probcover_reference, purity_delta_on_pool
from raysel.select.methods.typiclust import TooFewImagesError, typiclust_reference
from raysel.select.pool import kmeans
from raysel.select.pool.ball_graph import ball_neighbours
from raysel.select.pool.embedding_pool import IdenticalVectorsError
from raysel.select.pool.sharded import open_memory_pool


def blob_pool(count: int, dims: int = 8, groups: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((groups, dims)) * 3
    return (centers[rng.integers(0, groups, count)] + rng.standard_normal((count, dims))).astype(np.float32)


def unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors.astype(np.float64), axis=1)[:, None]).astype(np.float32)


@pytest.mark.pure
def test_distributed_kmeans_is_the_single_process_one(monkeypatch):
    vectors = blob_pool(3000, seed=1)
    monkeypatch.setattr(kmeans, "INIT_SAMPLE_MIN", 500)  # the init runs on a sample, not the whole pool
    monkeypatch.setattr(kmeans, "EXACT_BELOW", 1000)  # and Lloyd may stop on the center-shift rule
    order = np.arange(3000)
    labels, mean, centers, steps = kmeans.kmeans_with_centers(vectors[order], 30, seed=5)
    assert len(kmeans.init_sample(3000, 30, 5)) == 1200 and steps >= 2
    for shards in (2, 3, 4):
        group, index = open_memory_pool(vectors, [f"u{i:05d}" for i in range(3000)], [], 1, shards)
        got_mean, got_centers, got_steps = kmeans.distributed_kmeans(group, index.count, index.low, index.high, 30, seed=5)
        assert got_steps == steps and np.array_equal(got_centers, centers) and np.array_equal(got_mean, mean)
        assert np.array_equal(np.concatenate([shard.labels for shard in group.shards]), labels)


@pytest.mark.pure
def test_sharded_ball_graph_is_the_whole_one():
    vectors = unit(blob_pool(1500, seed=2))
    indptr, neighbours = ball_neighbours(vectors, 0.4)
    assert len(neighbours) > 3 * len(vectors)
    for shards in (2, 4):
        group, _ = open_memory_pool(vectors, [f"u{i:05d}" for i in range(1500)], [], 1, shards)
        group.round_robin("ball_search", 0.4, True)
        group.call("finish_graph")
        for row in range(0, 1500, 7):
            got = np.concatenate(group.call("neighbours_of", np.array([row])))
            assert sorted(got.tolist()) == neighbours[indptr[row] : indptr[row + 1]].tolist()


@pytest.mark.pure
@pytest.mark.parametrize("shards", [1, 3])
def test_ivf_balls_searched_on_demand_are_the_stored_ones(shards):
    from raysel.select.pool import ivf_lists

    vectors = unit(blob_pool(1500, seed=2))
    uris = [f"u{i:05d}" for i in range(1500)]
    cells = ivf_lists.train_lists(vectors, 25, 3, seed=0)
    from raysel.select.pool.ball_graph import ball_counts, ball_pairs

    ids = np.arange(1500, dtype=np.int64)
    probes = ivf_lists.probe_lists(vectors, cells)
    for delta in (0.4, float(np.sqrt(((vectors[0].astype(np.float64) - vectors[1]) ** 2).sum()))):  # one pair sits on delta
        rows, _ = ball_pairs(vectors, ids, vectors, ids, delta, probes, probes, cells.lists)
        counted = ball_counts(vectors, ids, vectors, ids, delta, probes, probes, cells.lists, threads=2)
        assert np.array_equal(counted.counts, np.bincount(rows, minlength=1500))
        # the searches below skip cells: some rows have no neighbour in some probed cell, some have far ones
        assert 0 < counted.found_from_far.sum() < 1500 and 0 < counted.near_cells.sum() < probes.size
    graphs = []
    for keep in (True, False):
        group, _ = open_memory_pool(vectors, uris, [], 1, shards)
        group.call("set_cells", cells)
        pairs = sum(group.round_robin("ball_search", 0.4, keep))
        degrees = np.zeros(1500, dtype=np.int64)
        for ids, degree in group.call("finish_graph"):
            degrees[ids] = degree
        graphs.append((group, pairs, degrees))
    (stored, pairs, degrees), (searched, counted_pairs, counted) = graphs
    assert pairs == counted_pairs and np.array_equal(degrees, counted) and degrees.sum() > 3 * 1500
    for rows in (np.array([5]), np.arange(0, 1500, 11), np.arange(1500)):
        lists = np.sort(np.concatenate(stored.call("neighbours_of", rows)))
        parts = [part for part in searched.call("rows_with_probes", rows) if len(part[0])]
        queries = tuple(np.concatenate([part[i] for part in parts]) for i in range(len(parts[0])))
        assert np.array_equal(np.sort(np.concatenate(searched.call("neighbours_near", 0.4, queries))), lists)
        held = np.zeros(1500, dtype=np.int64)  # counted on the shards: how many of the rows' balls hold each image
        for ids, count in searched.call("balls_holding", 0.4, queries):
            held[ids] += count
        assert np.array_equal(held, np.bincount(lists, minlength=1500))


@pytest.mark.pure
@pytest.mark.parametrize("shards", [2, 3, 4])
def test_in_process_shards_change_nothing(shards, monkeypatch):
    vectors = blob_pool(2500, seed=3)
    uris = [f"img-{i:05d}" for i in np.random.default_rng(0).permutation(2500)]
    labeled = uris[:9]
    monkeypatch.setattr(kmeans, "INIT_SAMPLE_MIN", 400)
    assert typiclust_reference(vectors, uris, 25, labeled, seed=2, shards=shards) == typiclust_reference(vectors, uris, 25, labeled, seed=2)
    points = unit(vectors)
    assert probcover_reference(points, uris, 40, 0.35, labeled, seed=2, shards=shards) == probcover_reference(points, uris, 40, 0.35, labeled, seed=2)
    # the purity rule on a sample smaller than the pool: the same delta on any number of shards
    monkeypatch.setattr(probcover, "PURITY_SAMPLE", 800)
    one, one_index = open_memory_pool(points, uris, labeled, 1, 1)
    many, many_index = open_memory_pool(points, uris, labeled, 1, shards)
    expected = purity_delta_on_pool(one, one_index, 12, 0.9, seed=4)
    assert purity_delta_on_pool(many, many_index, 12, 0.9, seed=4) == expected and expected[1]["purity_sample"] == 800


def write_store(make_store, synth, vectors, uris, rows_per_shard=400):
    return make_store(synth.table(uris, vectors[:, None, :], vectors), rows_per_shard=rows_per_shard)


@pytest.mark.ray
def test_ray_shards_match_the_references(ray_session, tmp_path, make_store, synth):
    vectors = blob_pool(2000, seed=4)
    uris = synth.uris(2000, 4)
    store = write_store(make_store, synth, vectors, uris)
    labeled = sorted(uris)[::400]
    labeled_file = tmp_path / "labeled.csv"
    labeled_file.write_text("uri\n" + "\n".join(labeled) + "\n")
    expected_typiclust = typiclust_reference(vectors, uris, 20, labeled, seed=1)
    expected_probcover = probcover_reference(unit(vectors), uris, 30, 0.3, labeled, seed=1)
    for shards in (1, 2, 4):
        base = dict(store=store, budget=20, seed=1, shards=shards, labeled=str(labeled_file))
        got = run_selection(SelectConfig(**base, method="typiclust", out=str(tmp_path / f"t{shards}.parquet")))
        assert got.column("uri").to_pylist() == [p.uri for p in expected_typiclust]
        assert got.column("score").to_pylist() == [p.score for p in expected_typiclust]
        got = run_selection(SelectConfig(**{**base, "budget": 30}, method="probcover", delta=0.3, out=str(tmp_path / f"p{shards}.parquet")))
        assert got.column("uri").to_pylist() == [p.uri for p in expected_probcover]
        assert got.column("score").to_pylist() == [p.score for p in expected_probcover]
    # (the purity rule through actors: test_probcover.py; across shard counts: test_in_process_shards_change_nothing)


@pytest.mark.ray
def test_bad_pools_are_clear_errors_and_write_nothing(ray_session, tmp_path, make_store, synth):
    vectors = blob_pool(60, seed=5)
    uris = synth.uris(60, 5)
    out = str(tmp_path / "never.parquet")
    broken = vectors.copy()
    broken[17, 3] = np.nan
    store = write_store(make_store, synth, broken, uris, rows_per_shard=25)
    for method, shards in (("typiclust", 1), ("probcover", 2)):
        with pytest.raises(InvalidVectorError, match=uris[17]):
            run_selection(SelectConfig(store=store, out=out, budget=3, method=method, shards=shards))
    same = write_store(make_store, synth, np.ones_like(vectors), uris, rows_per_shard=25) + "-same"
    os.rename(same[: -len("-same")], same)
    for method, shards in (("typiclust", 2), ("probcover", 1)):
        with pytest.raises(IdenticalVectorsError, match="same vector"):
            run_selection(SelectConfig(store=same, out=out, budget=3, method=method, shards=shards))
        with pytest.raises(BudgetError, match="60"):
            run_selection(SelectConfig(store=same, out=out, budget=61, method=method, shards=2))
    assert not os.path.exists(out) and not os.path.exists(out + ".config.json")
    group, index = open_memory_pool(vectors, uris, [], 5)
    with pytest.raises(TooFewImagesError, match="only 60"):  # more clusters than images (reachable from the Python API)
        typiclust.typiclust_on_pool(group, index, 61, 500, 0)


@pytest.mark.pure
def test_fixed_point_cluster_sums_are_the_integer_sums():
    rng = np.random.default_rng(6)
    points = (rng.standard_normal((5000, 7)) * 40).astype(np.float32)
    labels = rng.integers(0, 9, 5000)
    mean = points.astype(np.float64).mean(axis=0)
    scale = kmeans.fixed_point_scale(kmeans.max_abs(points.min(0), points.max(0)), 5000)
    sums, counts = kmeans.cluster_sums(points, labels, 9, scale)
    fixed = np.rint(points.astype(np.float64) * scale).astype(np.int64)  # float32 x a power of two: exact either way
    expected = np.zeros((9, 7), dtype=np.int64)
    np.add.at(expected, labels, fixed)
    assert np.array_equal(sums, expected) and np.array_equal(counts, np.bincount(labels, minlength=9))
    means = kmeans.updated_centers(np.zeros((9, 7)), sums, counts, scale, mean)
    np.testing.assert_allclose(means, [(points[labels == c].astype(np.float64) - mean).mean(0) for c in range(9)], atol=1e-9)


@pytest.mark.pure
def test_kernels_give_the_same_bits_on_any_number_of_threads(monkeypatch):
    from raysel.select.pool import ivf_lists, typicality

    monkeypatch.setattr(kmeans, "SUM_BLOCK", 300)  # several sum blocks per thread
    points = blob_pool(5000, dims=16, groups=20, seed=3)
    mean = points.astype(np.float64).mean(axis=0)
    centers = (points[:40].astype(np.float64) - mean)
    scale = kmeans.fixed_point_scale(kmeans.max_abs(points.min(0), points.max(0)), 5000)
    one = kmeans.nearest_center(points, mean, centers, threads=1)
    exact = ((points.astype(np.float64) - mean)[:, None, :] - centers[None]) ** 2
    assert (exact.sum(-1)[np.arange(5000), one] <= exact.sum(-1).min(axis=1) + 1e-3).all()  # the nearest, up to float32
    sums, counts = kmeans.cluster_sums(points, one, 40, scale, threads=1)
    cells = ivf_lists.IvfCells(mean=mean, centers=centers, probes=3)
    probes = ivf_lists.probe_lists(points, cells, threads=1)
    assert np.array_equal(probes[:, 0], one)  # a row's own cell is its K-Means cluster
    ids = np.arange(5000, dtype=np.int64)
    wanted = {c: 2 for c in range(0, 40, 3)}
    top = typicality.top_of_clusters(wanted, ids, one, points, np.zeros(5000, bool), threads=1)
    for threads in (2, 3, 7):
        assert np.array_equal(kmeans.nearest_center(points, mean, centers, threads), one)
        got_sums, got_counts = kmeans.cluster_sums(points, one, 40, scale, threads)
        assert np.array_equal(got_sums, sums) and np.array_equal(got_counts, counts)
        assert np.array_equal(ivf_lists.probe_lists(points, cells, threads), probes)
        assert typicality.top_of_clusters(wanted, ids, one, points, np.zeros(5000, bool), threads) == top


@pytest.mark.ray
def test_pool_actor_lost_between_calls_is_reloaded_before_the_next_call(ray_session, make_store, synth):
    from raysel.select.pool.sharded import open_store_pool
    from raysel.store import FeatureStore

    uris = synth.uris(300, 5)
    store = FeatureStore(write_store(make_store, synth, blob_pool(300, seed=5), uris, rows_per_shard=100))
    group, _ = open_store_pool(store, 2, [], 10)
    try:
        wanted = np.arange(0, 300, 7)
        before = group.call("rows_of", wanted)  # needs the numbering (set_ids) replayed
        kill_and_wait_for_restart(ray_session, group.actors[1])  # dead after its last call, back empty
        after = group.call("rows_of", wanted)  # not an error about a shard without rows
        assert group.recoveries == 1 and len(after[1][0]) > 0
        for (ids, vectors), (ids_again, vectors_again) in zip(before, after):
            assert np.array_equal(ids, ids_again) and np.array_equal(vectors, vectors_again)
    finally:
        group.close()


@pytest.mark.ray
def test_killed_pool_actors_are_restarted_and_replayed(ray_session, make_store, synth):
    from raysel.select.pool.sharded import open_store_pool
    from raysel.store import FeatureStore

    vectors = blob_pool(900, seed=7)
    uris = synth.uris(900, 7)
    store = FeatureStore(write_store(make_store, synth, vectors, uris, rows_per_shard=150))
    labeled = sorted(uris)[::150]
    kills: list[str] = []
    calls: dict[str, int] = {}

    def kill_at(plan: dict[str, tuple[int, int]]):
        """Kill actor `shard` on the `nth` round of `method`, with the calls in flight, and wait
        until Ray has restarted it. The kill lands during that call (Ray fails it) or just after
        it (the next call finds the actor empty): either way the group must reload and replay it."""

        def hook(method, group):
            calls[method] = calls.get(method, 0) + 1
            if method in plan and calls[method] == plan[method][0]:
                kills.append(method)
                kill_and_wait_for_restart(ray_session, group.actors[plan[method][1]])

        return hook

    config = SelectConfig(store=store.uri, out="unused", budget=25, method="probcover", delta=0.3, seed=1)
    group, index = open_store_pool(store, 2, labeled, 25)
    # mid graph: the restarted shard replays round 1's search against a fresh export, then round 2 is sent again
    group.after_submit = kill_at({"ball_search": (2, 1)})
    try:
        picks, _ = probcover.select_on_pool(group, index, config)
    finally:
        group.close()
    assert kills == ["ball_search"] and group.recoveries == 1
    assert picks == probcover_reference(unit(vectors), uris, 25, 0.3, labeled, seed=1)

    kills.clear()
    calls.clear()
    group, index = open_store_pool(store, 2, labeled, 12)
    group.after_submit = kill_at({"cluster_summary": (1, 1)})  # its K-Means labels replayed before the exchange
    try:
        picks = typiclust.typiclust_on_pool(group, index, 12, 500, 2)[0]
    finally:
        group.close()
    assert kills == ["cluster_summary"] and group.recoveries == 1
    assert picks == typiclust_reference(vectors, uris, 12, labeled, seed=2)
