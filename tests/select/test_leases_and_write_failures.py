"""Two runs into one output get a clear error; failed writes name the path, leave nothing half-written, and resume.

Two runs at once are two real `raysel` processes started together; whichever takes the lease is
held (SIGSTOP) until the other has met it, so the overlap does not depend on timing.

Read-only folders and full disks are real: a folder with the immutable attribute or a tmpfs mounted
read-only, a tmpfs a few KiB small (root),
or a folder without write permission (any other user).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pyarrow as pa
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


RAYSEL = [sys.executable, "-m", "raysel.cli"]


def lease_owner_pid(lease: str, pids: set[int], deadline: float) -> int:
    """The pid of the process (one of `pids`) named in `lease`, once it appears; fails the test at `deadline`."""
    while time.time() < deadline:
        try:
            with open(lease) as handle:
                pid = json.load(handle).get("pid")
            if pid in pids:
                return pid
        except (FileNotFoundError, ValueError):  # not yet there, or being written
            pass
        time.sleep(0.01)
    raise AssertionError(f"no lease {lease} by one of {sorted(pids)} within the time")


def two_runs_at_once(command: list[str], lease: str, folder, timeout: float = 240.0) -> tuple[dict, dict]:
    """Start `command` twice together; hold the lease owner (SIGSTOP) until the other exits, then let it finish.

    Returns (owner, other): each {"pid", "code", "stdout", "stderr"}. Waits are bounded; only these two pids are
    signalled or killed.
    """
    deadline = time.time() + timeout
    runs = []
    for index in range(2):
        stdout, stderr = open(folder / f"run{index}.out", "w+"), open(folder / f"run{index}.err", "w+")
        runs.append({"process": subprocess.Popen(command, stdout=stdout, stderr=stderr, text=True),
                     "files": (stdout, stderr)})
    try:
        owner_pid = lease_owner_pid(lease, {run["process"].pid for run in runs}, deadline)
        owner = next(run for run in runs if run["process"].pid == owner_pid)
        other = next(run for run in runs if run is not owner)
        os.kill(owner_pid, signal.SIGSTOP)  # the owner is alive and holds the lease while the other starts
        try:
            other["process"].wait(timeout=max(deadline - time.time(), 1))
        finally:
            os.kill(owner_pid, signal.SIGCONT)
        owner["process"].wait(timeout=max(deadline - time.time(), 1))
    finally:
        for run in runs:
            if run["process"].poll() is None:
                run["process"].kill()
                run["process"].wait()
    results = []
    for run in (owner, other):
        texts = []
        for handle in run["files"]:
            handle.seek(0)
            texts.append(handle.read())
            handle.close()
        results.append({"pid": run["process"].pid, "code": run["process"].returncode,
                        "stdout": texts[0], "stderr": texts[1]})
    return results[0], results[1]


@pytest.mark.ray
def test_two_select_processes_into_one_out_one_writes_the_other_is_refused(ray_session, tmp_path, store):
    path, uris, vectors = store
    solo = str(tmp_path / "solo" / "selection.parquet")
    run_selection(SelectConfig(store=path, out=solo, budget=BUDGET), progress=False)
    out = str(tmp_path / "selection.parquet")
    address = ray_session.get_runtime_context().gcs_address  # both join the session's Ray: no Ray start each
    command = [*RAYSEL, "select", path, "--out", out, "--budget", str(BUDGET), "--address", address, "--no-progress"]
    owner, other = two_runs_at_once(command, out + ".lease", tmp_path)
    assert owner["code"] == 0 and f"selected {BUDGET} images -> {out}" in owner["stdout"], owner
    assert other["code"] == 2, other
    lines = [line for line in other["stderr"].splitlines() if line.startswith("raysel: error:")]  # Ray logs its connect
    assert len(lines) == 1 and "Traceback" not in other["stderr"], other["stderr"]
    assert (f"--out {out} is being written by another run (host {socket.gethostname()}, pid {owner['pid']}"
            in lines[0]), lines
    # The output and its record are whole and equal a solo run's; no lease, checkpoint or temporary file is left.
    assert storage.read_parquet(out).equals(storage.read_parquet(solo))
    written, alone = json.load(open(out + ".config.json")), json.load(open(solo + ".config.json"))
    assert written["fingerprint"] == alone["fingerprint"]
    assert {**written["config"], "out": None} == {**alone["config"], "out": None}
    assert sorted(os.listdir(tmp_path)) == sorted(["solo", "store", "run0.out", "run0.err", "run1.out", "run1.err",
                                                   "selection.parquet", "selection.parquet.config.json"])


def mount_tmpfs(path: str, options: str) -> bool:
    os.makedirs(path, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", path], capture_output=True).returncode == 0


def unmount(path: str) -> None:
    subprocess.run(["umount", path], capture_output=True)


def cannot_write_into(folder: str) -> bool:
    """Whether creating a file in `folder` fails for this process (the check that a way to forbid it worked)."""
    probe = os.path.join(folder, "probe")
    try:
        open(probe, "w").close()
    except OSError:
        return True
    os.remove(probe)
    return False


def set_immutable(folder: str, on: bool) -> bool:
    return subprocess.run(["chattr", "+i" if on else "-i", folder], capture_output=True).returncode == 0


@pytest.fixture
def read_only_folder(tmp_path):
    """(folder, make_writable): a folder this process cannot write into, and the fix.

    Not root: permissions (0o555). Root, whom permissions do not stop: the immutable attribute
    (`chattr +i`, ext4/xfs/btrfs, no mount needed), else a tmpfs mounted read-only.
    """
    folder = str(tmp_path / "ro")
    os.makedirs(folder)
    if os.geteuid() != 0:
        os.chmod(folder, 0o555)
        assert cannot_write_into(folder)
        yield folder, lambda: os.chmod(folder, 0o755)
        os.chmod(folder, 0o755)
    elif set_immutable(folder, True) and cannot_write_into(folder):
        yield folder, lambda: set_immutable(folder, False)
        set_immutable(folder, False)
    elif mount_tmpfs(folder, "size=1m,ro"):
        yield folder, lambda: subprocess.run(["mount", "-o", "remount,rw", folder], check=True)
        unmount(folder)
    else:
        pytest.skip("root, on a filesystem without the immutable attribute and without the right to mount a tmpfs")


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


@pytest.mark.torch
def test_featurize_into_a_read_only_folder_names_the_path_and_resumes_once_fixed(ray_session, tmp_path, read_only_folder):
    from raysel.pipeline import featurize
    from raysel.sample_pool import make_sample_pool
    from raysel.store import FeatureStore

    make_sample_pool(str(tmp_path / "pool"), count=4, seed=0)
    folder, make_writable = read_only_folder
    out = os.path.join(folder, "store")
    config = FeaturizeConfig(source=str(tmp_path / "pool"), out=out, model="test_vit", random_init=True, clusters=2,
                             batch_size=4, chunk_size=2)
    with pytest.raises(StorageWriteError, match=f"cannot write {out}/"):
        featurize(config, progress=False)
    assert os.listdir(folder) == []
    make_writable()
    summary = featurize(config, progress=False)
    assert summary.featurized == 4 and summary.failed == 0 and FeatureStore(out).is_complete()


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
