"""README.md's "Run on a Ray cluster" block, run from the README's own text, on a machine where raysel already ran.

The block is cut out of README.md at test time (so the two cannot drift apart) and run by bash as
written, with only the adaptations the README states next to it: its own folder for EXAMPLE, free
ports (`--port P --dashboard-port D --dashboard-agent-listen-port A` on `ray start`, D in `--address`,
`RAY_ADDRESS` after `ray start` so that `--address auto` joins this cluster among others on the machine), and, instead of `ray stop`
(which would stop every Ray of this user on the machine), a stop by pid of what the block started.
HOME is a fresh folder where an embedded Ray has already run, so `~/.ray/auth_token` exists there,
as it does after the README's first command.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from raysel.store import FeatureStore

from local_cluster import free_port

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Run on a Ray cluster"


def readme_cluster_commands(readme: str) -> list[str]:
    """The shell commands of the section's first bash block, up to `ray stop`, continuation lines joined."""
    section = readme[readme.index(SECTION):]
    block = section[section.index("```bash") + len("```bash"):]
    block = block[: block.index("```")]
    commands, current = [], ""
    for line in block.splitlines():
        current += line
        if current.endswith("\\"):
            current = current[:-1]
            continue
        command = re.sub(r"\s+#\s.*$", "", current).strip()  # a trailing comment, as bash would drop it
        current = ""
        if command and not command.startswith("#"):
            commands.append(command)
        if command.startswith("ray stop"):
            break
    return commands


def adapt(commands: list[str], example: str, port: int, dashboard_port: int, agent_port: int) -> list[str]:
    """The README's stated adaptations, and nothing else."""
    adapted = []
    for command in commands:
        if command.startswith("ray stop"):
            continue  # stopped by pid below
        if command.startswith("EXAMPLE="):
            command = f"EXAMPLE={example}"
        if command.startswith("ray start"):
            command += f" --port {port} --dashboard-port {dashboard_port} --dashboard-agent-listen-port {agent_port}"
            adapted += [command, f"export RAY_ADDRESS=127.0.0.1:{port}"]
            continue
        adapted.append(command.replace("127.0.0.1:8265", f"127.0.0.1:{dashboard_port}"))
    return adapted


def started_pids(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if marker.encode() in handle.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def test_readme_extraction_finds_the_commands():
    commands = readme_cluster_commands((REPO / "README.md").read_text())
    assert commands[0] == "export RAY_AUTH_MODE=token"
    assert any(c.startswith("ray start --head") for c in commands)
    assert any(c.startswith("ray job submit") and "run_selection_job.py" in c for c in commands)
    assert commands[-1].startswith("ray stop")


@pytest.mark.timeout(600)
def test_readme_cluster_section_runs_as_written(tmp_path):
    bin_dir = os.path.dirname(sys.executable)
    home = tempfile.mkdtemp(prefix="rs-home-", dir="/tmp")
    ray_tmp = tempfile.mkdtemp(prefix="rs-", dir="/tmp")  # short: Ray's socket paths live under it
    marker = f"RAYSEL_README_TEST={uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    env.update(HOME=home, RAY_TMPDIR=ray_tmp, PATH=bin_dir + os.pathsep + env.get("PATH", ""),
               RAY_DEDUP_LOGS="0", **dict([marker.split("=", 1)]))
    try:
        # a machine where raysel already ran: its embedded Ray left ~/.ray/auth_token
        subprocess.run([sys.executable, "-c", "import ray; ray.init(num_cpus=1, include_dashboard=False); ray.shutdown()"],
                       env=env, check=True, capture_output=True, timeout=120)
        assert os.path.exists(os.path.join(home, ".ray", "auth_token"))

        example = str(tmp_path / "example")
        commands = adapt(readme_cluster_commands((REPO / "README.md").read_text()), example, free_port(), free_port(), free_port())
        script = "set -euo pipefail\n" + "\n".join(commands) + "\n"
        result = subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=420)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert "Authentication required" not in result.stdout + result.stderr
        assert "succeeded" in (result.stdout + result.stderr).lower()
        assert pq.read_table(os.path.join(example, "selection.parquet")).num_rows == 8  # example.yaml's budget
        # `raysel featurize --address auto` featurized the whole pool, as the job did.
        store2, job_store = (FeatureStore(os.path.join(example, name)) for name in ("store2", "store"))
        assert store2.is_complete() and store2.num_rows() == job_store.num_rows() > 0
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in started_pids(marker):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            time.sleep(3 if sig == signal.SIGTERM else 0)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(ray_tmp, ignore_errors=True)
