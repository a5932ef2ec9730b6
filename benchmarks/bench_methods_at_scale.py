"""Every registered selection method on one bring-your-own store: wall time, driver and actor peak RSS.

    .venv/bin/python benchmarks/make_byo_store.py /tmp/byo-200k --rows 200000 --dims 64
    flock /tmp/raysel-heavy.lock .venv/bin/python benchmarks/bench_methods_at_scale.py /tmp/byo-200k \
        --budget 200 --methods typiclust probcover --name methods_200k
    .venv/bin/python benchmarks/make_byo_store.py /tmp/byo-1m --rows 1280000 --dims 384 --dtype float16
    flock /tmp/raysel-heavy.lock .venv/bin/python benchmarks/bench_methods_at_scale.py /tmp/byo-1m \
        --budget 1000 --name methods_1m

Each (method, shards) runs `run_selection` in its own process on an embedded Ray with the
machine's CPUs, so the driver's peak RSS (VmHWM of that process) is its own. Actor
peak RSS comes from the run's `<out>.config.json` stats (shard actors report theirs);
methods without actors (random, pt4al, uncertainty stream the store in the driver)
show "-". The picks column (a hash of the picked uris in order) shows whether 1 and 2
shards picked the same images in the same order. pt4al runs cycle 1 of 10 and uncertainty entropy, both with the linear head on
the store's `-labels.csv` (made by make_byo_store.py). Wall time: run_selection only
(Ray start-up excluded: every run joins one Ray the benchmark starts). CPU s: the run's process
plus its shard actors' (load-independent where wall time is not; Ray Data tasks not counted). Writes benchmarks/results/<name>.md.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METHOD_OPTIONS = {
    "pt4al": {"cycles": 10, "cycle": 1, "labeled": True},
    "uncertainty": {"labeled": True},
}
RESULTS = Path(__file__).parent / "results"


def _collect(stats, key: str, found: list) -> list:
    """Every value stored under `key` anywhere in the nested stats (the shard actors' own figures)."""
    if isinstance(stats, dict):
        for name, value in stats.items():
            if name == key and isinstance(value, (int, float)):
                found.append(value)
            else:
                _collect(value, key, found)
    elif isinstance(stats, list):
        for value in stats:
            _collect(value, key, found)
    return found


def run_one(args: argparse.Namespace) -> None:
    import ray

    from raysel.config import SelectConfig
    from raysel.process_memory import peak_rss_bytes
    from raysel.select import run_selection

    ray.init(address=args.address, configure_logging=False, log_to_driver=False)
    options = dict(METHOD_OPTIONS.get(args.method, {}))
    labeled = options.pop("labeled", False)
    config = SelectConfig(
        store=args.store, out=args.out, budget=args.budget, method=args.method, shards=args.shards, seed=0,
        labeled=args.labels if labeled else None, **options,
    )
    started = time.perf_counter()
    table = run_selection(config, progress=False)
    wall = time.perf_counter() - started
    stats = json.load(open(args.out + ".config.json"))["stats"]
    print(json.dumps({
        "wall_s": wall, "driver_peak_rss": peak_rss_bytes(),
        "actor_peak_rss": max(_collect(stats, "peak_rss_bytes", []), default=None), "picks": table.num_rows,
        "actor_cpu_s": sum(_collect(stats, "cpu_seconds", [])) or None,
        "driver_cpu_s": sum(resource.getrusage(resource.RUSAGE_SELF)[:2]),
        "picks_sha": hashlib.sha256("\n".join(table.column("uri").to_pylist()).encode()).hexdigest()[:12],
        "figures": {k: v for k, v in stats.items() if isinstance(v, (int, float, str)) and k != "shards"},
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store")
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--methods", nargs="*", default=None, help="default: every registered method")
    parser.add_argument("--shards", nargs="*", type=int, default=[1, 2])
    parser.add_argument("--name", default="methods_at_scale")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--labels", help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    args = parser.parse_args()
    labels = args.store.rstrip("/") + "-labels.csv"
    if args.one:
        args.shards = args.shards[0]
        run_one(args)
        return
    from raysel.select import list_methods
    from raysel.store import FeatureStore

    import ray

    methods = args.methods or list_methods()
    ray.init(include_dashboard=False, configure_logging=False, log_to_driver=False)  # one Ray for every run
    address = ray.get_runtime_context().gcs_address
    rows = FeatureStore(args.store).metadata().get("synthetic", {})
    lines = [
        f"# Every method on {args.store}, budget {args.budget}",
        "",
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared with other jobs), "
        f"load average {os.getloadavg()[0]:.1f} at the start. Store: {rows or 'see make_byo_store.py'}.",
        f"Command: `{' '.join(['python', *sys.argv])}`",
        "",
        "| method | shards | wall s | CPU s (driver + actors) | driver peak RSS GiB | actor peak RSS GiB | picks (sha256 of the uris, in order) | figures |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method in methods:
        for shards in args.shards:
            with tempfile.TemporaryDirectory() as tmp:
                command = [sys.executable, __file__, args.store, "--one", "--method", method, "--shards", str(shards),
                           "--budget", str(args.budget), "--out", f"{tmp}/sel.parquet", "--labels", labels, "--address", address]
                started = time.perf_counter()
                child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
                try:
                    stdout, stderr = child.communicate(timeout=args.timeout)
                except subprocess.TimeoutExpired:
                    os.killpg(child.pid, signal.SIGTERM)  # the run and anything it started
                    child.communicate()
                    lines.append(f"| {method} | {shards} | > {args.timeout:.0f} (stopped) | | | | | |")
                    print(lines[-1], flush=True)
                    continue
                done = subprocess.CompletedProcess(command, child.returncode, stdout, stderr)
                if done.returncode != 0:
                    error = (done.stderr.strip().splitlines() or ["?"])[-1][:200]
                    lines.append(f"| {method} | {shards} | failed after {time.perf_counter() - started:.0f} | | | | | {error} |")
                else:
                    result = json.loads(done.stdout.strip().splitlines()[-1])
                    actor = result["actor_peak_rss"]
                    figures = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in result["figures"].items())
                    lines.append(
                        f"| {method} | {shards} | {result['wall_s']:.1f} | {result['driver_cpu_s'] + (result['actor_cpu_s'] or 0):.0f} | "
                        f"{result['driver_peak_rss'] / 2**30:.2f} | "
                        f"{'-' if actor is None else f'{actor / 2**30:.2f}'} | {result['picks_sha']} | {figures} |"
                    )
            print(lines[-1], flush=True)
            (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
