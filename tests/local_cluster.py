"""A real multi-node Ray cluster on this machine, made of `ray start` processes, torn down by pid.

Each node runs `ray start --block` in its own process group with its own temp dir, so stopping the
cluster kills exactly the processes this test started (never a broad `ray stop`). Standalone (no
pytest imports), so benchmarks/bench_cluster.py uses it too.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

RAY = os.path.join(os.path.dirname(sys.executable), "ray")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


AWS_CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE")


def ray_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["RAY_AUTH_MODE"] = "disabled"  # explicit, whatever ~/.ray/auth_token holds
    env.pop("RAY_ADDRESS", None)
    env.update(extra)
    return env


def without_aws_credentials(env: dict[str, str]) -> dict[str, str]:
    """`env` with no way to find AWS credentials: no key variables, no files, no instance metadata."""
    env = {k: v for k, v in env.items() if k not in AWS_CREDENTIAL_VARS}
    env.update(AWS_EC2_METADATA_DISABLED="true", AWS_SHARED_CREDENTIALS_FILE="/nonexistent/credentials",
               AWS_CONFIG_FILE="/nonexistent/config")
    return env


class LocalRayCluster:
    """Head and workers on this machine.

    dashboard=True starts the dashboard (and with it the job API `ray job submit` talks to) on
    `job_address`. aws_credentials=False starts every node without any way to find AWS credentials,
    so S3 reads in Ray workers only work with credentials a job brings in its runtime_env.
    """

    def __init__(self, dashboard: bool = False, aws_credentials: bool = True, object_store_memory: int | None = None,
                 env: dict[str, str] | None = None):
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard_port = free_port() if dashboard else None
        self.dashboard = dashboard
        self.aws_credentials = aws_credentials
        self.object_store_memory = object_store_memory  # bytes per node; Ray's default is 30% of RAM each
        self.env = dict(env or {})  # extra variables for every node (e.g. RAY_health_check_* settings)
        self.temp_dir = tempfile.mkdtemp(prefix="raysel-ray-", dir="/tmp")
        self.nodes: list[subprocess.Popen] = []

    @property
    def job_address(self) -> str:
        assert self.dashboard_port, "start the cluster with dashboard=True to submit jobs"
        return f"http://127.0.0.1:{self.dashboard_port}"

    def node_env(self) -> dict[str, str]:
        # This venv first on PATH, as on a node where raysel is installed: a job's `python` is this one.
        env = ray_env(PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""), **self.env)
        return env if self.aws_credentials else without_aws_credentials(env)

    def _start(self, args: list[str]) -> subprocess.Popen:
        log = open(os.path.join(self.temp_dir, f"node-{len(self.nodes)}.log"), "wb")
        # Every node's agent gets its own port: several nodes share this host (the default is fixed).
        args = [f"--dashboard-agent-listen-port={free_port()}", *args]
        if self.object_store_memory:
            args.append(f"--object-store-memory={self.object_store_memory}")
        process = subprocess.Popen(
            [RAY, "start", "--block", "--disable-usage-stats", *args],
            env=self.node_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.nodes.append(process)
        return process

    def start_head(self, num_cpus: int = 2, resources: str | None = None) -> "LocalRayCluster":
        args = ["--head", f"--port={self.port}", f"--num-cpus={num_cpus}", f"--temp-dir={self.temp_dir}",
                f"--ray-client-server-port={free_port()}", f"--include-dashboard={str(self.dashboard).lower()}"]
        if self.dashboard:
            args += ["--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}"]
        if resources:
            args.append(f"--resources={resources}")
        self._start(args)
        if self.dashboard:
            self.wait_for_job_api()
        self.wait_for_nodes(1)
        return self

    def wait_for_job_api(self, timeout: float = 60) -> None:
        import urllib.request

        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{self.job_address}/api/version", timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"job API not up at {self.job_address} after {timeout} s; logs in {self.temp_dir}")

    def add_worker(self, num_cpus: int = 1, resources: str | None = None, attempts: int = 2) -> subprocess.Popen:
        """Start a worker node and wait until it is ALIVE.

        `ray start` gives a raylet 30 s (hard-coded) to register with the GCS and exits otherwise;
        on an overloaded machine that happens, so a node that exits during startup is started again
        (`attempts` times in all) before the error is raised.
        """
        for attempt in range(attempts):
            # Its own temp dir: nodes sharing one would share runtime_resources/, and one node's agent
            # would delete a job's working_dir while another node's driver still runs in it.
            node_dir = os.path.join(self.temp_dir, f"node-{len(self.nodes)}")
            args = [f"--address={self.address}", f"--num-cpus={num_cpus}", f"--temp-dir={node_dir}"]
            if resources:
                args.append(f"--resources={resources}")
            process = self._start(args)
            try:
                self.wait_for_nodes(len(self.nodes))
                return process
            except RuntimeError:
                if process.poll() is None or attempt == attempts - 1:
                    raise
                self.nodes.remove(process)  # it exited during startup: try once more
        raise AssertionError("unreachable")

    def alive_nodes(self) -> int:
        if self.dashboard:  # the state API over HTTP: no Ray driver to start for each poll
            import json
            import urllib.request

            url = f"{self.job_address}/api/v0/nodes?limit=1000&detail=false"
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    nodes = json.loads(response.read())["data"]["result"]["result"]
                return sum(node["state"] == "ALIVE" for node in nodes)
            except (OSError, KeyError, ValueError):
                pass
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

    def stop(self, grace: float = 20) -> None:
        """SIGTERM every node, SIGKILL what is left after `grace` seconds (a SIGTERM'd node drains)."""
        for process in self.nodes:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace
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
