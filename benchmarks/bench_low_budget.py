"""Wall time of typiclust and probcover on a synthetic pool, in one process (their in-process references).

    .venv/bin/python benchmarks/bench_low_budget.py                       # N = 20,000, D = 384, budget 100
    .venv/bin/python benchmarks/bench_low_budget.py --images 5000 --quick  # smaller

The pool: `--classes` Gaussian blobs (unit-variance centers, noise 0.7 per dimension), uris in
row order. Timed: typiclust's K-Means + picks; probcover's purity rule (K-Means into 10 clusters,
nearest-other-cluster search) and its graph + greedy. Prints markdown and writes it to
benchmarks/results/low_budget.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

from raysel.select.methods.probcover import probcover_on_pool, purity_delta_on_pool
from raysel.select.methods.typiclust import typiclust_on_pool
from raysel.select.pool.sharded import open_memory_pool


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--classes", type=int, default=50)
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="2,000 images")
    args = parser.parse_args()
    count = 2_000 if args.quick else args.images
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((args.classes, args.dims))
    vectors = (centers[rng.integers(0, args.classes, count)] + 0.7 * rng.standard_normal((count, args.dims))).astype(np.float32)
    uris = [f"img-{i:07d}" for i in range(count)]
    group, index = open_memory_pool(vectors, uris, [], args.budget)

    started = time.perf_counter()
    _, typiclust_figures = typiclust_on_pool(group, index, args.budget, 500, seed=0)
    typiclust_seconds = time.perf_counter() - started

    unit = (vectors / np.linalg.norm(vectors.astype(np.float64), axis=1)[:, None]).astype(np.float32)
    group, index = open_memory_pool(unit, uris, [], args.budget)
    started = time.perf_counter()
    delta, purity_figures = purity_delta_on_pool(group, index, 10, 0.95, seed=0)
    purity = purity_figures["purity"]
    purity_seconds = time.perf_counter() - started
    started = time.perf_counter()
    _, probcover_figures = probcover_on_pool(group, index, args.budget, delta, seed=0)
    probcover_seconds = time.perf_counter() - started

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"# typiclust and probcover: N = {count:,}, D = {args.dims}, budget {args.budget}",
        "",
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f} while measuring.",
        "",
        "| step | seconds | figures |",
        "|---|---|---|",
        f"| typiclust (K-Means + picks) | {typiclust_seconds:.1f} | {typiclust_figures['clusters']} clusters, "
        f"{typiclust_figures['kmeans_steps']} Lloyd steps |",
        f"| probcover purity rule (K-Means 10 + nearest other cluster) | {purity_seconds:.1f} | delta {delta}, purity {purity:.3f} |",
        f"| probcover graph + greedy | {probcover_seconds:.1f} | {probcover_figures['edges']:,} edges, "
        f"{probcover_figures['covering_picks']} covering + {probcover_figures['random_picks']} random picks |",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(__file__).parent / "results" / "low_budget.md"
    out.write_text(text)


if __name__ == "__main__":
    main()
