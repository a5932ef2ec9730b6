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
    top1_confidence,
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

    cycle_2 = config(store, tmp_path, cycle=2, budget=4, labeled=labels_file, confidence="softmax")
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


def released_make_batches(lines: list[str], cycles: int) -> list[list[str]]:
    """johnsk95/PT4AL make_batches.py lines 83-109, re-typed: the reference for `--pt4al-sort string`.

    `lines` are rotation_loss.txt's, `str(float(loss)) + '_' + path`; batch i is
    sort_index[i * size : (i + 1) * size] of the reversed string argsort.
    """
    loss_1 = [line.split("_")[0] for line in lines]
    name_2 = [line.split("_")[1] for line in lines]
    sort_index = np.argsort(np.array(loss_1)).tolist()
    sort_index.reverse()
    size = len(lines) // cycles
    return [[name_2[k] for k in sort_index[i * size : (i + 1) * size]] for i in range(cycles)]


def scientific_losses(count: int, seed: int) -> np.ndarray:
    """float32 losses like a trained rotation net's: most in 1e-3 .. 3, a fifth below 1e-4 (printed as 1.2e-05)."""
    rng = np.random.default_rng(seed)
    losses = np.exp(rng.uniform(np.log(1e-3), np.log(3.0), count))
    tiny = rng.choice(count, count // 5, replace=False)
    losses[tiny] = np.exp(rng.uniform(np.log(1e-7), np.log(1e-4), len(tiny)))
    return losses.astype(np.float32)


@pytest.mark.pure
def test_string_sort_reproduces_the_released_batch_files(make_store, synth, tmp_path):
    count, cycles, budget = 40, 4, 5
    table, _ = pt4al_table(synth, count=count)
    losses = scientific_losses(count, seed=1)
    assert sum("e-" in str(float(loss)) for loss in losses) >= 5  # the fixture triggers scientific notation
    table = table.set_column(table.column_names.index("pretext_loss"), "pretext_loss", pa.array(losses, pa.float32()))
    uris = table.column("uri").to_pylist()
    assert not any("_" in uri for uri in uris)  # the released parser splits lines on '_'
    lines = [str(float(loss)) + "_" + uri for loss, uri in zip(losses, uris)]  # make_batches.py line 71

    released = released_make_batches(lines, cycles)
    assert pretext_batches(uris, losses.astype(np.float64), cycles, sort="string") == released
    numeric = pretext_batches(uris, losses.astype(np.float64), cycles)
    assert numeric != released
    # The easiest images (scientific notation) sit in the released batch 0, which the numeric sort gives the hardest.
    easiest = {u for u, loss in zip(uris, losses) if loss < 1e-4}
    assert easiest & set(released[0]) and not easiest & set(numeric[0])

    store = make_store(table, rows_per_shard=13)
    result = run_selection(config(store, tmp_path, cycles=cycles, cycle=0, budget=budget, pt4al_sort="string"))
    step = len(released[0]) // budget
    assert result.column("uri").to_pylist() == [released[0][j * step] for j in range(budget)]  # main.py line 233


@pytest.mark.pure
def test_normalized_confidence_matches_a_hand_computation():
    import math

    logits = np.array([[3.0, 4.0, 0.0], [0.5, 0.1, -0.2], [0.0, 0.0, 0.0]])
    # Row 0: |(3, 4, 0)| = 5, so the unit logits are (0.6, 0.8, 0): top-1 = e^0.8 / (e^0.6 + e^0.8 + e^0).
    row0 = math.exp(0.8) / (math.exp(0.6) + math.exp(0.8) + 1.0)
    norm = math.sqrt(0.25 + 0.01 + 0.04)
    row1 = math.exp(0.5 / norm) / sum(math.exp(v / norm) for v in (0.5, 0.1, -0.2))
    expected = [row0, row1, 1 / 3]  # zero logits: F.normalize leaves them at zero, a uniform softmax
    assert top1_confidence(logits, "normalized") == pytest.approx(expected, rel=1e-12)
    plain = [math.exp(4) / (math.exp(3) + math.exp(4) + 1), math.exp(0.5) / sum(math.exp(v) for v in (0.5, 0.1, -0.2)), 1 / 3]
    assert top1_confidence(logits, "softmax") == pytest.approx(plain, rel=1e-12)
    # The orders disagree: row 0's large logits are the more confident under softmax, row 1 after normalising.
    assert row1 > row0 and plain[0] > plain[1]
    with pytest.raises(ValueError, match="--confidence"):
        top1_confidence(logits, "entropy")


@pytest.mark.pure
@pytest.mark.parametrize("confidence", ["normalized", "softmax"])
def test_predictions_logits_rank_by_the_chosen_confidence(make_store, synth, tmp_path, confidence):
    import torch
    import torch.nn.functional as F

    table, _ = pt4al_table(synth)
    store = make_store(table)
    uris = table.column("uri").to_pylist()
    rng = np.random.default_rng(9)
    # Logits of varied scale: the scale decides the plain softmax's confidence, not the normalised one's.
    logits = rng.standard_normal((len(uris), 3)) * rng.uniform(0.1, 10.0, (len(uris), 1))
    path = str(tmp_path / "logits.parquet")
    pq.write_table(pa.table({"uri": uris, **{f"prob_{k}": logits[:, k] for k in range(3)}}), path)
    result = run_selection(
        config(store, tmp_path, cycle=1, budget=5, predictions=path, predictions_logits=True, confidence=confidence)
    )
    batch = reference_batches(table, CYCLES)[1]
    rows = torch.from_numpy(logits[[uris.index(u) for u in batch]])
    reference = F.softmax(F.normalize(rows, dim=1) if confidence == "normalized" else rows, dim=1).max(1).values.numpy()
    expected = [batch[i] for i in sorted(range(len(batch)), key=lambda i: (reference[i], batch[i]))[:5]]
    assert result.column("uri").to_pylist() == expected
    assert result.column("score").to_pylist() == pytest.approx(sorted(reference)[:5], rel=1e-9)


@pytest.mark.torch
def test_linear_head_default_confidence_is_the_normalized_one(make_store, synth, tmp_path):
    from raysel.select.supervision.probe import fit_linear_probe

    table, groups = pt4al_table(synth)
    store = make_store(table, rows_per_shard=17)
    uris = table.column("uri").to_pylist()
    embedding = np.stack(table.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float64)
    batches = reference_batches(table, CYCLES)
    labeled = batches[0][:12]
    # Labels unrelated to the groups: a head of varied, unsaturated confidence (separable groups would give
    # logits of one direction, whose normalised confidences all tie).
    labels = {u: int(label) for u, label in zip(labeled, np.random.default_rng(3).permutation([0, 1, 2] * 4))}
    labels_file = write_labels(tmp_path / "labels.csv", sorted(labels.items()))
    result = run_selection(config(store, tmp_path, cycle=1, budget=4, labeled=labels_file))

    classes = sorted(set(labels.values()))
    in_file_order = sorted(labels)  # the order the labels file lists them, as the method reads it
    probe = fit_linear_probe(
        embedding[[uris.index(u) for u in in_file_order]].astype(np.float32),
        np.array([classes.index(labels[u]) for u in in_file_order]),
        len(classes),
    )
    candidates = batches[1]
    logits = probe.predict_logits(embedding[[uris.index(u) for u in candidates]])
    unit = logits / np.linalg.norm(logits, axis=1, keepdims=True)
    confidence = (np.exp(unit) / np.exp(unit).sum(1, keepdims=True)).max(1)
    assert len(np.unique(confidence.round(9))) == len(confidence)  # no near-ties: the order is well defined
    assert len(np.unique(confidence.round(9))) == len(confidence)  # no near-ties: the order is well defined
    expected = [candidates[i] for i in sorted(range(len(candidates)), key=lambda i: (confidence[i], candidates[i]))[:4]]
    assert result.column("uri").to_pylist() == expected
    assert result.column("score").to_pylist() == pytest.approx(sorted(confidence)[:4], rel=1e-6)
    plain = probe.predict_proba(embedding[[uris.index(u) for u in candidates]]).max(1)
    assert [candidates[i] for i in np.argsort(plain)[:4]] != expected  # the default is not the plain softmax
    assert result.column("score").to_pylist() == pytest.approx(sorted(confidence)[:4], rel=1e-6)
    plain = probe.predict_proba(embedding[[uris.index(u) for u in candidates]]).max(1)
    assert [candidates[i] for i in np.argsort(plain)[:4]] != expected  # the default is not the plain softmax


@pytest.mark.ray
@pytest.mark.torch
def test_later_cycles_score_on_ray_tasks_as_the_driver_does(ray_session, make_store, synth, tmp_path):
    import json

    table, groups = pt4al_table(synth, count=120, seed=3)
    store = make_store(table, rows_per_shard=25)  # 5 store files over 3 tasks
    uris = table.column("uri").to_pylist()
    batches = reference_batches(table, CYCLES)
    labeled = batches[0][:10] + [batches[1][3]]
    labels_file = write_labels(tmp_path / "labels.csv", [(u, int(groups[uris.index(u)])) for u in labeled])
    runs = {shards: run_selection(config(store, tmp_path, cycle=1, budget=8, labeled=labels_file, shards=shards))
            for shards in (1, 3)}
    assert runs[3].column("uri").to_pylist() == runs[1].column("uri").to_pylist()
    np.testing.assert_allclose(runs[3].column("score").to_pylist(), runs[1].column("score").to_pylist(), rtol=1e-12)
    assert set(runs[3].column("uri").to_pylist()) <= set(batches[1]) - {batches[1][3]}  # the batch, never a labeled image
    outs = sorted(tmp_path.glob("sel-1-*.parquet.config.json"))
    assert [json.load(open(path))["stats"].get("scored_on_shards") for path in outs] == [None, 3]
