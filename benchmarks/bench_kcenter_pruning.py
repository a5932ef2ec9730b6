"""Pruned vs unpruned exact K-Center-Greedy passes vs the per-pick loop, side by side in one run.

    .venv/bin/python benchmarks/bench_kcenter_pruning.py                       # 20k x K=5 x 384, budgets 1000, 2500
    .venv/bin/python benchmarks/bench_kcenter_pruning.py --images 200000 --budgets 1000,10000   # the issue's size

Two synthetic stores of `images` x K x D float32 (cosine):

- `isotropic`: benchmarks/bench_select.py's store (scene + image + cluster Gaussian noise
  in all D dimensions): distances concentrate, everything is about equally far;
- `low-dim`: the same structure on a `--latent`-dimensional subspace (plus 2% isotropic
  noise), as embeddings of real images are far from filling their D dimensions.

For each store and budget, each in its own process (own peak RSS): (a) the per-pick loop
(numpy float64, one full pass per pick; only at budgets <= --per-pick-max), (b) today's
batched exact passes (`--no-pruning`), (c) the pruned exact passes. All start from the same
seeded first image; the table says whether they pick the same images in the same order.
Writes benchmarks/results/kcenter_pruning.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))
from bench_select import cpu_seconds, load_all, peak_rss, run_per_pick_loop, write_synthetic_store  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "kcenter_pruning.md"


def run_batched(store_path: str, budget: int, seed: int, candidates: int, pruning: bool) -> dict:
    from raysel.select import kcenter_greedy_batched

    started, cpu_started = time.perf_counter(), cpu_seconds()
    uris, vectors = load_all(store_path)
    loaded = time.perf_counter()
    picks, stats = kcenter_greedy_batched(vectors, uris, budget, "cosine", seed=seed, candidates=candidates, pruning=pruning)
    finished = time.perf_counter()
    figures = stats.as_dict()
    return {
        "name": "(c) pruned exact passes" if pruning else "(b) batched exact passes, unpruned (today)",
        "picks": [p.uri for p in picks],
        "load_s": loaded - started,
        "select_s": finished - loaded,
        "cpu_s": cpu_seconds() - cpu_started,
        "passes": figures["passes"],
        "distance_evaluations": figures["distance_evaluations"],
        "center_distance_evaluations": figures["center_distance_evaluations"],
        "rss": peak_rss(),
    }


def run_per_pick(store_path: str, budget: int, seed: int, images: int, clusters: int) -> dict:
    result = run_per_pick_loop(store_path, budget, seed)
    return {
        "name": "(a) per-pick loop (numpy float64)",
        "picks": result["picks"],
        "load_s": result["load_s"],
        "select_s": result["select_s"],
        "cpu_s": result["cpu_s"],
        "passes": result["passes"],
        "distance_evaluations": (budget - 1) * images * clusters * clusters,  # every vector x the pick's K clusters
        "center_distance_evaluations": 0,
        "rss": result["driver_rss"],
    }


def render(rows: list[tuple[str, int, list[dict]]], args: argparse.Namespace) -> str:
    lines = [
        f"Exact K-Center-Greedy (geal, cosine, greedy) on {args.images:,} images x K={args.clusters} x D={args.dims} "
        f"float32, candidates m={args.candidates}, seed {args.seed}; single process, one variant per process, "
        f"all variants of a row group in the same run. Machine: {platform.machine()}, {os.cpu_count()} CPUs shared "
        "with other jobs (wall varies; distance evaluations do not).",
        "",
        "| store | budget | variant | passes | vector-center distances | center-center distances | fewer than (b) | select wall s | CPU s (load + select) | less CPU than (b) | peak RSS GiB | same picks |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for store, budget, results in rows:
        base = next(r for r in results if r["name"].startswith("(b)"))
        for r in results:
            lines.append(
                f"| {store} | {budget} | {r['name']} | {r['passes']} | {r['distance_evaluations']:,} | "
                f"{r['center_distance_evaluations']:,} | {base['distance_evaluations'] / max(1, r['distance_evaluations']):.1f}x | "
                f"{r['select_s']:.1f} | {r['cpu_s']:.1f} | {base['cpu_s'] / r['cpu_s']:.2f}x | {r['rss'] / 2**30:.2f} | "
                f"{'yes' if r['picks'] == base['picks'] else '**no**'} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--clusters", type=int, default=5)
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--latent", type=int, default=4, help="dimension of the low-dim store's subspace")
    parser.add_argument("--budgets", default="1000,2500")
    parser.add_argument("--per-pick-max", type=int, default=1000, help="run (a) only at budgets up to this")
    parser.add_argument("--stores", default="isotropic,low-dim")
    parser.add_argument("--candidates", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--render-only", action="store_true", help="re-render the results already in --workdir")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        if args.variant == "per-pick":
            result = run_per_pick(args.store, args.budget, args.seed, args.images, args.clusters)
        else:
            result = run_batched(args.store, args.budget, args.seed, args.candidates, pruning=args.variant == "pruned")
        Path(args.result).write_text(json.dumps(result))
        return
    workdir = args.workdir or tempfile.mkdtemp(prefix="raysel-bench-pruning-")
    rows = []
    for kind in args.stores.split(","):
        store = os.path.join(workdir, f"{kind}-{args.images}x{args.clusters}x{args.dims}")
        if not args.render_only and not os.path.exists(os.path.join(store, "_SUCCESS")):
            print(f"writing {store} ...", file=sys.stderr)
            if kind == "isotropic":
                write_synthetic_store(store, args.images, args.clusters, args.dims, seed=args.seed)
            else:
                write_synthetic_store(store, args.images, args.clusters, args.dims, seed=args.seed, latent=args.latent)
        for budget in map(int, args.budgets.split(",")):
            variants = (["per-pick"] if budget <= args.per_pick_max else []) + ["unpruned", "pruned"]
            results = []
            for variant in variants:
                path = os.path.join(workdir, f"{kind}-{budget}-{variant}.json")
                if args.render_only or os.path.exists(path):  # a finished variant is not rerun (resume)
                    if os.path.exists(path):
                        results.append(json.loads(Path(path).read_text()))
                    continue
                print(f"{kind} budget {budget}: {variant} ...", file=sys.stderr, flush=True)
                subprocess.run(
                    [sys.executable, __file__, "--variant", variant, "--store", store, "--budget", str(budget),
                     "--seed", str(args.seed), "--candidates", str(args.candidates), "--result", path,
                     "--images", str(args.images), "--clusters", str(args.clusters)],
                    check=True,
                )
                results.append(json.loads(Path(path).read_text()))
                print(f"  {results[-1]['select_s']:.1f}s, {results[-1]['distance_evaluations']:,} distances", file=sys.stderr)
            if not any(r["name"].startswith("(b)") for r in results):
                continue
            rows.append((kind if kind != "low-dim" else f"low-dim ({args.latent}-d subspace)", budget, results))
            report = render(rows, args)
            args.results.parent.mkdir(parents=True, exist_ok=True)
            args.results.write_text(report + "\n")  # after every group: partial figures survive a timeout
    print(report)


if __name__ == "__main__":
    main()
