"""`probcover`: the delta-ball graph, greedy coverage, the purity rule; through run_selection and the CLI."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest

from raysel.cli import main
from raysel.config import SelectConfig
from raysel.select import BudgetError, InvalidVectorError, SelectionConfigError, run_selection
from raysel.select.pool import ball_graph
from raysel.select.pool.ball_graph import ball_neighbours, distance_to_other_cluster
from raysel.select.methods.probcover import NoPureDeltaError, probcover_reference, purity, purity_delta

# Points on a line: 0..4, 10..12, 20. With delta 1.5 a ball holds the point and its direct neighbours.
LINE = [0, 1, 2, 3, 4, 10, 11, 12, 20]
LINE_URIS = [f"p{x:02d}" for x in LINE]


def on_a_line(xs) -> np.ndarray:
    return np.array([[float(x), 0.0] for x in xs])


def dense_probcover(vectors: np.ndarray, delta: float, labeled: list[int], budget: int) -> list[tuple[int, int]]:
    """Plain reference: adjacency matrix, covered set, full recount per pick; (row, newly covered) until all are covered."""
    distances = np.sqrt(((vectors[:, None, :] - vectors[None, :, :]) ** 2).sum(-1))
    ball = distances < delta
    covered = ball[labeled].any(axis=0) if labeled else np.zeros(len(vectors), bool)
    picks: list[tuple[int, int]] = []
    while len(picks) < budget:
        gains = [(-int((ball[i] & ~covered).sum()), i) for i in range(len(vectors)) if i not in labeled and i not in dict(picks)]
        gain, row = min(gains)
        if gain == 0:
            break
        picks.append((row, -gain))
        covered |= ball[row]
    return picks


@pytest.mark.pure
def test_ball_graph_is_the_brute_force_one(monkeypatch):
    points = np.random.default_rng(0).standard_normal((150, 4)).astype(np.float32)
    distances = np.sqrt(((points[:, None, :].astype(np.float64) - points[None]) ** 2).sum(-1))
    monkeypatch.setattr(ball_graph, "QUERY_BLOCK", 17)  # many blocks
    indptr, neighbours = ball_neighbours(points, 1.2)
    for row in range(len(points)):
        expected = np.flatnonzero((distances[row] < 1.2) & (np.arange(len(points)) != row))
        assert neighbours[indptr[row] : indptr[row + 1]].tolist() == expected.tolist()
    assert len(neighbours) > len(points)  # a real graph, not a trivial one


@pytest.mark.pure
def test_picks_known_centers_in_known_order_then_random():
    picks = probcover_reference(on_a_line(LINE), LINE_URIS, 4, delta=1.5)
    # degrees 3 at 1, 2, 3, 11 -> p01 (smallest uri) covers 0..2; then p11 covers 10..12;
    # then 3 and 4 each cover {3, 4} -> p03; then p20 covers itself.
    assert [(p.uri, p.score) for p in picks] == [("p01", 3.0), ("p11", 3.0), ("p03", 2.0), ("p20", 1.0)]
    # a larger delta: balls of radius 2.5 hold two neighbours each side -> p02 covers 0..4 at once;
    # 10, 11 and 12 each cover 10..12 -> p10
    wide = probcover_reference(on_a_line(LINE), LINE_URIS, 3, delta=2.5)
    assert [(p.uri, p.score) for p in wide] == [("p02", 5.0), ("p10", 3.0), ("p20", 1.0)]
    # everything covered after 4 picks: the other 5 are drawn at random, seeded
    full = {seed: probcover_reference(on_a_line(LINE), LINE_URIS, 9, delta=1.5, seed=seed) for seed in range(4)}
    for seed, run in full.items():
        assert run[:4] == picks and {p.score for p in run[4:]} == {0.0}
        assert sorted(p.uri for p in run[4:]) == ["p00", "p02", "p04", "p10", "p12"]
        assert run == probcover_reference(on_a_line(LINE), LINE_URIS, 9, delta=1.5, seed=seed)
    assert len({tuple(p.uri for p in run[4:]) for run in full.values()}) > 1


@pytest.mark.pure
def test_labeled_images_cover_their_balls_first_and_are_never_picked():
    picks = probcover_reference(on_a_line(LINE), LINE_URIS, 4, delta=1.5, labeled=["p02"])
    # p02 covers 1..3: p11 (3 new), then 0, {4} from p03 (before p04), 20 each add one
    assert [(p.uri, p.score) for p in picks] == [("p11", 3.0), ("p00", 1.0), ("p03", 1.0), ("p20", 1.0)]
    assert "p02" not in {p.uri for p in probcover_reference(on_a_line(LINE), LINE_URIS, 8, 1.5, labeled=["p02"])}


@pytest.mark.pure
@pytest.mark.parametrize("seed", range(3))
def test_greedy_matches_a_dense_reference(seed):
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((80, 3))
    uris = [f"u{i:03d}" for i in range(80)]  # row order = uri order
    labeled = sorted(rng.choice(80, 5, replace=False).tolist())
    expected = dense_probcover(vectors, 0.9, labeled, budget=60)
    picks = probcover_reference(vectors, uris, 60, 0.9, labeled=[uris[i] for i in labeled])
    assert [(p.uri, p.score) for p in picks[: len(expected)]] == [(uris[row], float(gain)) for row, gain in expected]
    assert len(expected) < 60 and {p.score for p in picks[len(expected):]} == {0.0}
    assert len({p.uri for p in picks}) == 60 and not {uris[i] for i in labeled} & {p.uri for p in picks}


@pytest.mark.pure
def test_nearest_other_cluster_is_the_exact_minimum_on_any_blocking(monkeypatch):
    from raysel.select.pool import ball_graph

    rng = np.random.default_rng(4)
    base = rng.standard_normal((900, 12)).astype(np.float32)
    base[5] = base[4]  # a duplicate across clusters: distance 0
    labels = rng.integers(0, 6, 900)
    labels[4], labels[5] = 0, 1
    labels[100:] = np.where(labels[100:] == 5, 4, labels[100:])  # cluster 5 only among the first 100
    queries, query_labels = base[::3], labels[::3]
    exact = np.sqrt((((queries[:, None, :].astype(np.float64) - base[None].astype(np.float64)) ** 2).sum(-1)))
    exact[query_labels[:, None] == labels[None, :]] = np.inf
    expected = exact.min(axis=1)
    # no point of another cluster at all: inf
    assert np.isinf(ball_graph.nearest_other_cluster(queries, np.full(300, 7), base[:1], np.array([7]))).all()
    for query_block, base_block, threads in ((512, 8192, 1), (7, 50, 3), (64, 1, 2)):
        monkeypatch.setattr(ball_graph, "OTHER_QUERY_BLOCK", query_block)
        monkeypatch.setattr(ball_graph, "OTHER_BASE_BLOCK", base_block)
        got = ball_graph.nearest_other_cluster(queries, query_labels, base, labels, threads)
        np.testing.assert_array_equal(got, expected)  # the float64 value of the true nearest point, bit for bit
        shards = [ball_graph.nearest_other_cluster(queries, query_labels, base[a:b], labels[a:b]) for a, b in ((0, 333), (333, 900))]
        np.testing.assert_array_equal(np.minimum(*shards), expected)


@pytest.mark.pure
def test_purity_rule_picks_the_expected_delta():
    # two clusters on a line; the nearest point of the other cluster is 0.355, 0.455, 0.555 or 0.655 away (2 each)
    vectors = on_a_line([0, 0.1, 0.2, 0.3, 0.655, 0.755, 0.855, 0.955])
    labels = np.array([0] * 4 + [1] * 4)
    np.testing.assert_allclose(np.sort(distance_to_other_cluster(vectors, labels)),
                               [0.355, 0.355, 0.455, 0.455, 0.555, 0.555, 0.655, 0.655], atol=1e-6)
    np.testing.assert_allclose(purity(distance_to_other_cluster(vectors, labels), [0.3, 0.4, 0.5, 0.7]), [1, 0.75, 0.5, 0])
    assert purity_delta(vectors, labels, 0.95) == (0.35, 1.0)  # no impure ball allowed
    assert purity_delta(vectors, labels, 0.75) == (0.45, 0.75)  # 2 of 8 may be impure
    assert purity_delta(vectors, labels, 0.5) == (0.55, 0.5)
    assert purity_delta(vectors, np.zeros(8), 0.95) == (2.0, 1.0)  # one cluster: every ball is pure
    with pytest.raises(NoPureDeltaError, match="--delta"):
        purity_delta(on_a_line([0, 0.001, 0.002, 0.003]), np.array([0, 1, 0, 1]), 0.95)


def write_uris(path, uris) -> str:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uri"])
        writer.writerows([u] for u in uris)
    return str(path)


def circle_table(synth, scale: float = 3.0):
    """Three blobs of 5 on the unit circle (at 0, 120, 240 degrees; offsets -0.1 .. 0.1 rad), scaled (normalization undoes it)."""
    angles = np.concatenate([c * 2 * np.pi / 3 + np.array([-0.1, -0.05, 0.0, 0.05, 0.1]) for c in range(3)])
    embedding = (scale * np.stack([np.cos(angles), np.sin(angles), np.zeros_like(angles)], axis=1)).astype(np.float32)
    uris = synth.uris(len(embedding))
    return synth.table(uris, embedding[:, None, :], embedding), uris, embedding


@pytest.mark.ray
def test_purity_rule_through_run_selection(ray_session, tmp_path, make_store, synth):
    table, uris, _ = circle_table(synth)
    store = make_store(table, rows_per_shard=4)
    out = str(tmp_path / "sel.parquet")
    result = run_selection(SelectConfig(store=store, out=out, budget=3, method="probcover", purity_clusters=3))
    # The closest images of two blobs are 2 pi / 3 - 0.2 rad apart: chord 2 sin(0.947) = 1.6236, so every ball
    # is pure up to delta 1.62 (grid), and each pick covers its whole blob and nothing else.
    assert 2 * math.sin((2 * math.pi / 3 - 0.2) / 2) == pytest.approx(1.6236, abs=1e-4)
    stats = json.load(open(out + ".config.json"))["stats"]
    assert stats["delta"] == 1.62 and stats["delta_source"] == "purity rule" and stats["purity"] == 1.0
    assert result.column("score").to_pylist() == [5.0, 5.0, 5.0] and stats["coverage"] == 1.0
    blob_of = {uri: index // 5 for index, uri in enumerate(uris)}
    assert sorted(blob_of[u] for u in result.column("uri").to_pylist()) == [0, 1, 2]
    # each blob's pick is its smallest uri (all five tie)
    assert set(result.column("uri").to_pylist()) == {min(uris[b * 5 : b * 5 + 5]) for b in range(3)}
    # alpha 0.5: the 6 edge images (nearest other blob 1.6236 away) may be impure; the next 6 are
    # 2 sin((2 pi / 3 - 0.15) / 2) = 1.6523 away, so delta grows to 1.65
    run_selection(SelectConfig(store=store, out=out, budget=3, method="probcover", purity_clusters=3, purity_alpha=0.5))
    assert json.load(open(out + ".config.json"))["stats"]["delta"] == 1.65


@pytest.mark.ray
def test_run_selection_with_delta_matches_the_reference(ray_session, tmp_path, make_store, synth):
    rng = np.random.default_rng(1)
    embedding = (rng.standard_normal((120, 6)) + 0.5).astype(np.float32)
    uris = synth.uris(120, 1)
    store = make_store(synth.table(uris, embedding[:, None, :], embedding), rows_per_shard=25)
    unit = (embedding / np.linalg.norm(embedding.astype(np.float64), axis=1)[:, None]).astype(np.float32)
    labeled = uris[:6]
    out = str(tmp_path / "sel.parquet")
    config = SelectConfig(store=store, out=out, budget=12, method="probcover", delta=0.6, seed=4,
                          labeled=write_uris(tmp_path / "labeled.csv", labeled))
    for delta in (0.6, 0.9):  # another delta on the same --out is recomputed, not the stale output
        result = run_selection(SelectConfig(**{**config.__dict__, "delta": delta}))
        expected = probcover_reference(unit, uris, 12, delta, labeled=labeled, seed=4)
        assert [(u, s) for u, s in zip(result.column("uri").to_pylist(), result.column("score").to_pylist())] == [
            (p.uri, p.score) for p in expected
        ]
    stats = json.load(open(out + ".config.json"))["stats"]
    assert stats["delta"] == 0.9 and stats["delta_source"] == "--delta" and stats["coverage_by_labeled"] > 0


@pytest.mark.ray
def test_bad_inputs(ray_session, tmp_path, make_store, synth):
    table, uris, embedding = circle_table(synth)
    store = make_store(table)
    base = dict(store=store, out=str(tmp_path / "s.parquet"), budget=3, method="probcover")
    for options, message in [({"delta": 0.0}, "--delta"), ({"delta": 2.5}, "--delta"), ({"purity_alpha": 1.5}, "purity-alpha"),
                             ({"purity_clusters": 1}, "purity-clusters"), ({"distance": "euclidean"}, "distance")]:
        with pytest.raises(SelectionConfigError, match=message):
            run_selection(SelectConfig(**base, **options))
    with pytest.raises(BudgetError):
        run_selection(SelectConfig(**{**base, "budget": 16}))
    embedding[4] = 0.0
    zero_store = make_store(synth.table(uris, embedding[:, None, :], embedding), name="zero")
    with pytest.raises(InvalidVectorError, match=uris[4]):
        run_selection(SelectConfig(**{**base, "store": zero_store, "delta": 0.5}))


@pytest.mark.ray
def test_cli(ray_session, tmp_path, make_store, synth, capsys):
    rng = np.random.default_rng(2)
    embedding = rng.standard_normal((60, 5)).astype(np.float32)
    uris = synth.uris(60, 2)
    store = make_store(synth.table(uris, embedding[:, None, :], embedding), rows_per_shard=25)
    labeled = write_uris(tmp_path / "labeled.csv", uris[10:14])
    out = str(tmp_path / "cli.parquet")
    args = ["select", store, "--method", "probcover", "--budget", "10", "--out", out, "--labeled", labeled]
    assert main(args + ["--delta", "0.7"]) == 0
    picked = pq.read_table(out).column("uri").to_pylist()
    assert len(picked) == 10 == len(set(picked)) and not set(picked) & set(uris[10:14])
    assert main(args + ["--purity-clusters", "4", "--purity-alpha", "0.9"]) == 0
    assert json.load(open(out + ".config.json"))["config"]["purity_clusters"] == 4
    assert main(args + ["--delta", "-1"]) == 2
    assert "raysel: error: --delta" in capsys.readouterr().err
