"""`run_selection` end to end over Ray shard actors, against the single-process reference."""
from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raysel import schema
from raysel.config import SelectConfig
from raysel.select import (
    BudgetError,
    DuplicateUriError,
    EmptyStoreError,
    InconsistentVectorsError,
    InvalidVectorError,
    LabeledError,
    SelectionConfigError,
    UnknownMethodError,
    run_selection,
    select_reference,
)
from raysel.store import FeatureStoreError

pytestmark = pytest.mark.ray

N, K, D = 600, 4, 12


@pytest.fixture
def pool(synth):
    vectors = synth.vectors(N, K, D, seed=4)
    uris = synth.uris(N, seed=4)
    embedding = vectors.mean(axis=1) + 0.05
    return uris, vectors, embedding


def run(tmp_path, store, name="selection", **options):
    out = str(tmp_path / f"{name}.parquet")
    return run_selection(SelectConfig(store=store, out=out, **options), progress=False), out


def write_labeled(tmp_path, uris, fmt):
    path = str(tmp_path / f"labeled.{fmt}")
    table = pa.table({"uri": uris, "note": ["x"] * len(uris)})
    if fmt == "csv":
        import pyarrow.csv as pa_csv

        pa_csv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    return path


@pytest.mark.parametrize(
    "method, shards, distance, labeled",
    [
        ("geal", 1, None, None),
        ("geal", 2, "euclidean", "parquet"),
        ("coreset", 1, None, "csv"),
        ("coreset", 2, "cosine", None),
    ],
)
def test_matches_reference_pick_for_pick(ray_session, tmp_path, make_store, synth, pool, method, shards, distance, labeled):
    uris, vectors, embedding = pool
    store = make_store(synth.table(uris, vectors, embedding), rows_per_shard=230)
    labeled_uris = uris[5::41]
    options = {"labeled": write_labeled(tmp_path, labeled_uris, labeled)} if labeled else {}
    table, out = run(tmp_path, store, method=method, shards=shards, distance=distance, budget=70, candidates=16, seed=3, **options)

    resolved = distance or ("cosine" if method == "geal" else "euclidean")
    source = vectors if method == "geal" else embedding
    expected = select_reference(source, uris, 70, resolved, labeled=labeled_uris if labeled else (), seed=3)
    assert table.schema.equals(schema.SELECTION_SCHEMA)
    assert table.equals(expected)
    assert pq.read_table(out).equals(expected)
    written = json.load(open(out + ".config.json"))
    assert written["config"]["distance"] == resolved and written["config"]["shards"] == shards
    assert written["stats"]["picks_per_round_trip"] > 1 and len(written["stats"]["shards"]) == shards
    assert not os.path.exists(out + ".checkpoint.json")
    if not labeled:
        assert table.column("score")[0].as_py() is None


def test_ties_across_shards_go_to_the_smallest_uri(ray_session, tmp_path, make_store, synth):
    distinct = synth.vectors(100, 3, 6, seed=9)
    vectors = np.concatenate([distinct, distinct])  # each image twice, twins land on different shards
    uris = synth.uris(200, seed=9)
    store = make_store(synth.table(uris, vectors), rows_per_shard=64)
    table, _ = run(tmp_path, store, budget=150, shards=3, candidates=8, seed=2)
    assert table.equals(select_reference(vectors, uris, 150, seed=2))
    twin = {uris[i]: uris[(i + 100) % 200] for i in range(200)}
    seen = set()
    for uri, score in zip(table.column("uri").to_pylist(), table.column("score").to_pylist()):
        if score and twin[uri] not in seen:
            assert uri < twin[uri]
        seen.add(uri)


def test_fixed_size_lists_and_float16(ray_session, tmp_path, make_store, synth, pool):
    uris, vectors, embedding = pool
    store = make_store(synth.table(uris, vectors, embedding, fixed_size=True), rows_per_shard=300)
    table, _ = run(tmp_path, store, budget=40)
    assert table.equals(select_reference(vectors, uris, 40))
    half, _ = run(tmp_path, store, name="half", budget=40, dtype="float16")
    assert half.equals(select_reference(vectors, uris, 40, dtype="float16"))
    rounded = (vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)).astype(np.float16)
    assert half.equals(select_reference(rounded.astype(np.float32), uris, 40))  # same rounded vectors, same picks


def test_prob_sampling_is_seeded_and_shard_independent(ray_session, tmp_path, make_store, synth, pool):
    uris, vectors, embedding = pool
    store = make_store(synth.table(uris, vectors, embedding))
    one, _ = run(tmp_path, store, name="one", budget=25, sampling="prob", seed=8, shards=1)
    three, _ = run(tmp_path, store, name="three", budget=25, sampling="prob", seed=8, shards=2)
    assert one.equals(three)
    assert one.equals(select_reference(vectors, uris, 25, sampling="prob", seed=8))


def test_random_method(ray_session, tmp_path, make_store, synth, pool):
    uris, vectors, embedding = pool
    store = make_store(synth.table(uris, vectors, embedding))
    labeled = write_labeled(tmp_path, uris[:50], "parquet")
    first, _ = run(tmp_path, store, name="a", method="random", budget=100, seed=1, labeled=labeled)
    again, _ = run(tmp_path, store, name="b", method="random", budget=100, seed=1, labeled=labeled)
    other, _ = run(tmp_path, store, name="c", method="random", budget=100, seed=2, labeled=labeled)
    picked = first.column("uri").to_pylist()
    assert first.equals(again) and not first.equals(other)
    assert len(set(picked)) == 100 and not set(picked) & set(uris[:50])
    assert first.column("score").null_count == 100 and first.column("rank").to_pylist() == list(range(100))
    with pytest.raises(BudgetError, match="551"):
        run(tmp_path, store, name="d", method="random", budget=551, labeled=labeled)


def test_rerun_of_a_finished_selection_returns_it(ray_session, tmp_path, make_store, synth, pool, monkeypatch):
    uris, vectors, embedding = pool
    store = make_store(synth.table(uris, vectors, embedding))
    table, out = run(tmp_path, store, budget=10)
    from raysel.select.methods import geal

    monkeypatch.setattr(geal.GealMethod, "select", lambda *a: pytest.fail("recomputed"))
    again, _ = run(tmp_path, store, budget=10, shards=2)  # shards do not change the picks
    assert again.equals(table)


# --- bad inputs: a clear ValueError naming the problem, nothing written ---


def assert_nothing_written(tmp_path):
    assert not [p for p in os.listdir(tmp_path) if p.startswith("selection")]


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"budget": 0}, BudgetError, "budget must be >= 1"),
        ({"method": "nope"}, UnknownMethodError, r"valid methods: coreset, geal, .*random"),
        ({"sampling": "softmax"}, SelectionConfigError, "sampling"),
        ({"distance": "manhattan"}, SelectionConfigError, "distance"),
        ({"dtype": "int8"}, SelectionConfigError, "dtype"),
        ({"shards": 0}, SelectionConfigError, "shards"),
        ({"candidates": 0}, SelectionConfigError, "candidates"),
    ],
)
def test_bad_options(tmp_path, options, error, message):
    with pytest.raises(error, match=message):
        run_selection(SelectConfig(**{"store": str(tmp_path / "store"), "out": str(tmp_path / "selection.parquet"), "budget": 5, **options}))
    assert_nothing_written(tmp_path)


def test_bad_stores_and_labeled_files(ray_session, tmp_path, make_store, synth, pool):
    uris, vectors, embedding = pool
    good = synth.table(uris, vectors, embedding)
    cases = []

    empty = make_store(good.slice(0, 0), name="empty")
    cases.append(({"store": empty}, EmptyStoreError, "no rows"))
    cases.append(({"store": str(tmp_path / "missing")}, FeatureStoreError, "not a feature store"))

    store = make_store(good, name="good")
    cases.append(({"store": store, "budget": N + 1}, BudgetError, f"exceeds the unlabeled pool: {N} images"))
    cases.append(({"store": store, "budget": N - 2, "labeled": write_labeled(tmp_path, uris[:3], "csv")}, BudgetError, "3 labeled"))
    cases.append(({"store": store, "labeled": write_labeled(tmp_path, uris[:3] + ["s3://elsewhere/x.jpg"], "parquet")}, LabeledError, "elsewhere"))
    no_uri = str(tmp_path / "no_uri.parquet")
    pq.write_table(pa.table({"path": uris[:3]}), no_uri)
    cases.append(({"store": store, "labeled": no_uri}, LabeledError, "no 'uri' column"))

    nan = vectors.copy()
    nan[123, 2, 5] = np.nan  # raised inside an actor, re-raised as itself
    cases.append(({"store": make_store(synth.table(uris, nan, embedding), name="nan")}, InvalidVectorError, uris[123]))
    duplicated = synth.table(uris[:-1] + [uris[0]], vectors, embedding)  # twins on different shards
    cases.append(({"store": make_store(duplicated, name="dup"), "shards": 2}, DuplicateUriError, uris[0]))
    mixed_k = pa.concat_tables([synth.table(uris[:300], vectors[:300]), synth.table(uris[300:], vectors[300:, :3])])
    cases.append(({"store": make_store(mixed_k, name="mixed_k", rows_per_shard=300), "shards": 2}, InconsistentVectorsError, "K=4, D=12.*K=3, D=12"))

    for options, error, message in cases:
        config = {"store": store, "out": str(tmp_path / "selection.parquet"), "budget": 5, "shards": 1, **options}
        with pytest.raises(error, match=message):
            run_selection(SelectConfig(**config), progress=False)
        assert_nothing_written(tmp_path)


@pytest.mark.s3
def test_store_labeled_and_output_on_s3(ray_session, s3_endpoint, s3_bucket, synth, pool):
    from raysel.store import write_store
    from raysel.storage import StorageOptions, exists, read_json, read_parquet, write_parquet_atomic

    uris, vectors, embedding = pool
    options = StorageOptions(s3_endpoint=s3_endpoint)
    store = f"s3://{s3_bucket}/store"
    write_store(store, synth.table(uris, vectors, embedding), options=options, rows_per_shard=250)
    labeled = f"s3://{s3_bucket}/labeled.parquet"
    write_parquet_atomic(pa.table({"uri": uris[:4]}), labeled, options)
    out = f"s3://{s3_bucket}/runs/selection.parquet"
    config = SelectConfig(store=store, out=out, budget=30, shards=2, labeled=labeled, s3_endpoint=s3_endpoint, checkpoint_every=10)
    table = run_selection(config, progress=False)
    assert table.equals(select_reference(vectors, uris, 30, labeled=uris[:4]))
    assert read_parquet(out, options).equals(table)
    assert read_json(out + ".config.json", options)["config"]["labeled"] == labeled
    assert not exists(out + ".checkpoint.json", options)
