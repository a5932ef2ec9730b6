"""Exact K-Center-Greedy: the per-pick loop of the released code vs raysel's batched passes.

    .venv/bin/python benchmarks/bench_select.py            # 200k images x K=5 x 384 dims, budget 1000
    .venv/bin/python benchmarks/bench_select.py --quick    # 20k images, budget 300 (about a minute)

Writes a synthetic clustered feature store (images around a few hundred scene
centers, knowledge clusters around each image; float32, cosine distance) and
runs, each in its own process so that peak memory is its own:

(a) the per-pick loop in the style of the Core-Set / GEAL released code: all
    clusters in memory as float64, one full distance pass (a matrix-vector
    product against the picked image's K clusters) per pick, numpy;
(b) raysel's single-process path: the batched exact passes over one
    in-process shard (`kcenter_greedy_batched`);
(c) `run_selection` on an embedded Ray with 1, 2 and 4 shard actors.

All start from the same seeded first image and must pick the same images in the
same order; the table says whether they do. Prints markdown and writes it to
benchmarks/results/select.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

RESULTS = Path(__file__).parent / "results" / "select.md"

SCALING_NOTE = """\
**Expected scaling on 8 GPU nodes (not measured here).** A pass is one dense
[rows x D] x [D x new centers] product per shard over its own rows, then a top-m;
shards never talk to each other, and a round trip moves m x K x D floats per shard
up (0.5 MB at m=64, K=5, D=384) and one shared batch of new centers down. So with
one or more shard actors per node the per-pass compute divides by the node count
and the passes stay the same (budget / picks per pass: about 30 picks per pass
here, independent of the shard count), while per-pass overhead stays at a few
milliseconds plus the slowest shard. Expect close to 8x over one node of the same
kind while a shard's product takes much longer than a round trip: at 200k images
x K=5 the product per pass is ~100 GFLOP (float64), ~15 GFLOP per node, tens of
milliseconds on a 32-core node, so this size is already latency bound at ~35
round trips (a few seconds in all, most of it loading the Parquet shards, which
also spreads over the nodes); at 10M+ images it is compute bound and scales
near linearly. The selector runs on CPUs: on GPU nodes it uses their CPU cores
and leaves the GPUs idle. Moving the shard kernel to the GPU (torch float64 on
the same fixed-shape blocks; an H100 does ~60 TFLOP/s in float64, against ~0.05
here) would make it round-trip and load bound, provided the fixed-shape
determinism is re-checked on cuBLAS. `prob` sampling makes one round trip per pick,
so on a cluster it is latency bound (budget x round trip) whatever the shard count.
"""


# --- the synthetic store ---


def write_synthetic_store(
    path: str, images: int, clusters: int, dims: int, seed: int = 0, chunk: int = 20_000, latent: int | None = None
) -> None:
    """A feature store of `images` rows: uri, clusters [K][D] float32 (scene + image + cluster noise).

    With `latent`, the same structure lives on a random `latent`-dimensional subspace of the D
    dimensions (scaled to the same total variance), plus 2% isotropic noise: embeddings of real
    images are far from filling their D dimensions.
    """
    from raysel import schema, storage
    from raysel.store import FeatureStore, shard_name

    rng = np.random.default_rng(seed)
    basis = None
    if latent is not None:
        basis = np.linalg.qr(rng.standard_normal((dims, latent)))[0].T.astype(np.float32) * np.sqrt(dims / latent)
    width = dims if latent is None else latent
    scenes = rng.standard_normal((max(images // 1000, 50), width)).astype(np.float32)
    store = FeatureStore(path)
    store.write_metadata({"format_version": schema.STORE_FORMAT_VERSION, "synthetic": True, "images": images})
    for chunk_id, start in enumerate(range(0, images, chunk)):
        count = min(chunk, images - start)
        image_means = scenes[rng.integers(0, len(scenes), count)] + 0.7 * rng.standard_normal((count, width), dtype=np.float32)
        vectors = image_means[:, None, :] + 0.5 * rng.standard_normal((count, clusters, width), dtype=np.float32)
        if basis is not None:
            vectors = vectors @ basis + 0.02 * rng.standard_normal((count, clusters, dims), dtype=np.float32)
        flat = pa.array(vectors.reshape(-1), pa.float32())
        inner = pa.FixedSizeListArray.from_arrays(flat, dims)
        table = pa.table(
            {
                schema.URI: [f"s3://bench/img-{start + i:08d}.jpg" for i in range(count)],
                schema.CLUSTERS: pa.FixedSizeListArray.from_arrays(inner, clusters),
            }
        )
        storage.write_parquet_atomic(table, store.path(schema.SHARDS_DIR, shard_name(chunk_id)))
    store.mark_complete({"rows": images})


# --- the variants, each run in its own process ---


def peak_rss() -> int:
    from raysel.process_memory import peak_rss_bytes

    return peak_rss_bytes()


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (user + system)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def load_all(store_path: str) -> tuple[list[str], np.ndarray]:
    from raysel.select.pool.store_rows import load_rows, plan_shards
    from raysel.store import FeatureStore

    store = FeatureStore(store_path)
    (rows,) = plan_shards(store, 1)
    return load_rows(store, rows, "clusters")


def first_pick(uris: list[str], seed: int) -> int:
    """The seeded uniform first image raysel picks (the same function, for every variant)."""
    from raysel.select import draws
    from raysel.select.kcenter.kernel import uri_ranks

    keys = draws.uniform_keys(draws.uri_hashes(uris), seed, draws.FIRST_PICK_STREAM)[:, 0]
    return int(np.lexsort((uri_ranks(uris), keys))[0])


def run_per_pick_loop(store_path: str, budget: int, seed: int) -> dict:
    """(a) One full distance pass per pick, float64, in the manner of Core-Set's kCenterGreedy."""
    started, cpu_started = time.perf_counter(), cpu_seconds()
    uris, vectors = load_all(store_path)
    images, clusters, dims = vectors.shape
    features = vectors.reshape(-1, dims).astype(np.float64)
    del vectors
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    loaded = time.perf_counter()
    # uris are zero-padded in row order, so argmax's first index is the smallest uri on ties
    selected = [first_pick(uris, seed)]
    scores_out: list[float | None] = [None]
    taken = np.zeros(images, dtype=bool)
    taken[selected[0]] = True
    min_distances = None
    for _ in range(budget - 1):
        centers = features[selected[-1] * clusters : (selected[-1] + 1) * clusters]
        distance = 1.0 - features @ centers.T  # pairwise_distances(features, centers, metric="cosine")
        nearest = np.maximum(distance, 0.0).min(axis=1)
        min_distances = nearest if min_distances is None else np.minimum(min_distances, nearest)
        scores = min_distances.reshape(images, clusters).max(axis=1)
        scores[taken] = -np.inf
        best = int(np.argmax(scores))
        selected.append(best)
        scores_out.append(float(scores[best]))
        taken[best] = True
    finished = time.perf_counter()
    return {
        "name": "(a) per-pick loop (released-code style, numpy float64)",
        "picks": [uris[i] for i in selected],
        "scores": scores_out,
        "load_s": loaded - started,
        "select_s": finished - loaded,
        "passes": budget - 1,
        "round_trips": None,
        "picks_per_round_trip": None,
        "cpu_s": cpu_seconds() - cpu_started,
        "driver_rss": peak_rss(),
        "actor_rss": None,
    }


def run_single_process(store_path: str, budget: int, seed: int, candidates: int) -> dict:
    """(b) raysel's batched exact passes over one in-process shard."""
    from raysel.select import kcenter_greedy_batched

    started, cpu_started = time.perf_counter(), cpu_seconds()
    uris, vectors = load_all(store_path)
    loaded = time.perf_counter()
    picks, stats = kcenter_greedy_batched(vectors, uris, budget, "cosine", seed=seed, candidates=candidates)
    finished = time.perf_counter()
    return {
        "name": "(b) raysel single process (batched exact passes)",
        "picks": [p.uri for p in picks],
        "scores": [p.score for p in picks],
        "load_s": loaded - started,
        "select_s": finished - loaded,
        "passes": stats.shards[0]["passes"],
        "round_trips": stats.round_trips,
        "picks_per_round_trip": stats.picks_per_round_trip,
        "cpu_s": cpu_seconds() - cpu_started,
        "driver_rss": peak_rss(),
        "actor_rss": None,
    }


def run_distributed(store_path: str, budget: int, seed: int, candidates: int, shards: int, workdir: str) -> dict:
    """(c) run_selection over `shards` Ray actors on an embedded Ray."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    from raysel.config import SelectConfig
    from raysel.select import run_selection

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, configure_logging=False, log_to_driver=False)
    out = os.path.join(workdir, f"selection-{shards}.parquet")
    for suffix in ("", ".config.json", ".checkpoint.json"):
        if os.path.exists(out + suffix):
            os.remove(out + suffix)
    started, cpu_started = time.perf_counter(), cpu_seconds()
    table = run_selection(
        SelectConfig(store=store_path, out=out, budget=budget, seed=seed, shards=shards, candidates=candidates),
        progress=False,
    )
    finished = time.perf_counter()
    stats = json.load(open(out + ".config.json"))["stats"]
    load_s = max(shard["load_seconds"] for shard in stats["shards"])
    ray.shutdown()
    return {
        "name": f"(c) raysel on Ray, {shards} shard actor{'s' if shards > 1 else ''}",
        "picks": table.column("uri").to_pylist(),
        "scores": table.column("score").to_pylist(),
        "load_s": load_s,
        "select_s": finished - started - load_s,
        "passes": max(shard["passes"] for shard in stats["shards"]),
        "round_trips": stats["round_trips"],
        "picks_per_round_trip": stats["picks_per_round_trip"],
        "cpu_s": cpu_seconds() - cpu_started + sum(shard["cpu_seconds"] for shard in stats["shards"]),
        "driver_rss": peak_rss(),
        "actor_rss": [shard["peak_rss_bytes"] for shard in stats["shards"]],
    }


def run_variant(args: argparse.Namespace) -> None:
    if args.variant == "per-pick":
        result = run_per_pick_loop(args.store, args.budget, args.seed)
    elif args.variant == "single":
        result = run_single_process(args.store, args.budget, args.seed, args.candidates)
    else:
        result = run_distributed(args.store, args.budget, args.seed, args.candidates, int(args.variant.split("-")[1]), args.workdir)
    with open(args.result, "w") as handle:
        json.dump(result, handle)


# --- the report ---


def gib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**30:.2f}"


def render(results: list[dict], args: argparse.Namespace, vector_bytes: int) -> str:
    baseline = results[0]
    same = {r["name"]: r["picks"] == baseline["picks"] for r in results}
    best = min(results[1:], key=lambda r: r["select_s"] + r["load_s"])
    lines = [
        f"K-Center-Greedy (geal, cosine), exact: {args.images:,} images x K={args.clusters} x d={args.dims} "
        f"= {args.images * args.clusters / 1e6:.2f}M vectors ({vector_bytes / 2**30:.2f} GiB float32), "
        f"budget {args.budget}, candidates m={args.candidates}, seed {args.seed}.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}; one run each, "
        "each variant in its own process (wall times on a shared machine vary by 10-20%).",
        "",
        "| variant | load s | select s | total s | speedup (wall) | CPU s | speedup (CPU) | passes over the data | picks / round trip | driver peak RSS GiB | actors' peak RSS GiB | same picks as (a) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    base_total = baseline["load_s"] + baseline["select_s"]
    for r in results:
        total = r["load_s"] + r["select_s"]
        actors = "-" if r["actor_rss"] is None else " / ".join(gib(v) for v in r["actor_rss"])
        per_trip = "-" if r["picks_per_round_trip"] is None else f"{r['picks_per_round_trip']:.1f}"
        lines.append(
            f"| {r['name']} | {r['load_s']:.1f} | {r['select_s']:.1f} | {total:.1f} | {base_total / total:.1f}x | "
            f"{r['cpu_s']:.0f} | {baseline['cpu_s'] / r['cpu_s']:.1f}x | "
            f"{r['passes']} | {per_trip} | {gib(r['driver_rss'])} | {actors} | {'yes' if same[r['name']] else '**no**'} |"
        )
    ours = results[1:]
    fewest_passes = max(r["passes"] for r in ours)
    pass_ratio = baseline["passes"] / fewest_passes
    min_per_trip = min(r["picks_per_round_trip"] for r in ours)
    wall_ratio = base_total / (best["load_s"] + best["select_s"])
    select_ratio = baseline["select_s"] / best["select_s"]
    cpu_ratio = baseline["cpu_s"] / min(r["cpu_s"] for r in ours)
    million = args.images * args.clusters >= 1_000_000

    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    if not baseline["name"].startswith("(a)"):  # --no-per-pick: (b) is the reference
        lines = [line.replace("same picks as (a)", "same picks as (b)") for line in lines]
        float64_gib = args.images * args.clusters * args.dims * 8 / 2**30
        return "\n".join(lines + [
            "",
            f"(a) is left out at this size: its float64 copy of the vectors alone would take {float64_gib:.1f} GiB. "
            f"Speedups are against (b). Every variant picks what (b) picks: "
            f"{verdict(all(same.values()))}; picks per round trip: {min_per_trip:.1f}; passes: {fewest_passes}.",
        ])
    lines += [
        "",
        "Targets:",
        "",
        f"- identical picks across all variants: {verdict(all(same.values()))} "
        f"({sum(same.values())}/{len(same)} variants pick exactly what (a) picks, in the same order).",
        f"- >= 15x fewer passes than (a) at budget >= 1000: {verdict(pass_ratio >= 15)} "
        f"({baseline['passes']} vs at most {fewest_passes}: {pass_ratio:.1f}x).",
        f"- >= 10 picks per driver round trip: {verdict(min_per_trip >= 10)} (lowest: {min_per_trip:.1f}).",
        f"- wall >= 5x faster than (a) at N x K = 1M: "
        + (f"{verdict(wall_ratio >= 5)} " if million else "not applicable at this size ")
        + f"(best: {best['name']}, {wall_ratio:.1f}x total, {select_ratio:.1f}x on selection alone; "
        f"{cpu_ratio:.1f}x less CPU time, the figure least disturbed by other load on a shared machine).",
        "",
        "Passes: full sweeps over the stored vectors (one per pick for (a); one per round trip, plus the seeding "
        "one, for raysel). A raysel pass costs more than one of (a)'s (it folds ~30 picks x K new centers into "
        "one product, float64 from float32), but is compute bound where (a)'s matrix-vector pass is bound by "
        "memory bandwidth. On this 2-core machine more shard actors cannot run faster than one using both cores; "
        "they show the per-actor memory falling with the shard count and the picks staying identical.",
        "",
        SCALING_NOTE,
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20k images, budget 300")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--clusters", type=int, default=5)
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--budget", type=int, default=None)
    parser.add_argument("--candidates", type=int, default=64)
    parser.add_argument("--shards", default="1,2,4", help="shard counts for (c)")
    parser.add_argument("--no-per-pick", action="store_true",
                        help="leave out (a), for stores whose float64 copy does not fit in memory; (b) is then the reference")
    parser.add_argument("--results", type=Path, default=RESULTS, help="markdown file to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="where the synthetic store goes (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the synthetic store")
    parser.add_argument("--no-write", action="store_true", help="print only; leave benchmarks/results/select.md alone")
    # internal: run one variant in this process
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        run_variant(args)
        return
    args.images = args.images or (20_000 if args.quick else 200_000)
    args.budget = args.budget or (300 if args.quick else 1000)

    workdir = args.workdir or tempfile.mkdtemp(prefix="raysel-bench-select-")
    store = os.path.join(workdir, f"store-{args.images}x{args.clusters}x{args.dims}")
    try:
        if not os.path.exists(os.path.join(store, "_SUCCESS")):
            print(f"writing the synthetic store to {store} ...", file=sys.stderr)
            write_synthetic_store(store, args.images, args.clusters, args.dims, seed=args.seed)
        variants = ([] if args.no_per_pick else ["per-pick"]) + ["single"] + [f"ray-{n}" for n in args.shards.split(",")]
        results = []
        for variant in variants:
            result_path = os.path.join(workdir, f"{variant}.json")
            print(f"running {variant} ...", file=sys.stderr)
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, __file__, "--variant", variant, "--store", store, "--result", result_path,
                 "--budget", str(args.budget), "--seed", str(args.seed), "--candidates", str(args.candidates),
                 "--workdir", workdir],
                check=True,
            )
            print(f"  {variant}: {time.perf_counter() - started:.1f}s", file=sys.stderr)
            with open(result_path) as handle:
                results.append(json.load(handle))
        report = render(results, args, args.images * args.clusters * args.dims * 4)
        print(report)
        if not args.no_write:
            args.results.parent.mkdir(parents=True, exist_ok=True)
            args.results.write_text(report + "\n")
            print(f"wrote {args.results}", file=sys.stderr)
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
