"""K-Center-Greedy (coreset) on a 10M x 384 float16 store over 4 shard actors, pruned vs unpruned passes.

    flock /tmp/raysel-heavy.lock .venv/bin/python benchmarks/bench_kcenter_10m.py --work /tmp/raysel-10m

Issue #12's memory case: does a 10M-image coreset selection complete on one 24 GiB machine, and
what do the pruned passes save there? Steps, each in its own process (own peak RSS):

1. `benchmarks/make_byo_store.py WORK/store --rows 10000000 --dims 384 --dtype float16`
   (skipped when the store is already there);
2. `raysel select WORK/store --method coreset --budget B --shards 4 --dtype float16 --no-pruning`
   (today's batched exact passes) and the same without `--no-pruning` (pruned), on an embedded Ray
   with the machine's own CPUs. The per-pick loop is left out: at 10M vectors it would need
   one full pass per pick (1000 passes of 10M x 384).

Reads each run's `<out>.config.json` stats (passes, distance evaluations, per-actor load seconds,
CPU seconds, peak RSS) and checks that both picked the same images in the same order. Prints
markdown and writes benchmarks/results/kcenter_10m.md (or --results).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "kcenter_10m.md"


def make_store(args) -> float:
    store = os.path.join(args.work, "store")
    if os.path.exists(os.path.join(store, "_SUCCESS")) or os.path.exists(os.path.join(store, "metadata.json")):
        return 0.0
    started = time.time()
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "make_byo_store.py"), store, "--rows", str(args.rows),
                    "--dims", str(args.dims), "--dtype", "float16", "--rows-per-shard", "100000"], check=True)
    return time.time() - started


def run_variant(args, pruned: bool) -> dict:
    out = os.path.join(args.work, f"selection-{'pruned' if pruned else 'unpruned'}.parquet")
    command = [sys.executable, "-m", "raysel.cli", "select", os.path.join(args.work, "store"), "--out", out,
               "--method", "coreset", "--budget", str(args.budget), "--shards", str(args.shards),
               "--dtype", "float16", "--seed", "0", "--no-progress"] + ([] if pruned else ["--no-pruning"])
    started = time.time()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    wall = time.time() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"select failed ({result.returncode}):\n{result.stderr[-4000:]}")
    record = json.loads(Path(out + ".config.json").read_text())
    stats = record["stats"]
    shards = stats["shards"]
    return {
        "variant": "(c) pruned exact passes" if pruned else "(b) batched exact passes, unpruned (today)",
        "wall_s": wall,
        "select_s": stats["seconds"],
        "load_s": max(s["load_seconds"] for s in shards),
        "passes": stats["passes"],
        "distances": stats["distance_evaluations"],
        "center_distances": stats["center_distance_evaluations"],
        "actor_cpu_s": sum(s["cpu_seconds"] for s in shards),
        "driver_cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        "actor_rss_gib": [s["peak_rss_bytes"] / 2**30 for s in shards],
        "driver_rss_gib": after.ru_maxrss / 2**20,
        "vector_gib": sum(s["vector_bytes"] for s in shards) / 2**30,
        "picks": pq.read_table(out).column("uri").to_pylist(),
    }


def render(args, store_s: float, runs: list[dict]) -> str:
    base = runs[0]
    lines = [
        f"## K-Center-Greedy at 10M: {args.rows:,} x {args.dims} float16 coreset store, {args.shards} shard actors, budget {args.budget:,}",
        "",
        f"`benchmarks/bench_kcenter_10m.py --work {args.work}` on {os.cpu_count()} CPUs ({platform.machine()}), "
        f"embedded Ray with the machine's own CPUs, cosine, greedy, seed 0; store generated in {store_s:.0f} s "
        "(0 = reused). The per-pick loop is left out (one full 10M-vector pass per pick).",
        "",
        "| variant | passes | vector-center distances | fewer than (b) | center-center | wall s | select s | load s (max actor) | actor CPU s | vectors GiB | actor peak RSS GiB | same picks |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|:---:|",
    ]
    for run in runs:
        lines.append(
            f"| {run['variant']} | {run['passes']} | {run['distances']:,} | {base['distances'] / max(run['distances'], 1):.2f}x | "
            f"{run['center_distances']:,} | {run['wall_s']:.0f} | {run['select_s']:.0f} | {run['load_s']:.0f} | "
            f"{run['actor_cpu_s']:.0f} | {run['vector_gib']:.2f} | {', '.join(f'{r:.2f}' for r in run['actor_rss_gib'])} | "
            f"{'yes' if run['picks'] == base['picks'] else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--work", default="/tmp/raysel-bench-10m")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--variants", default="unpruned,pruned")
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    store_s = make_store(args)
    runs = [run_variant(args, pruned=(name == "pruned")) for name in args.variants.split(",")]
    text = render(args, store_s, runs)
    print(text)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(text)


if __name__ == "__main__":
    main()
