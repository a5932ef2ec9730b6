"""`pt4al`: pretext-loss batches, the cold-start cycle, lowest-confidence cycles, and every input error.

References live here: a few lines of numpy for the batches and the cold start,
scikit-learn's LogisticRegression for the linear head.
"""
from __future__ import annotations

import csv

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raysel.config import SelectConfig
from raysel.select import BudgetError, run_selection
from raysel.select.supervision.labels import LabelsMissingError, PredictionsError, SingleClassError, UnknownUriError
from raysel.select.methods.pt4al import (
    CycleError,
    PretextLossMissingError,
    lowest_confidence,
    pretext_batches,
    uniform_positions,
)

COUNT, DIMS, CYCLES = 60, 8, 3


def pt4al_table(synth, count: int = COUNT, seed: int = 0) -> tuple[pa.Table, np.ndarray]:
    """A store table with embeddings in 3 well-separated groups and a pretext_loss column; returns it and the group of each row."""
    rng = np.random.default_rng(seed)
    uris = synth.uris(count, seed)
    groups = rng.integers(0, 3, count)
    centers = rng.standard_normal((3, DIMS)) * 3
    embedding = (centers[groups] + rng.standard_normal((count, DIMS))).astype(np.float32)
    table = synth.table(uris, embedding[:, None, :], embedding)
    losses = rng.uniform(0, 2, count).astype(np.float32)
    losses[:6] = losses[6:12]  # ties: broken by uri
    return table.append_column("pretext_loss", pa.array(losses, pa.float32())), groups


def reference_batches(table: pa.Table, cycles: int) -> list[list[str]]:
    uris = table.column("uri").to_pylist()
    losses = table.column("pretext_loss").to_numpy()
    order = sorted(range(len(uris)), key=lambda i: (-float(losses[i]), uris[i]))
    size, extra = divmod(len(uris), cycles)
    batches, start = [], 0
    for c in range(cycles):
        stop = start + size + (1 if c < extra else 0)
        batches.append([uris[i] for i in order[start:stop]])
        start = stop
    return batches


def write_labels(path, rows: list[tuple[str, object]], header=("uri", "label")) -> str:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def config(store, tmp_path, **values) -> SelectConfig:
    values = {"method": "pt4al", "cycles": CYCLES, "budget": 5, **values}
    return SelectConfig(store=store, out=str(tmp_path / f"sel-{values.get('cycle', 0)}-{len(list(tmp_path.iterdir()))}.parquet"), **values)


@pytest.mark.pure
def test_batches_sort_losses_as_numbers_not_strings():
    uris = ["a", "b", "c", "d"]
    losses = np.array([9.0, 10.0, 1.5, 9.0])  # as strings, "9.0" > "10.0": PT4AL's released code got this wrong
    assert pretext_batches(uris, losses, 2) == [["b", "a"], ["d", "c"]]
    assert pretext_batches(uris, losses, 3) == [["b", "a"], ["d"], ["c"]]  # the first N mod C batches hold one more


@pytest.mark.pure
@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 5, allow_nan=False, width=32), min_size=1, max_size=40), st.integers(1, 7))
def test_batches_partition_the_pool_hardest_first(losses, cycles):
    uris = [f"u{i:03d}" for i in range(len(losses))]
    batches = pretext_batches(uris, np.array(losses), cycles)
    assert len(batches) == cycles
    assert sorted(u for b in batches for u in b) == uris
    assert max(map(len, batches)) - min(map(len, batches)) <= 1
    flat = [u for b in batches for u in b]
    loss = dict(zip(uris, losses))
    assert all((loss[a], b) >= (loss[b], a) or loss[a] > loss[b] for a, b in zip(flat, flat[1:]))


@pytest.mark.pure
def test_cold_start_positions_are_every_nth_image():
    assert uniform_positions(5000, 1000)[:4] == [0, 5, 10, 15]  # PT4AL on CIFAR-10: samples[j * 5]
    assert uniform_positions(10, 3) == [0, 3, 6]
    assert uniform_positions(7, 7) == list(range(7))


@pytest.mark.pure
def test_lowest_confidence_breaks_ties_by_uri():
    probabilities = np.array([[0.5, 0.5], [0.9, 0.1], [0.5, 0.5], [0.6, 0.4]])
    picks = lowest_confidence(["d", "a", "b", "c"], probabilities, 3)
    assert [p.uri for p in picks] == ["b", "d", "c"]
    assert [p.score for p in picks] == [0.5, 0.5, 0.6]


@pytest.mark.pure
def test_cycle_zero_matches_reference(make_store, synth, tmp_path):
    table, _ = pt4al_table(synth)
    store = make_store(table, rows_per_shard=17)  # several shards
    batches = reference_batches(table, CYCLES)
    result = run_selection(config(store, tmp_path, cycle=0, budget=6))
    expected = [batches[0][j * len(batches[0]) // 6] for j in range(6)]
    assert result.column("uri").to_pylist() == expected
    losses = dict(zip(table.column("uri").to_pylist(), table.column("pretext_loss").to_pylist()))
    assert result.column("score").to_pylist() == pytest.approx([losses[u] for u in expected])
    assert result.column("rank").to_pylist() == list(range(6))


@pytest.mark.torch
def test_later_cycles_pick_lowest_confidence_of_a_linear_head(make_store, synth, tmp_path):
    from sklearn.linear_model import LogisticRegression

    table, groups = pt4al_table(synth)
    store = make_store(table, rows_per_shard=17)
    uris = table.column("uri").to_pylist()
    embedding = np.stack(table.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float64)
    batches = reference_batches(table, CYCLES)
    labeled = [batches[0][p] for p in uniform_positions(len(batches[0]), 6)] + [batches[2][0]]
    labels = {u: int(groups[uris.index(u)]) for u in labeled}
    assert len(set(labels.values())) >= 2
    labels_file = write_labels(tmp_path / "labels.csv", sorted(labels.items()))

    cycle_2 = config(store, tmp_path, cycle=2, budget=4, labeled=labels_file)
    result = run_selection(cycle_2)

    rows = [uris.index(u) for u in labeled]
    mean, std = embedding[rows].mean(0), embedding[rows].std(0).clip(1e-6)
    # Two classes: a 2-way softmax with |W|^2 / 2 equals scikit-learn's binary model at C = 2 (the optimum has w0 = -w1).
    c = 2.0 if len(set(labels.values())) == 2 else 1.0
    head = LogisticRegression(C=c, max_iter=10_000, tol=1e-10).fit((embedding[rows] - mean) / std, [labels[u] for u in labeled])
    candidates = [u for u in batches[2] if u not in labels]  # batch 2's first image is labeled: never re-picked
    confidence = head.predict_proba((embedding[[uris.index(u) for u in candidates]] - mean) / std).max(1)
    expected = [candidates[i] for i in sorted(range(len(candidates)), key=lambda i: (confidence[i], candidates[i]))[:4]]
    assert result.column("uri").to_pylist() == expected
    assert result.column("score").to_pylist() == pytest.approx(sorted(confidence)[:4], abs=1e-4)

    # Corrected labels for the same images, same --out: recomputed, not the stale manifest.
    flipped = dict(labels)
    changed = labeled[0]
    flipped[changed] = next(v for v in labels.values() if v != labels[changed])  # one image relabeled
    write_labels(tmp_path / "labels.csv", sorted(flipped.items()))
    again = run_selection(cycle_2)
    head = LogisticRegression(C=c, max_iter=10_000, tol=1e-10).fit((embedding[rows] - mean) / std, [flipped[u] for u in labeled])
    confidence = head.predict_proba((embedding[[uris.index(u) for u in candidates]] - mean) / std).max(1)
    assert again.column("score").to_pylist() == pytest.approx(sorted(confidence)[:4], abs=1e-4)
    assert again.column("score").to_pylist() != pytest.approx(result.column("score").to_pylist(), abs=1e-4)


@pytest.mark.pure
@pytest.mark.parametrize("layout", ["columns", "list"])
def test_predictions_file_replaces_the_linear_head(make_store, synth, tmp_path, layout):
    table, _ = pt4al_table(synth)
    store = make_store(table)
    uris = table.column("uri").to_pylist()
    rng = np.random.default_rng(5)
    probs = rng.dirichlet(np.ones(4), size=len(uris))
    if layout == "columns":
        predictions = pa.table({"uri": uris, **{f"prob_{k}": probs[:, k] for k in range(4)}})
    else:
        predictions = pa.table({"uri": uris, "probs": pa.array(probs.tolist(), pa.list_(pa.float32()))})
    path = str(tmp_path / "predictions.parquet")
    pq.write_table(predictions, path)
    result = run_selection(config(store, tmp_path, cycle=1, budget=5, predictions=path))
    batch = reference_batches(table, CYCLES)[1]
    confidence = {u: float(probs[uris.index(u)].astype(np.float32 if layout == "list" else np.float64).max()) for u in batch}
    expected = sorted(batch, key=lambda u: (confidence[u], u))[:5]
    assert result.column("uri").to_pylist() == expected


@pytest.mark.pure
def test_input_errors_are_clear_value_errors(make_store, synth, tmp_path):
    table, groups = pt4al_table(synth)
    store = make_store(table)
    uris = table.column("uri").to_pylist()
    without_loss = make_store(table.drop_columns(["pretext_loss"]), name="no-loss")

    def fails(error, match, **values):
        with pytest.raises(error, match=match) as caught:
            run_selection(config(values.pop("store", store), tmp_path, **values))
        assert isinstance(caught.value, ValueError)

    fails(PretextLossMissingError, "featurize with --pretext", store=without_loss)
    fails(CycleError, r"--cycle must be in 0 \.\. 2", cycle=3)
    fails(CycleError, r"--cycle must be in", cycle=-1)
    fails(BudgetError, "does not fit batch 0", budget=21)
    fails(LabelsMissingError, "--labeled FILE with 'uri' and 'label'", cycle=1)
    no_label_column = write_labels(tmp_path / "uris-only.csv", [(u,) for u in uris[:4]], header=("uri",))
    fails(LabelsMissingError, "no 'label' column", cycle=1, labeled=no_label_column)
    empty_label = write_labels(tmp_path / "empty-label.csv", [(uris[0], 0), (uris[1], "")])
    fails(LabelsMissingError, "has no label", cycle=1, labeled=empty_label)
    unknown = write_labels(tmp_path / "unknown.csv", [(uris[0], 0), ("s3://elsewhere/x.jpg", 1)])
    fails(ValueError, "not in the feature store|does not have", cycle=1, labeled=unknown)
    one_class = write_labels(tmp_path / "one-class.csv", [(u, 7) for u in uris[:5]])
    fails(SingleClassError, "at least two", cycle=1, labeled=one_class)

    probs = np.full((len(uris), 2), 0.5)
    probs[3] = [0.7, 0.7]
    bad_sum = str(tmp_path / "bad-sum.parquet")
    pq.write_table(pa.table({"uri": uris, "prob_0": probs[:, 0], "prob_1": probs[:, 1]}), bad_sum)
    fails(PredictionsError, "sum to 1.400000, not 1", cycle=1, predictions=bad_sum)
    partial = str(tmp_path / "partial.parquet")
    pq.write_table(pa.table({"uri": uris[:3], "prob_0": [0.5] * 3, "prob_1": [0.5] * 3}), partial)
    fails(PredictionsError, "no probabilities for", cycle=1, predictions=partial)
    stranger = str(tmp_path / "stranger.parquet")
    pq.write_table(pa.table({"uri": ["s3://elsewhere/x.jpg"], "prob_0": [0.5], "prob_1": [0.5]}), stranger)
    fails(UnknownUriError, "does not have", cycle=1, predictions=stranger)
    logits = str(tmp_path / "logits.parquet")
    pq.write_table(pa.table({"uri": uris, "prob_0": [3.0] * len(uris), "prob_1": [-1.0] * len(uris)}), logits)
    fails(PredictionsError, r"outside \[0, 1\]", cycle=1, predictions=logits)
    no_probs = str(tmp_path / "no-probs.parquet")
    pq.write_table(pa.table({"uri": uris, "p": [0.5] * len(uris)}), no_probs)
    fails(PredictionsError, "prob_0 .. prob_", cycle=1, predictions=no_probs)
