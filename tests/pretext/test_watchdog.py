"""`pretext train --stall-timeout`: a run whose training workers cannot be placed ends with StallError, aborted."""
from __future__ import annotations

import time

import pytest

from raysel.config import PretextConfig
from raysel.pretext.training import train_pretext
from raysel.runtime import StallError
from shape_pool import write_shape_pool

pytestmark = [pytest.mark.ray, pytest.mark.torch]


def test_training_that_cannot_start_on_a_busy_cluster_stops_after_the_stall_timeout(ray_session, tmp_path):
    ray = ray_session
    write_shape_pool(tmp_path / "pool", count=8)
    # Another job holds all but 1.5 CPUs: the run fits the cluster (resource check passes) and its decode
    # tasks run, but the training worker (2 CPUs) cannot be placed, so no step ever finishes.
    cpus = ray.cluster_resources()["CPU"]
    assert cpus >= 3.5, "needs a Ray session with room for 2 CPUs per worker + 1 decode CPU"
    blocker = ray.remote(num_cpus=cpus - 1.5)(type("Blocker", (), {"ready": lambda self: True})).remote()
    ray.get(blocker.ready.remote(), timeout=60)
    config = PretextConfig(source=str(tmp_path / "pool"), out=str(tmp_path / "rot.pt"), model="test_resnet",
                           image_size=32, epochs=1, batch_size=4, cpus_per_worker=2, stall_timeout=3)
    started = time.time()
    try:
        with pytest.raises(StallError, match=r"no progress for 3 s \(--stall-timeout; last seen: no training step finished yet"):
            train_pretext(config)
        assert time.time() - started < 90
    finally:
        ray.kill(blocker)
    # The run was aborted, not left waiting: its workers' placement group goes, and nothing trains once CPUs are free.
    from ray.util import placement_group_table

    deadline = time.time() + 30
    while time.time() < deadline:
        live = [pg for pg in placement_group_table().values() if pg["state"] in ("PENDING", "CREATED", "RESCHEDULING")]
        if not live:
            break
        time.sleep(0.5)
    assert not live, live
    time.sleep(2)
    assert not (tmp_path / "rot.pt").exists()
