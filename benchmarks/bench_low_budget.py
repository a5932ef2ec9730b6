"""Wall time of typiclust and probcover on a synthetic pool, in one process (they run in the driver).

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

from raysel.select.pool.embedding_pool import make_pool
from raysel.select.pool.kmeans import seeded_kmeans
from raysel.select.methods.probcover import normalized, probcover_picks, purity_delta
from raysel.select.methods.typiclust import typiclust_picks


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
    pool = make_pool(vectors, [f"img-{i:07d}" for i in range(count)], [], args.budget)

    started = time.perf_counter()
    _, typiclust_figures = typiclust_picks(pool, args.budget, 500, seed=0)
    typiclust_seconds = time.perf_counter() - started

    unit = normalized(pool)
    started = time.perf_counter()
    labels, _ = seeded_kmeans(unit, 10, seed=0)
    delta, purity = purity_delta(unit, labels, 0.95)
    purity_seconds = time.perf_counter() - started
    started = time.perf_counter()
    _, probcover_figures = probcover_picks(pool, unit, args.budget, delta, seed=0)
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
