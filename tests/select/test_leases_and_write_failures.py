"""Two runs into one output get a clear error; failed writes name the path, leave nothing half-written, and resume.

Read-only folders and full disks are real: a tmpfs mounted read-only or a few KiB small (root),
or a folder without write permission (any other user).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from raysel import storage
from raysel.config import FeaturizeConfig, SelectConfig
from raysel.select import run_selection, select_reference
from raysel.store import write_store
from raysel.storage import LeaseError, StorageWriteError

N, K, D, BUDGET = 400, 2, 6, 300


@pytest.fixture
def live_owner():
    """A process of this host that is alive while the test runs: the holder of a foreign lease."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process.pid
    process.kill()
    process.wait()


def write_lease(uri: str, pid: int, host: str | None = None, heartbeat: float | None = None) -> None:
    import time

    owner = {"host": host or socket.gethostname(), "pid": pid, "token": "other", "heartbeat": heartbeat or time.time()}
    storage.write_json_atomic(uri, owner)


@pytest.fixture
def store(tmp_path, synth):
    uris = synth.uris(N, seed=1)
    vectors = synth.vectors(N, K, D, seed=1)
    path = str(tmp_path / "store")
    write_store(path, synth.table(uris, vectors), rows_per_shard=200)
    return path, uris, vectors


# ----------------------------------------------------------------------------- leases


@pytest.mark.pure
def test_staleness_rule():
    import time

    host = socket.gethostname()
    assert storage.lease_is_stale({"host": host, "pid": 2**22 + 12345, "heartbeat": time.time()})  # pid gone
    assert not storage.lease_is_stale({"host": host, "pid": os.getpid(), "heartbeat": 0})  # pid alive here
    assert storage.lease_is_stale({"host": "elsewhere", "pid": 1, "heartbeat": time.time() - 3600})
    assert not storage.lease_is_stale({"host": "elsewhere", "pid": 1, "heartbeat": time.time()})


@pytest.mark.ray
def test_second_select_into_the_same_out_is_refused(ray_session, tmp_path, store, live_owner):
    path, uris, vectors = store
    out = str(tmp_path / "selection.parquet")
    write_lease(out + ".lease", live_owner)
    with pytest.raises(LeaseError, match=rf"--out {out} is being written by another run \(host .*, pid {live_owner}"):
        run_selection(SelectConfig(store=path, out=out, budget=10), progress=False)
    assert not os.path.exists(out) and not os.path.exists(out + ".checkpoint.json")
    assert json.load(open(out + ".lease"))["pid"] == live_owner  # not taken from a live run


@pytest.mark.ray
def test_stale_lease_of_a_dead_run_is_taken_over(ray_session, tmp_path, store):
    path, uris, vectors = store
    out = str(tmp_path / "selection.parquet")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_lease(out + ".lease", dead.pid)
    table = run_selection(SelectConfig(store=path, out=out, budget=10), progress=False)
    assert table.equals(select_reference(vectors, uris, 10))
    assert not os.path.exists(out + ".lease")  # released


@pytest.mark.torch
def test_second_featurize_into_the_same_store_is_refused(tmp_path, live_owner):
    from raysel.pipeline import STORE_LEASE_FILE, featurize
    from raysel.sample_pool import make_sample_pool

    make_sample_pool(str(tmp_path / "pool"), count=4, seed=0)
    out = tmp_path / "store"
    write_lease(str(out / STORE_LEASE_FILE), live_owner)
    config = FeaturizeConfig(source=str(tmp_path / "pool"), out=str(out), model="test_vit", random_init=True)
    with pytest.raises(LeaseError, match=f"feature store {out} is being written by another run"):
        featurize(config, progress=False)
    assert sorted(os.listdir(out)) == [STORE_LEASE_FILE]  # no manifest, no shard, nothing interleaved


# ----------------------------------------------------------------------------- failing writes


def mount_tmpfs(path: str, options: str) -> bool:
    os.makedirs(path, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", path], capture_output=True).returncode == 0


def unmount(path: str) -> None:
    subprocess.run(["umount", path], capture_output=True)


@pytest.fixture
def read_only_folder(tmp_path):
    """(folder, make_writable): a folder this process cannot write into, and the fix."""
    folder = str(tmp_path / "ro")
    if os.geteuid() == 0:
        if not mount_tmpfs(folder, "size=1m,ro"):
            pytest.skip("running as root without the right to mount a tmpfs: no way to make a read-only folder")
        yield folder, lambda: subprocess.run(["mount", "-o", "remount,rw", folder], check=True)
        unmount(folder)
    else:
        os.makedirs(folder)
        os.chmod(folder, 0o555)
        yield folder, lambda: os.chmod(folder, 0o755)
        os.chmod(folder, 0o755)


@pytest.mark.ray
def test_select_into_a_read_only_folder_names_the_path_and_resumes_once_fixed(ray_session, store, read_only_folder):
    path, uris, vectors = store
    folder, make_writable = read_only_folder
    out = os.path.join(folder, "selection.parquet")
    with pytest.raises(StorageWriteError, match=f"cannot write {out}"):
        run_selection(SelectConfig(store=path, out=out, budget=BUDGET, checkpoint_every=0), progress=False)
    assert os.listdir(folder) == []
    make_writable()
    table = run_selection(SelectConfig(store=path, out=out, budget=BUDGET, checkpoint_every=0), progress=False)
    assert table.equals(select_reference(vectors, uris, BUDGET))


@pytest.mark.ray
def test_select_onto_a_full_disk_leaves_no_partial_output(ray_session, tmp_path, store):
    if os.geteuid() != 0:
        pytest.skip("a full disk needs a tiny tmpfs, which only root can mount")
    path, uris, vectors = store
    folder = str(tmp_path / "full")
    if not mount_tmpfs(folder, "size=8k"):
        pytest.skip("no right to mount a tmpfs")
    try:
        out = os.path.join(folder, "selection.parquet")
        with pytest.raises(StorageWriteError, match=f"cannot write {out}.*No space left on device"):
            run_selection(SelectConfig(store=path, out=out, budget=BUDGET, checkpoint_every=0), progress=False)
        assert not os.path.exists(out) and not [n for n in os.listdir(folder) if ".tmp-" in n]
        subprocess.run(["mount", "-o", "remount,size=1m", folder], check=True)  # the fix: more room
        table = run_selection(SelectConfig(store=path, out=out, budget=BUDGET, checkpoint_every=0), progress=False)
        assert table.equals(select_reference(vectors, uris, BUDGET))
    finally:
        unmount(folder)
