"""A result is reused only for the data it was computed from (raysel/fingerprints.py).

A store rebuilt at the same path, with the same shard names and row counts, must rerun the
selection (and drop a checkpoint of the old store), not return the old picks.
"""
from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest

from raysel.config import SelectConfig
from raysel.select import checkpoint, run_selection, select_reference
from raysel.select.base import Pick
from raysel.store import write_store

pytestmark = pytest.mark.ray

N, K, D, BUDGET = 300, 3, 8, 20


def rebuild(path: str, table) -> None:
    shutil.rmtree(path, ignore_errors=True)
    write_store(path, table, rows_per_shard=100)


def test_rebuilt_store_at_the_same_path_reruns_the_selection(ray_session, tmp_path, synth):
    uris = synth.uris(N, seed=2)
    old, new = synth.vectors(N, K, D, seed=2), synth.vectors(N, K, D, seed=3)
    store, out = str(tmp_path / "store"), str(tmp_path / "selection.parquet")
    rebuild(store, synth.table(uris, old))
    first = run_selection(SelectConfig(store=store, out=out, budget=BUDGET), progress=False)
    assert first.equals(select_reference(old, uris, BUDGET))

    rebuild(store, synth.table(uris, new))  # same uris, same shard names and row counts
    second = run_selection(SelectConfig(store=store, out=out, budget=BUDGET), progress=False)
    expected = select_reference(new, uris, BUDGET)
    assert not expected.equals(first)
    assert second.equals(expected)
    assert pq.read_table(out).equals(expected)
    assert json.load(open(out + ".config.json"))["fingerprint"] != ""


def test_checkpoint_of_the_old_store_is_not_resumed(ray_session, tmp_path, synth):
    uris = synth.uris(N, seed=5)
    old, new = synth.vectors(N, K, D, seed=5), synth.vectors(N, K, D, seed=6)
    store, out = str(tmp_path / "store"), str(tmp_path / "selection.parquet")
    rebuild(store, synth.table(uris, old))
    config = SelectConfig(store=store, out=out, budget=BUDGET, checkpoint_every=5)
    from raysel.fingerprints import store_state
    from raysel.select.pool.store_rows import file_row_counts
    from raysel.select.runner import resolve_config
    from raysel.store import FeatureStore

    handle = FeatureStore(store)
    old_fingerprint = checkpoint.fingerprint(resolve_config(config), store_state(handle, file_row_counts(handle)), [])
    old_picks = select_reference(old, uris, 10)
    checkpoint.write_checkpoint(out, old_fingerprint, [Pick(u, s) for u, s in zip(old_picks["uri"].to_pylist(), old_picks["score"].to_pylist())])

    rebuild(store, synth.table(uris, new))
    table = run_selection(config, progress=False)
    assert table.equals(select_reference(new, uris, BUDGET))
    assert json.load(open(out + ".config.json"))["stats"].get("resumed_picks", 0) == 0


def test_unchanged_store_still_reuses_the_finished_selection(ray_session, tmp_path, synth):
    uris = synth.uris(N, seed=7)
    vectors = synth.vectors(N, K, D, seed=7)
    store, out = str(tmp_path / "store"), str(tmp_path / "selection.parquet")
    rebuild(store, synth.table(uris, vectors))
    run_selection(SelectConfig(store=store, out=out, budget=BUDGET), progress=False)
    record = json.load(open(out + ".config.json"))
    again = run_selection(SelectConfig(store=store, out=out, budget=BUDGET), progress=False)
    assert again.equals(select_reference(vectors, uris, BUDGET))
    assert json.load(open(out + ".config.json")) == record  # not rewritten: nothing was recomputed
