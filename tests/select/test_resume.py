"""Resume: a killed driver continues from its checkpoint; a killed shard actor is restarted and replayed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pyarrow.parquet as pq
import pytest

from actor_kills import kill_and_wait_for_restart
from raysel.config import SelectConfig
from raysel.select import kcenter_greedy_reference, run_selection, select_reference
from raysel.select.base import picks_of
from raysel.select.kcenter.driver import run_kcenter
from raysel.store import FeatureStore

pytestmark = pytest.mark.ray

# Runs one selection on the test session's Ray cluster and SIGKILLs itself right
# after writing its first checkpoint: a driver killed mid-run, deterministically.
KILLED_DRIVER = textwrap.dedent(
    """
    import os, signal, sys
    import ray
    ray.init(address=sys.argv[1], log_to_driver=False, configure_logging=False)
    from raysel.config import SelectConfig
    from raysel.select import checkpoint, run_selection

    write_checkpoint = checkpoint.write_checkpoint

    def write_then_die(*args, **kwargs):
        write_checkpoint(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)

    checkpoint.write_checkpoint = write_then_die
    run_selection(SelectConfig(store=sys.argv[2], out=sys.argv[3], budget=90, shards=1, candidates=4,
                               checkpoint_every=20, sampling=sys.argv[4]), progress=False)
    """
)


def test_rerun_after_killed_driver_continues_to_the_same_selection(ray_session, tmp_path, make_store, synth):
    sampling = "greedy"
    uris = synth.uris(500, seed=6)
    vectors = synth.vectors(500, 3, 8, seed=6)
    store = make_store(synth.table(uris, vectors))
    out = str(tmp_path / "selection.parquet")
    address = ray_session.get_runtime_context().gcs_address
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_DRIVER, address, store, out, sampling], capture_output=True, text=True, timeout=120
    )
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not os.path.exists(out)
    saved = json.load(open(out + ".checkpoint.json"))
    assert 20 <= len(saved["picks"]) < 90

    table = run_selection(
        SelectConfig(store=store, out=out, budget=90, shards=2, candidates=4, checkpoint_every=20, sampling=sampling),
        progress=False,
    )
    assert table.equals(select_reference(vectors, uris, 90, sampling=sampling))
    assert pq.read_table(out).equals(table)
    stats = json.load(open(out + ".config.json"))["stats"]
    assert stats["resumed_picks"] == len(saved["picks"])
    assert not os.path.exists(out + ".checkpoint.json")


def test_prob_sampling_resumes_from_a_checkpoint(ray_session, tmp_path, make_store, synth):
    from raysel.select import checkpoint
    from raysel.select.runner import resolve_config
    from raysel.select.pool.store_rows import file_row_counts

    uris = synth.uris(300, seed=3)
    vectors = synth.vectors(300, 3, 8, seed=3)
    store = make_store(synth.table(uris, vectors))
    out = str(tmp_path / "selection.parquet")
    config = SelectConfig(store=store, out=out, budget=40, sampling="prob", seed=4)
    expected = select_reference(vectors, uris, 40, sampling="prob", seed=4)
    from raysel.fingerprints import store_state

    handle = FeatureStore(store)
    fingerprint = checkpoint.fingerprint(resolve_config(config), store_state(handle, file_row_counts(handle)), [])
    checkpoint.write_checkpoint(out, fingerprint, picks_of(expected)[:17])
    table = run_selection(config, progress=False)
    assert table.equals(expected)
    assert json.load(open(out + ".config.json"))["stats"]["resumed_picks"] == 17


def test_checkpoint_of_another_configuration_is_ignored(ray_session, tmp_path, make_store, synth):
    uris = synth.uris(200, seed=1)
    vectors = synth.vectors(200, 2, 6, seed=1)
    store = make_store(synth.table(uris, vectors))
    out = str(tmp_path / "selection.parquet")
    from raysel.select import checkpoint

    checkpoint.write_checkpoint(out, "another-configuration", picks_of(select_reference(vectors, uris, 5, seed=9)))
    table = run_selection(SelectConfig(store=store, out=out, budget=20, seed=1), progress=False)
    assert table.equals(select_reference(vectors, uris, 20, seed=1))


def test_killed_shard_actor_is_restarted_and_replayed(ray_session, synth, make_store):
    from raysel.select.kcenter.shard_actor import RayShardGroup
    from raysel.select.pool.store_rows import plan_shards

    uris = synth.uris(900, seed=2)
    vectors = synth.vectors(900, 3, 8, seed=2)
    labeled = uris[::97]
    store = FeatureStore(make_store(synth.table(uris, vectors), rows_per_shard=200))
    group = RayShardGroup(store, plan_shards(store, 3), "clusters", "cosine", "float32", seeds=labeled)
    kills = []

    def kill_mid_round(method, group):
        if method == "propose" and len(group.history) == 5:  # the third pass: calls are in flight
            kills.append(group.actors[1])
            ray_session.kill(group.actors[1], no_restart=False)

    group.after_submit = kill_mid_round
    try:
        picks, stats = run_kcenter(group, 120, "cosine", candidates=8, labeled=labeled)
    finally:
        group.close()
    assert len(kills) == 1 and group.recoveries >= 1
    assert picks == kcenter_greedy_reference(vectors, uris, 120, "cosine", labeled=labeled)


@pytest.mark.parametrize("labeled", [False, True])
def test_shard_actor_lost_right_after_loading_is_reloaded_and_replayed(ray_session, synth, make_store, labeled):
    """Killed after its `load` finished, the actor comes back empty: the next call must reload it, not fail."""
    from raysel.select.kcenter.shard_actor import RayShardGroup
    from raysel.select.pool.store_rows import plan_shards

    uris = synth.uris(600, seed=4)
    vectors = synth.vectors(600, 3, 8, seed=4)
    store = FeatureStore(make_store(synth.table(uris, vectors), rows_per_shard=200))
    seeds = uris[::53] if labeled else []  # labeled: the seed batches come from the reloaded actor
    group = RayShardGroup(store, plan_shards(store, 3), "clusters", "cosine", "float32", seeds=seeds)

    def kill_after_load(method, group):
        if method != "load":
            return
        actor = group.actors[2]
        assert ray_session.get(actor.stats.remote(), timeout=60)["rows"] == 200  # queued behind load: load is done
        kill_and_wait_for_restart(ray_session, actor)

    group.after_submit = kill_after_load
    try:
        picks, _ = run_kcenter(group, 40, "cosine", candidates=8, labeled=seeds)
    finally:
        group.close()
    assert group.recoveries == 1
    assert picks == kcenter_greedy_reference(vectors, uris, 40, "cosine", labeled=seeds)


def test_seed_batches_of_an_actor_lost_before_them_are_made_again(ray_session, synth, make_store):
    from raysel.select.kcenter.shard_actor import RayShardGroup
    from raysel.select.pool.store_rows import plan_shards

    uris = synth.uris(400, seed=6)
    store = FeatureStore(make_store(synth.table(uris, synth.vectors(400, 3, 8, seed=6)), rows_per_shard=200))
    group = RayShardGroup(store, plan_shards(store, 2), "clusters", "cosine", "float32", seeds=uris[::40])
    try:
        group.start(0)
        kill_and_wait_for_restart(ray_session, group.actors[1])
        batches = ray_session.get(group.seed_batches(), timeout=60)  # not an error carried into every pass
        assert group.recoveries == 1 and len(batches) == 2
    finally:
        group.close()
