"""A real multi-node Ray cluster on this machine, made of `ray start` processes, torn down by pid.

Each node runs `ray start --block` in its own process group with its own temp dir, so stopping the
cluster kills exactly the processes this test started (never a broad `ray stop`).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

from conftest import free_port

RAY = os.path.join(os.path.dirname(sys.executable), "ray")


def ray_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["RAY_AUTH_MODE"] = "disabled"  # explicit, whatever ~/.ray/auth_token holds
    env.pop("RAY_ADDRESS", None)
    env.update(extra)
    return env


class LocalRayCluster:
    def __init__(self, dashboard: bool = False):
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard_port = free_port() if dashboard else None
        self.dashboard = dashboard
        self.temp_dir = tempfile.mkdtemp(prefix="raysel-ray-", dir="/tmp")
        self.nodes: list[subprocess.Popen] = []

    def _start(self, args: list[str]) -> subprocess.Popen:
        log = open(os.path.join(self.temp_dir, f"node-{len(self.nodes)}.log"), "wb")
        process = subprocess.Popen(
            [RAY, "start", "--block", "--disable-usage-stats", *args],
            env=ray_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.nodes.append(process)
        return process

    def start_head(self, num_cpus: int = 2, resources: str | None = None) -> "LocalRayCluster":
        args = ["--head", f"--port={self.port}", f"--num-cpus={num_cpus}", f"--temp-dir={self.temp_dir}",
                f"--include-dashboard={str(self.dashboard).lower()}"]
        if self.dashboard:
            args += ["--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}"]
        if resources:
            args.append(f"--resources={resources}")
        self._start(args)
        self.wait_for_nodes(1)
        return self

    def add_worker(self, num_cpus: int = 1, resources: str | None = None) -> subprocess.Popen:
        args = [f"--address={self.address}", f"--num-cpus={num_cpus}"]
        if resources:
            args.append(f"--resources={resources}")
        process = self._start(args)
        self.wait_for_nodes(len(self.nodes))
        return process

    def alive_nodes(self) -> int:
        code = "import ray; ray.init(address=%r, log_to_driver=False); print(sum(n['Alive'] for n in ray.nodes()))"
        result = subprocess.run([sys.executable, "-c", code % self.address], env=ray_env(), capture_output=True,
                                text=True, timeout=60)
        return int(result.stdout.strip().splitlines()[-1]) if result.returncode == 0 and result.stdout.strip() else 0

    def wait_for_nodes(self, count: int, timeout: float = 90) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(p.poll() is not None for p in self.nodes):
                raise RuntimeError(f"a ray node exited early; logs in {self.temp_dir}")
            if self.alive_nodes() >= count:
                return
            time.sleep(1)
        raise TimeoutError(f"{count} Ray nodes not up after {timeout} s; logs in {self.temp_dir}")

    def pids(self) -> list[int]:
        """Every process whose command line names this cluster's temp dir or was started as a node."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if self.temp_dir.encode() in handle.read():
                        found.append(int(entry))
            except OSError:
                continue
        return found

    def kill_node(self, process: subprocess.Popen) -> None:
        """Kill one node's process group at once (SIGKILL: a crash, not a drain)."""
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=30)

    def stop(self) -> None:
        for process in self.nodes:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.time() + 20
        for process in self.nodes:
            try:
                process.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def __enter__(self) -> "LocalRayCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
