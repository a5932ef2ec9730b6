"""Shard actors on Ray: pruned passes, the work they record, their memory declaration, float16 loading."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from raysel.config import SelectConfig
from raysel.select import run_selection, select_reference
from raysel.select.errors import SelectionConfigError
from raysel.select.kcenter.method import shard_memory_bytes
from raysel.select.pool.store_rows import plan_shards
from raysel.store import FeatureStore

pytestmark = pytest.mark.ray


def test_pruned_and_unpruned_runs_agree_and_record_their_work(ray_session, tmp_path, make_store, synth):
    rng = np.random.default_rng(3)
    latent = rng.uniform(-3, 3, (600, 1, 2)) + 0.1 * rng.standard_normal((600, 3, 2))
    vectors = (latent @ rng.standard_normal((2, 8)) + 2.0).astype(np.float32)  # low-dimensional: the bounds skip work
    uris = synth.uris(600, seed=3)
    store = make_store(synth.table(uris, vectors), rows_per_shard=150)
    expected = select_reference(vectors, uris, 50, seed=2, dtype="float16")
    figures = {}
    for no_pruning, kernel in ((False, "numpy"), (True, "numpy"), (False, "torch")):
        out = str(tmp_path / f"selection-{no_pruning}-{kernel}.parquet")
        config = SelectConfig(store=store, out=out, budget=50, seed=2, shards=2, candidates=8, dtype="float16",
                              no_pruning=no_pruning, shard_kernel=kernel)
        table = run_selection(config, progress=False)
        if kernel == "torch":  # the same images in the same order; scores to the last bits (torch_kernel.py)
            assert table.column("uri").equals(expected.column("uri"))
            assert all(s["kernel"].startswith("torch") for s in json.load(open(out + ".config.json"))["stats"]["shards"])
            continue
        assert table.equals(expected)
        assert pq.read_table(out).equals(table)
        figures[no_pruning] = json.load(open(out + ".config.json"))["stats"]
    pruned, unpruned = figures[False], figures[True]
    assert pruned["passes"] == unpruned["passes"] == pruned["round_trips"]  # one pass over the vectors per round trip
    assert pruned["distance_evaluations"] * 3 < unpruned["distance_evaluations"], (pruned, unpruned)
    assert all(shard["pruning"] for shard in pruned["shards"]) and not any(s["pruning"] for s in unpruned["shards"])
    assert all(shard["vector_bytes"] == shard["rows"] * 3 * 8 * 2 for shard in pruned["shards"])  # float16 storage


def test_shard_memory_is_declared_from_the_footers(tmp_path, make_store, synth):
    vectors = synth.vectors(400, 4, 32, seed=1)
    store = FeatureStore(make_store(synth.table(synth.uris(400), vectors), rows_per_shard=100))
    plan = plan_shards(store, 2)
    float32 = [shard_memory_bytes(store, part, "clusters", "float32") for part in plan]
    float16 = [shard_memory_bytes(store, part, "clusters", "float16") for part in plan]
    vector_bytes = 200 * 4 * 32 * 4
    assert all(value - 256 * 2**20 >= vector_bytes for value in float32)
    assert all(0 < a - b <= vector_bytes for a, b in zip(float32, float16))
    with pytest.raises(SelectionConfigError, match="--shard-kernel must be one of"):
        run_selection(SelectConfig(store=store.uri, out=str(tmp_path / "s.parquet"), budget=5, shard_kernel="cuda"))
    assert not (tmp_path / "s.parquet").exists()
