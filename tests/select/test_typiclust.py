"""`typiclust`: seeded K-Means, typicality, the cluster order; through run_selection and the CLI."""
from __future__ import annotations

import csv
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from raysel.cli import main
from raysel.config import SelectConfig
from raysel.select import BudgetError, LabeledError, SelectionConfigError, run_selection
from raysel.select.pool import kmeans as pool_kmeans
from raysel.select.pool import typicality as pool_typicality
from raysel.select.methods import typiclust
from raysel.select.pool.kmeans import seeded_kmeans
from raysel.select.methods.typiclust import typicality, typiclust_reference


def on_a_line(xs) -> np.ndarray:
    return np.array([[float(x), 0.0] for x in xs])


# Four groups on a line, far apart: A (7 points, spacing 1), B (5, spacing 1), C (6, spacing 2), D (2).
A, B, C, D = list(range(7)), [100 + i for i in range(5)], [1000 + 2 * i for i in range(6)], [10000, 10001]
LINE = A + B + C + D
LINE_URIS = [f"x{x:05d}" for x in LINE]


def brute_force_typicality(points: np.ndarray, neighbours: int = 20) -> np.ndarray:
    """Full pairwise distance matrix, sort each row, mean of the k nearest others."""
    distances = np.sqrt(((points[:, None, :] - points[None, :, :]) ** 2).sum(-1))
    k = min(neighbours, len(points) - 1)
    return np.array([1.0 / np.sort(np.delete(row, i))[:k].mean() for i, row in enumerate(distances)])


def blobs(sizes, dims: int = 8, seed: int = 0, spread: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((len(sizes), dims)) * 10
    return np.concatenate([center + spread * rng.standard_normal((size, dims)) for center, size in zip(centers, sizes)])


@pytest.mark.pure
def test_kmeans_finds_separated_groups_and_is_seeded():
    points = on_a_line(LINE)
    groups = np.repeat(np.arange(4), [len(A), len(B), len(C), len(D)])
    for seed in range(5):
        labels, steps = seeded_kmeans(points, 4, seed)
        assert steps >= 1
        # the same partition as the groups, whatever the cluster numbering
        assert len({(g, l) for g, l in zip(groups, labels)}) == 4 and len(set(labels)) == 4
    data = blobs([30, 20, 10], seed=3)
    assert np.array_equal(seeded_kmeans(data, 5, seed=7)[0], seeded_kmeans(data, 5, seed=7)[0])
    assert not all(np.array_equal(seeded_kmeans(data, 5, 0)[0], seeded_kmeans(data, 5, s)[0]) for s in range(1, 4))
    assert seeded_kmeans(np.ones((3, 2)), 5, 0)[0].tolist() == [0, 0, 0]  # duplicates: ties go to the lowest center
    with pytest.raises(ValueError):
        seeded_kmeans(data, 0, 0)


@pytest.mark.pure
def test_kmeans_assignments_are_the_nearest_center_of_their_means():
    """At convergence every point is nearest to the mean of its own cluster (Lloyd's fixed point)."""
    data = blobs([25, 25, 25, 25], seed=1, spread=3.0)  # overlapping: Lloyd needs several steps
    labels, steps = seeded_kmeans(data, 4, seed=2)
    assert steps < pool_kmeans.KMEANS_MAX_ITERS
    means = np.stack([data[labels == c].mean(0) for c in range(4)])
    nearest = np.argmin(((data[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    assert np.array_equal(nearest, labels)


@pytest.mark.pure
def test_typicality_by_hand_and_against_brute_force(monkeypatch):
    # 0..6: the middle point's 6 neighbours are 1, 1, 2, 2, 3, 3 away -> 1 / 2
    np.testing.assert_allclose(typicality(on_a_line(A))[3], 0.5)
    np.testing.assert_allclose(typicality(on_a_line(A))[2], 6 / 13)
    assert typicality(on_a_line([5.0])).tolist() == [0.0]
    duplicates = typicality(on_a_line([1.0, 1.0, 1.0, 7.0]), neighbours=2)  # k = 2 exact duplicates: mean 0
    assert np.isinf(duplicates[:3]).all() and duplicates[3] == pytest.approx(1 / 6)
    data = blobs([40], dims=5, seed=4)
    expected = brute_force_typicality(data)
    np.testing.assert_allclose(typicality(data), expected, rtol=1e-9)
    np.testing.assert_allclose(typicality(data, neighbours=3), brute_force_typicality(data, 3), rtol=1e-9)
    monkeypatch.setattr(pool_typicality, "ROW_BLOCK", 7)  # the blocked path gives the same numbers
    np.testing.assert_allclose(typicality(data), expected, rtol=1e-9)


@pytest.mark.pure
def test_picks_the_most_typical_image_of_the_largest_uncovered_clusters():
    # labeled: one image of D -> 1 + 3 = 4 clusters = the four groups; D is covered, B (5) and D (2) are tiny
    # (<= 5 images: the paper's code drops them), so A gets its second pick before B its first
    picks = typiclust_reference(on_a_line(LINE), LINE_URIS, 3, labeled=["x10000"])
    assert [p.uri for p in picks] == ["x00003", "x01004", "x00002"]  # A (7), C (6), A; C's 1004/1006 and A's 2/4 tie
    np.testing.assert_allclose([p.score for p in picks], [1 / 2, 1 / 3.6, 6 / 13])


@pytest.mark.pure
@pytest.mark.parametrize("seed", range(8))
def test_one_pick_per_blob_largest_first_and_its_densest_point(seed):
    sizes = (30, 20, 10)
    data = blobs(sizes, dims=8, seed=seed, spread=1.0)
    uris = [f"img-{i:03d}" for i in range(len(data))]
    picks = typiclust_reference(data, uris, 3, seed=seed)
    blob_of = np.repeat(np.arange(3), sizes)
    assert [blob_of[uris.index(p.uri)] for p in picks] == [0, 1, 2]
    for blob, pick in enumerate(picks):
        rows = np.flatnonzero(blob_of == blob)
        densest = rows[np.argmax(brute_force_typicality(data[rows]))]
        assert pick.uri == uris[densest] and pick.score == pytest.approx(brute_force_typicality(data[rows]).max())


@pytest.mark.pure
def test_labeled_clusters_come_last_and_labeled_images_are_never_picked():
    # 2 labeled + 3 = 5 clusters, capped at 4 = the groups. A and D hold a labeled image: C first, then A
    # (larger than C once both hold one), whose most typical image 3 is labeled: 2 and 4 tie (1 / (13/6)) -> x00002.
    picks = typiclust_reference(on_a_line(LINE), LINE_URIS, 3, labeled=["x10000", "x00003"], max_clusters=4)
    assert [p.uri for p in picks] == ["x01004", "x00002", "x01006"]
    np.testing.assert_allclose(picks[1].score, 6 / 13)
    # every image: the tiny clusters B and D come only once A and C have run out
    everything = typiclust_reference(on_a_line(LINE), LINE_URIS, len(LINE) - 2, labeled=["x10000", "x00003"], max_clusters=4)
    group_of = {u: ("A" if x < 100 else "B" if x < 1000 else "C" if x < 10000 else "D") for u, x in zip(LINE_URIS, LINE)}
    assert [group_of[p.uri] for p in everything[:3]] == ["C", "A", "C"]
    assert {group_of[p.uri] for p in everything[:12]} == {"A", "C"} and group_of[everything[12].uri] == "B"
    assert [group_of[p.uri] for p in everything[12:]] == ["B", "B", "D", "B", "B", "B"]  # fewest covered, then largest
    assert len({p.uri for p in everything}) == len(LINE) - 2 and not {"x10000", "x00003"} & {p.uri for p in everything}


@pytest.mark.pure
def test_row_order_does_not_matter_and_errors_are_clear():
    data = blobs([30, 20, 10], seed=5)
    uris = [f"img-{i:03d}" for i in range(len(data))]
    order = np.random.default_rng(0).permutation(len(data))
    first = typiclust_reference(data, uris, 6, labeled=uris[:2], seed=3)
    again = typiclust_reference(data[order], [uris[i] for i in order], 6, labeled=uris[:2], seed=3)
    assert first == again
    with pytest.raises(BudgetError, match="58"):
        typiclust_reference(data, uris, 59, labeled=uris[:2])
    with pytest.raises(LabeledError, match="nope"):
        typiclust_reference(data, uris, 3, labeled=["nope"])


def write_uris(path, uris) -> str:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uri"])
        writer.writerows([u] for u in uris)
    return str(path)


def blob_table(synth, sizes=(40, 25, 12), seed=0):
    embedding = blobs(sizes, dims=8, seed=seed).astype(np.float32)
    uris = synth.uris(len(embedding), seed)
    return synth.table(uris, embedding[:, None, :], embedding), uris, embedding


@pytest.mark.ray
def test_run_selection_on_a_store_matches_the_reference(ray_session, tmp_path, make_store, synth):
    table, uris, embedding = blob_table(synth)
    store = make_store(table, rows_per_shard=20)  # several shards
    labeled = uris[::30]
    out = str(tmp_path / "sel.parquet")
    config = SelectConfig(store=store, out=out, budget=7, method="typiclust", seed=2,
                          labeled=write_uris(tmp_path / "labeled.csv", labeled))
    result = run_selection(config)
    expected = typiclust_reference(embedding, uris, 7, labeled=labeled, seed=2)
    assert result.column("uri").to_pylist() == [p.uri for p in expected]
    np.testing.assert_allclose(result.column("score").to_pylist(), [p.score for p in expected])
    stats = json.load(open(out + ".config.json"))["stats"]
    assert stats["clusters"] == len(labeled) + 7 and stats["picks"] == 7 and stats["labeled"] == len(labeled)
    # another cap is another selection, not the stale output
    capped = run_selection(SelectConfig(**{**config.__dict__, "typiclust_max_clusters": 3}))
    assert capped.column("uri").to_pylist() == [p.uri for p in typiclust_reference(embedding, uris, 7, labeled, 3, seed=2)]
    assert json.load(open(out + ".config.json"))["stats"]["clusters"] == 3


def test_bad_options_are_rejected_before_reading(tmp_path, make_store, synth):
    table, uris, _ = blob_table(synth)
    store = make_store(table)
    base = dict(store=store, out=str(tmp_path / "s.parquet"), budget=3, method="typiclust")
    with pytest.raises(SelectionConfigError, match="typiclust-max-clusters"):
        run_selection(SelectConfig(**base, typiclust_max_clusters=0))
    with pytest.raises(SelectionConfigError, match="distance"):
        run_selection(SelectConfig(**base, distance="cosine"))
    with pytest.raises(BudgetError):
        run_selection(SelectConfig(**{**base, "budget": len(uris) + 1}))


@pytest.mark.ray
def test_cli(ray_session, tmp_path, make_store, synth, capsys):
    table, uris, _ = blob_table(synth)
    store = make_store(table, rows_per_shard=30)
    labeled = write_uris(tmp_path / "labeled.csv", uris[:5])
    out = str(tmp_path / "cli.parquet")
    args = ["select", store, "--method", "typiclust", "--budget", "9", "--out", out, "--labeled", labeled, "--seed", "1"]
    assert main(args + ["--typiclust-max-clusters", "6"]) == 0
    picked = pq.read_table(out).column("uri").to_pylist()
    assert len(picked) == 9 == len(set(picked)) and not set(picked) & set(uris[:5])
    assert json.load(open(out + ".config.json"))["config"]["typiclust_max_clusters"] == 6
    assert main(args + ["--typiclust-max-clusters", "0"]) == 2
    assert main(["select", store, "--method", "typiclust", "--budget", str(len(uris)), "--out", out, "--labeled", labeled]) == 2
    assert "raysel: error:" in capsys.readouterr().err
