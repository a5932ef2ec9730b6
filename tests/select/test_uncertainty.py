"""`uncertainty`: entropy / margin / least-confidence over the whole unlabeled pool, against numpy + scikit-learn."""
from __future__ import annotations

import csv

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raysel.config import SelectConfig
from raysel.select import BudgetError, SelectionConfigError, run_selection
from raysel.select.supervision.labels import LabelsMissingError, SingleClassError, UnknownUriError
from raysel.select.methods.uncertainty import acquisition_scores, most_uncertain

DIMS = 6


def grouped_table(synth, count: int = 90, seed: int = 0) -> tuple[pa.Table, np.ndarray]:
    rng = np.random.default_rng(seed)
    uris = synth.uris(count, seed)
    groups = rng.integers(0, 3, count)
    centers = rng.standard_normal((3, DIMS)) * 2
    embedding = (centers[groups] + rng.standard_normal((count, DIMS))).astype(np.float32)
    return synth.table(uris, embedding[:, None, :], embedding), groups


def write_labels(path, rows) -> str:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uri", "label"])
        writer.writerows(rows)
    return str(path)


def reference(uris, embedding, labels: dict[str, int], acquisition: str, budget: int) -> list[str]:
    """Numpy + scikit-learn: standardize on the labeled rows, multinomial logistic regression, score, sort."""
    from sklearn.linear_model import LogisticRegression

    rows = [uris.index(u) for u in labels]
    mean, std = embedding[rows].mean(0), embedding[rows].std(0).clip(1e-6)
    head = LogisticRegression(C=1.0, max_iter=10_000, tol=1e-10).fit((embedding[rows] - mean) / std, list(labels.values()))
    pool = [u for u in uris if u not in labels]
    p = head.predict_proba((embedding[[uris.index(u) for u in pool]] - mean) / std)
    top = np.sort(p, axis=1)[:, ::-1]
    key = {
        "entropy": -(-(p * np.log(p)).sum(1)),
        "margin": top[:, 0] - top[:, 1],
        "least-confidence": -(1 - top[:, 0]),
    }[acquisition]
    return [pool[i] for i in sorted(range(len(pool)), key=lambda i: (round(float(key[i]), 6), pool[i]))[:budget]]


@pytest.mark.pure
def test_acquisition_scores_on_known_probabilities():
    p = np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.4, 0.1]])
    np.testing.assert_allclose(acquisition_scores(p, "entropy"), [0.0, np.log(3), -(0.5 * np.log(0.5) + 0.4 * np.log(0.4) + 0.1 * np.log(0.1))])
    np.testing.assert_allclose(acquisition_scores(p, "margin"), [1.0, 0.0, 0.1])
    np.testing.assert_allclose(acquisition_scores(p, "least-confidence"), [0.0, 2 / 3, 0.5])
    for acquisition in ("entropy", "margin", "least-confidence"):
        assert [pick.uri for pick in most_uncertain(["a", "b", "c"], p, acquisition, 3)] == ["b", "c", "a"]
    ties = np.array([[0.5, 0.5], [0.5, 0.5], [0.9, 0.1]])
    assert [pick.uri for pick in most_uncertain(["z", "y", "x"], ties, "margin", 2)] == ["y", "z"]  # ties by uri
    with pytest.raises(SelectionConfigError, match="acquisition"):
        acquisition_scores(p, "variance")


@pytest.mark.torch
@pytest.mark.parametrize("acquisition", ["entropy", "margin", "least-confidence"])
def test_ranks_whole_unlabeled_pool_like_the_reference(make_store, synth, tmp_path, acquisition):
    table, groups = grouped_table(synth)
    store = make_store(table, rows_per_shard=20)  # the top-B merge runs across 5 shards
    uris = table.column("uri").to_pylist()
    embedding = np.stack(table.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float64)
    labels = {u: int(g) for u, g in list(zip(uris, groups))[:12]}
    assert len(set(labels.values())) == 3
    result = run_selection(
        SelectConfig(store=store, out=str(tmp_path / "sel.parquet"), budget=10, method="uncertainty",
                     acquisition=acquisition, labeled=write_labels(tmp_path / "labels.csv", labels.items()))
    )
    picked = result.column("uri").to_pylist()
    assert not set(picked) & set(labels)
    assert picked == reference(uris, embedding, labels, acquisition, 10)


@pytest.mark.pure
def test_predictions_file_and_errors(make_store, synth, tmp_path):
    table, groups = grouped_table(synth, count=30)
    store = make_store(table)
    uris = table.column("uri").to_pylist()
    probs = np.random.default_rng(1).dirichlet(np.ones(3), size=len(uris))
    predictions = str(tmp_path / "predictions.csv")
    with open(predictions, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uri", "prob_0", "prob_1", "prob_2"])
        writer.writerows([u, *(repr(float(v)) for v in row)] for u, row in zip(uris, probs))
    labeled = write_labels(tmp_path / "labeled.csv", [(u, 0) for u in uris[:5]])

    def select(**values):
        values = {"store": store, "out": str(tmp_path / f"sel-{len(list(tmp_path.iterdir()))}.parquet"),
                  "budget": 4, "method": "uncertainty", **values}
        return run_selection(SelectConfig(**values))

    result = select(predictions=predictions, labeled=labeled, acquisition="least-confidence")
    pool = uris[5:]
    confidence = {u: probs[uris.index(u)].max() for u in pool}
    assert result.column("uri").to_pylist() == sorted(pool, key=lambda u: (confidence[u], u))[:4]

    with pytest.raises(SelectionConfigError, match="--acquisition must be one of"):
        select(acquisition="bald", predictions=predictions)
    with pytest.raises(LabelsMissingError, match="needs a classifier"):
        select()
    with pytest.raises(SingleClassError, match="at least two"):
        select(labeled=labeled)  # all five labeled images are class 0
    with pytest.raises(UnknownUriError, match="does not have"):
        select(labeled=write_labels(tmp_path / "unknown.csv", [(uris[0], 0), ("/nowhere.png", 1)]))
    with pytest.raises(BudgetError, match="must be in 1 .. 25"):
        select(budget=26, predictions=predictions, labeled=labeled)


def test_predictions_that_do_not_match_the_store_are_clear_errors(make_store, synth, tmp_path):
    from raysel.select.supervision.labels import PredictionsError

    table, _ = grouped_table(synth, count=30)
    store = make_store(table)
    uris = table.column("uri").to_pylist()
    probs = np.random.default_rng(2).dirichlet(np.ones(3), size=len(uris)).astype(np.float32)
    flat = pa.FixedSizeListArray.from_arrays(pa.array(probs.reshape(-1), pa.float32()), 3)
    out = str(tmp_path / "never.parquet")

    def predictions(name, rows, values):
        path = str(tmp_path / f"{name}.parquet")
        pq.write_table(pa.table({"uri": pa.array(rows, pa.string()), "probs": values}), path)
        return path

    def select(path, into=out, **values):
        return run_selection(SelectConfig(store=store, out=into, budget=4, method="uncertainty", predictions=path, **values))

    good = predictions("good", uris, flat)  # a fixed-size list column of float32, read from its Arrow buffers
    picked = select(good, into=str(tmp_path / "picked.parquet")).column("uri").to_pylist()
    entropy = acquisition_scores(probs.astype(np.float64), "entropy")
    assert picked == [uris[i] for i in np.lexsort((np.array(uris), -entropy))[:4]]
    with pytest.raises(UnknownUriError, match="does not have"):
        select(predictions("stranger", uris[:-1] + ["s3://elsewhere/x.jpg"], flat))
    with pytest.raises(PredictionsError, match="no probabilities for 1 image"):
        select(predictions("short", uris[:-1], flat.slice(0, len(uris) - 1)))
    with pytest.raises(PredictionsError, match="has 3 classes"):
        select(good, labeled=write_labels(tmp_path / "labels.csv", [(uris[0], 0), (uris[1], 7)]))
    assert not list(tmp_path.glob("never*"))  # nothing written by the failed runs


@pytest.mark.ray
@pytest.mark.torch
def test_linear_head_scores_shards_on_ray_tasks(ray_session, make_store, synth, tmp_path, monkeypatch):
    from raysel.select.methods import uncertainty

    table, groups = grouped_table(synth)
    store = make_store(table, rows_per_shard=20)
    uris = table.column("uri").to_pylist()
    labels = write_labels(tmp_path / "labels.csv", [(u, int(g)) for u, g in list(zip(uris, groups))[:12]])
    runs = {}
    for shards in (1, 3):
        out = str(tmp_path / f"sel-{shards}.parquet")
        runs[shards] = run_selection(SelectConfig(store=store, out=out, budget=15, method="uncertainty", labeled=labels, shards=shards))
    monkeypatch.setattr(uncertainty, "PREDICT_ROWS", 7)  # the driver's stream scores in blocks: the same picks
    runs["blocks"] = run_selection(SelectConfig(store=store, out=str(tmp_path / "sel-b.parquet"), budget=15, method="uncertainty", labeled=labels))
    for shards in (3, "blocks"):  # the driver's stream (1) and the tasks' per-shard tops merged pick the same
        assert runs[shards].column("uri").to_pylist() == runs[1].column("uri").to_pylist()
        np.testing.assert_allclose(runs[shards].column("score").to_pylist(), runs[1].column("score").to_pylist(), rtol=1e-12)
    import json

    assert json.load(open(str(tmp_path / "sel-3.parquet") + ".config.json"))["stats"]["scored_on_shards"] == 3
