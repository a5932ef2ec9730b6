"""PT4AL end to end on a real embedded Ray: train (2 Ray Train workers, killed and resumed), featurize --pretext, select cycles.

One chain of module fixtures, so the expensive steps run once:
pool -> trained (a CLI run killed after its first checkpoint, then resumed) -> store -> cycles 0..2.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from raysel import schema
from raysel.config import FeaturizeConfig, PretextConfig, SelectConfig
from raysel.pretext import checkpoints
from raysel.pretext.rotation import PretextError
from raysel.pretext.training import PAUSE_AFTER_EPOCH_ENV, train_pretext
from raysel.store import FeatureStore
from shape_pool import write_labels, write_shape_pool

pytestmark = [pytest.mark.ray, pytest.mark.torch]
IMAGES, CYCLES, BUDGET = 48, 3, 8
TRAIN_ARGS = {"model": "test_resnet", "image_size": 32, "epochs": 2, "batch_size": 16, "num_workers": 2, "shuffle_buffer": 32}


def cli_flags(values: dict) -> list[str]:
    return [part for key, value in values.items() for part in (f"--{key.replace('_', '-')}", str(value))]


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pt4al") / "pool"
    return str(folder), write_shape_pool(folder, count=IMAGES)


@pytest.fixture(scope="module")
def trained(pool, ray_session):
    """`raysel pretext train` in a subprocess, SIGKILLed after epoch 1's checkpoint; then the same run again, in process."""
    folder, _ = pool
    out = os.path.join(os.path.dirname(folder), "pretext.pt")
    config = PretextConfig(source=folder, out=out, **TRAIN_ARGS)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", PAUSE_AFTER_EPOCH_ENV: "120"}
    log = open(os.path.join(os.path.dirname(folder), "killed-run.log"), "w")
    # Relative paths, from the pool's parent folder: the Train workers run elsewhere and must still find them.
    process = subprocess.Popen(
        [sys.executable, "-m", "raysel.cli", "pretext", "train", "pool", "--out", "pretext.pt", *cli_flags(TRAIN_ARGS),
         "--num-cpus", "3"],
        env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT, cwd=os.path.dirname(folder),
    )
    first = os.path.join(config.checkpoints(), checkpoints.checkpoint_name(1))
    deadline = time.time() + 180
    while time.time() < deadline and not os.path.exists(first) and process.poll() is None:
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)  # the driver, its Ray and the Train workers: a hard crash
    process.wait(timeout=30)
    log.close()
    assert os.path.exists(first), open(log.name).read()[-3000:]
    assert not os.path.exists(out), "the run must be killed before it finishes for this test to mean anything"
    killed_history = checkpoints.load(first)["history"]

    summary = train_pretext(config)  # the shared session's Ray; no pause this time
    return config, summary, killed_history


@pytest.fixture(scope="module")
def store(pool, trained, ray_session):
    from raysel.pipeline import featurize

    folder, _ = pool
    config, _, _ = trained
    store_dir = os.path.join(os.path.dirname(folder), "store")
    featurize(
        FeaturizeConfig(source=folder, out=store_dir, model="test_vit", random_init=True, clusters=2, batch_size=16,
                        chunk_size=24, pretext=config.out),
        progress=False,
    )
    return store_dir


def test_killed_two_worker_run_resumes_from_its_last_checkpoint(trained):
    config, summary, killed_history = trained
    assert summary.resumed_from_epoch == 1 and not summary.skipped
    assert summary.workers == 2 and summary.device == "cpu"
    assert len(summary.history) == 2 and summary.history[0] == killed_history[0]  # epoch 1 was not redone
    assert all(np.isfinite(summary.history)) and summary.images_per_second > 0
    assert [checkpoints.epochs_of(u) for u in checkpoints.checkpoint_uris(config.checkpoints())] == [1, 2]
    net, spec, meta = checkpoints.load_model(config.out)
    assert spec.image_size == 32 and meta["history"] == summary.history and meta["model_name"] == "test_resnet"


def test_rerun_is_a_no_op_and_other_settings_are_refused(trained, tmp_path):
    config, summary, _ = trained
    again = train_pretext(config)
    assert again.skipped and again.history == summary.history
    with pytest.raises(PretextError, match="other settings.*lr"):
        train_pretext(dataclasses.replace(config, lr=0.05))
    with pytest.raises(PretextError, match="checkpoints of a run with other settings"):
        train_pretext(dataclasses.replace(config, out=str(tmp_path / "new.pt"), checkpoint_dir=config.checkpoints(), seed=1))


def test_featurize_pretext_stores_each_images_rotation_loss(pool, trained, store):
    from raysel.images import DecodeBatch
    from raysel.pretext.scorer import PretextScorer
    from raysel.storage import StorageOptions

    folder, oracle = pool
    config, _, _ = trained
    rows = FeatureStore(store).iter_tables(columns=[schema.URI, schema.PRETEXT_LOSS])
    stored = {u: l for table in rows for u, l in zip(table.column(schema.URI).to_pylist(), table.column(schema.PRETEXT_LOSS).to_pylist())}
    assert sorted(stored) == sorted(oracle)
    # Reference: the images as pretext training decodes them (32 px, straight from the bytes), then the scorer
    # alone, no Ray. featurize decodes both sizes from the same bytes; scoring must see training's tensors.
    from raysel.pretext.data import DecodeForTraining
    from raysel.pretext.scorer import PRETEXT_IMAGE

    uris = sorted(oracle)
    as_trained = DecodeForTraining(DecodeBatch(32, 10**8, StorageOptions()))({"uri": np.array(uris, dtype=object)})["image"]
    as_scored = DecodeBatch(160, 10**8, StorageOptions(), extra_sizes={PRETEXT_IMAGE: 32})({"uri": np.array(uris, dtype=object)})
    np.testing.assert_array_equal(as_scored[PRETEXT_IMAGE], as_trained)
    expected = PretextScorer(config.out)({"image": as_trained})[schema.PRETEXT_LOSS]
    np.testing.assert_allclose([stored[u] for u in uris], expected, rtol=1e-4, atol=1e-5)


def test_pt4al_cycles_with_an_oracle(pool, store, tmp_path):
    from raysel.select import run_selection
    from raysel.select.methods.pt4al import pretext_batches, read_pretext_losses

    _, oracle = pool
    batches = pretext_batches(*read_pretext_losses(FeatureStore(store)), CYCLES)
    labels: dict[str, int] = {}
    for cycle in range(CYCLES):
        labeled = write_labels(tmp_path / f"labels-{cycle}.csv", labels) if labels else None
        picks = run_selection(
            SelectConfig(store=store, out=str(tmp_path / f"cycle-{cycle}.parquet"), method="pt4al", budget=BUDGET,
                         cycles=CYCLES, cycle=cycle, labeled=labeled)
        ).column(schema.URI).to_pylist()
        assert len(picks) == BUDGET and set(picks) <= set(batches[cycle]) and not set(picks) & set(labels)
        if cycle == 0:
            assert picks == batches[0][::2]  # every (16 / 8)-th image of the hardest batch
        labels.update({uri: oracle[uri] for uri in picks})  # the oracle labels what was picked
    assert len(labels) == CYCLES * BUDGET
