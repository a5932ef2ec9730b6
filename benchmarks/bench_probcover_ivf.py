"""probcover's IVF ball search against the exact (flat) one: wall time, edge recall, coverage of the picks.

    flock /tmp/raysel-heavy.lock .venv/bin/python benchmarks/bench_probcover_ivf.py                  # 200k x 64, budget 200
    .venv/bin/python benchmarks/bench_probcover_ivf.py --images 20000 --probes 4 8 --name probcover_ivf_20k

The pool: `--classes` Gaussian blobs (centers N(0, 1), noise 0.7 per dimension, as
benchmarks/make_byo_store.py writes), L2-normalized, uris in row order; delta fixed
(`--delta`, default 0.88: the purity rule's delta on the 200k x 64 BYO store,
docs/benchmarks.md). Both searches run in this process on `--shards` in-process pool
shards, through the same code the shard actors run (`probcover_on_pool`), side by side,
so the ratios hold under the shared machine's load. Figures per run:

- wall: IVF cell training (IVF only) + graph + greedy;
- edge recall: IVF edges / exact edges (every IVF edge is an exact one: recall is all there is to lose);
- coverage: the fraction of the pool inside the picks' balls of the EXACT graph, for the
  flat picks and for the IVF picks (same budget, same delta, same seed), and their ratio.

Prints markdown and writes benchmarks/results/<name>.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

from raysel.process_memory import peak_rss_bytes
from raysel.select.methods.probcover import IVF_PROBES, ivf_cells_on_pool, probcover_on_pool
from raysel.select.pool.sharded import open_memory_pool


def pool(count: int, dims: int, classes: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, dims))
    points = centers[rng.integers(0, classes, count)] + 0.7 * rng.standard_normal((count, dims))
    return (points / np.linalg.norm(points, axis=1)[:, None]).astype(np.float32)


def coverage(rows: np.ndarray, indptr: np.ndarray, indices: np.ndarray, count: int) -> float:
    covered = np.zeros(count, dtype=bool)
    covered[rows] = True
    for row in rows:
        covered[indices[indptr[row] : indptr[row + 1]]] = True
    return float(covered.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200_000)
    parser.add_argument("--dims", type=int, default=64)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--budget", type=int, default=200)
    parser.add_argument("--delta", type=float, default=0.88)
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--lists", type=int, default=None, help="IVF cells (default: round(sqrt(images)))")
    parser.add_argument("--probes", type=int, nargs="+", default=[4, IVF_PROBES, 16])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="probcover_ivf")
    parser.add_argument("--no-flat", action="store_true", help="IVF runs only (no recall or coverage): where flat is too slow")
    args = parser.parse_args()
    vectors = pool(args.images, args.dims, args.classes, args.seed)
    uris = [f"img-{i:08d}" for i in range(args.images)]  # row order = uri order = pool ids

    def run(probes: int | None) -> dict:
        group, index = open_memory_pool(vectors, uris, [], args.budget, args.shards)
        started = time.perf_counter()
        cells = None if probes is None else ivf_cells_on_pool(group, index, args.lists, probes, args.seed)
        trained = time.perf_counter() - started
        picks, figures = probcover_on_pool(group, index, args.budget, args.delta, args.seed, cells)
        wall = time.perf_counter() - started
        rows = np.array([int(p.uri[4:]) for p in picks[: figures["covering_picks"]]], dtype=np.int64)
        graph = None
        if probes is None:  # keep the exact graph (one CSR over all ids) to score every run's picks with
            indptr = np.zeros(args.images + 1, dtype=np.int64)
            parts = []
            for shard in group.shards:
                indptr[shard.ids + 1] = np.diff(shard.indptr)
                parts.append(shard.neighbours)
            graph = (np.cumsum(indptr), np.concatenate(parts))
        return {"probes": probes, "cells": cells, "train": trained, "wall": wall, "figures": figures, "rows": rows,
                "picks": [p.uri for p in picks], "graph": graph}

    flat = None if args.no_flat else run(None)
    if flat is not None:
        indptr, indices = flat["graph"]
        flat_coverage = coverage(flat["rows"], indptr, indices, args.images)
    header = [
        f"# probcover: IVF vs exact ball graph, N = {args.images:,}, D = {args.dims}, {args.classes} blobs, "
        f"delta {args.delta}, budget {args.budget}, {args.shards} in-process shard(s)",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_probcover_ivf.py --images {args.images} --dims {args.dims} "
        f"--classes {args.classes} --budget {args.budget} --delta {args.delta} --shards {args.shards} "
        f"--probes {' '.join(map(str, args.probes))}"
        + (f" --lists {args.lists}" if args.lists else "") + (" --no-flat" if args.no_flat else "") + "`",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared with other jobs: "
        "compare the ratios, measured side by side, not the absolute seconds).",
        "",
        "| index | cells | probes | wall s (train) | speed-up | edges | edge recall | covering picks | coverage, exact graph | vs flat | same picks |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    if flat is not None:
        header.append(
            f"| flat | - | - | {flat['wall']:.1f} | 1.00 | {flat['figures']['edges']:,} | 1.0000 | "
            f"{flat['figures']['covering_picks']} | {flat_coverage:.4f} | 1.0000 | - |"
        )
    print("\n".join(header), flush=True)
    lines = list(header)
    for probes in args.probes:
        result = run(probes)
        figures = result["figures"]
        if flat is None:
            compared = f"- | {figures['edges']:,} | - | {figures['covering_picks']} | - | - | -"
        else:
            ivf_coverage = coverage(result["rows"], indptr, indices, args.images)
            compared = (
                f"{flat['wall'] / result['wall']:.2f} | {figures['edges']:,} | {figures['edges'] / max(flat['figures']['edges'], 1):.4f} | "
                f"{figures['covering_picks']} | {ivf_coverage:.4f} | {ivf_coverage / flat_coverage:.4f} | {result['picks'] == flat['picks']}"
            )
        line = f"| ivf | {result['cells'].lists} | {result['cells'].probes} | {result['wall']:.1f} ({result['train']:.1f}) | {compared} |"
        print(line, flush=True)
        lines.append(line)
    lines += ["", f"Peak RSS of this process: {peak_rss_bytes() / 2**30:.2f} GiB"]
    out = Path(__file__).parent / "results" / f"{args.name}.md"
    out.write_text("\n".join(lines) + "\n")
    print(lines[-1])
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
