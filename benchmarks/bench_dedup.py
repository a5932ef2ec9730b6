"""Near-duplicate removal (`raysel dedup`) on a generated store with planted duplicate groups.

    flock /tmp/raysel-heavy.lock .venv/bin/python benchmarks/bench_dedup.py                  # 1.28M x 384
    flock /tmp/raysel-heavy.lock .venv/bin/python benchmarks/bench_dedup.py --images 200000 --compare

Writes a store of unit embeddings around 256 topics (tests/planted_duplicates.py), with `groups`
scenes that each get `copies` near copies (cosine ~0.98 to the scene), in shuffled order. Then,
each in its own process (so peak memory is its own): `run_dedup` on an embedded Ray with
`--shards` actors; with `--compare` also the single-process reference (`dedup_reference`), and
checks that both give the same table. Recall: planted copies removed / planted copies that should
go (copies per group); precision: removed images whose `duplicate_of` is in their own planted group /
removed images. Prints markdown and writes benchmarks/results/dedup.md (or --out).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))


def make_store(args) -> None:
    from planted_duplicates import planted_pool
    from raysel.store import write_store

    started = time.time()
    table, planted = planted_pool(args.images, args.dim, args.groups, args.copies, seed=args.seed, copy_noise=args.copy_noise)
    write_store(os.path.join(args.work, "store"), table, rows_per_shard=100_000)
    with open(os.path.join(args.work, "planted.json"), "w") as handle:
        json.dump(planted, handle)
    print(json.dumps({"seconds": time.time() - started}))


def run(args, mode: str) -> None:
    import pyarrow.parquet as pq
    import ray

    from raysel.config import DedupConfig
    from raysel.process_memory import peak_rss_bytes

    config = DedupConfig(store=os.path.join(args.work, "store"), out=os.path.join(args.work, f"{mode}.parquet"),
                         threshold=args.threshold, shards=args.shards, clusters=args.clusters, kmeans_iters=args.kmeans_iters)
    if mode == "ray":
        from raysel.dedup import run_dedup

        ray.init(include_dashboard=False, log_to_driver=False)  # the machine's own CPUs
        started = time.time()  # from here: actors, load, K-Means, pairwise, write
        table = run_dedup(config)
        record = json.load(open(config.out + ".config.json"))
        ray.shutdown()
    else:
        from raysel.dedup.reference import dedup_reference

        started = time.time()
        table = dedup_reference(config)
        pq.write_table(table, config.out)
        record = {"actor_peak_rss_bytes": [], "seconds": {}}
    wall = time.time() - started
    driver_rss = peak_rss_bytes()
    print(json.dumps({"wall": wall, "driver_rss": driver_rss, "actor_rss": record.get("actor_peak_rss_bytes", []),
                      "phases": record.get("seconds", {}), "removed": table.num_rows,
                      "clusters": record.get("clusters"), "largest_cluster": record.get("largest_cluster"),
                      "kmeans_steps": record.get("kmeans_steps")}))


def quality(args, mode: str) -> dict:
    import pyarrow.parquet as pq

    planted = json.load(open(os.path.join(args.work, "planted.json")))
    rows = pq.read_table(os.path.join(args.work, f"{mode}.parquet")).to_pylist()
    should_go = args.groups * args.copies
    correct = sum(1 for r in rows if r["uri"] in planted and planted.get(r["duplicate_of"]) == planted[r["uri"]])
    return {"recall": correct / should_go, "precision": correct / max(1, len(rows)), "removed": len(rows), "should_go": should_go}


def child(args, phase: str) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--phase", phase] + [a for a in sys.argv[1:] if a != "--compare"]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": REPO})
    if done.returncode != 0:
        raise SystemExit(f"{phase} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=1_281_167)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--groups", type=int, default=10_000)
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--copy-noise", type=float, default=0.01)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--clusters", type=int, default=None)
    parser.add_argument("--kmeans-iters", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="/tmp/raysel-bench-dedup")
    parser.add_argument("--compare", action="store_true", help="also run the single-process reference")
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "dedup.md"))
    parser.add_argument("--phase", choices=["store", "ray", "reference"], default=None)
    args = parser.parse_args()
    if args.phase == "store":
        return make_store(args)
    if args.phase in ("ray", "reference"):
        return run(args, args.phase)

    os.makedirs(args.work, exist_ok=True)
    built = child(args, "store")
    results = {"ray": child(args, "ray")}
    if args.compare:
        results["reference"] = child(args, "reference")
    gib = 1024 ** 3
    lines = [
        f"## dedup: {args.images:,} x {args.dim} embeddings, {args.groups:,} planted groups of {args.copies + 1}",
        "",
        f"`{' '.join(['benchmarks/bench_dedup.py'] + sys.argv[1:])}` on {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
        f"threshold {args.threshold}, {args.shards} shard actors, store written in {built['seconds']:.0f} s.",
        "",
        "| run | wall s | K-Means s | pairwise s | load s | clusters (largest) | K-Means steps | removed | recall | precision | driver peak RSS GiB | actors peak RSS GiB |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, figures in results.items():
        q = quality(args, mode)
        phases = figures["phases"]
        lines.append(
            f"| {mode} | {figures['wall']:.1f} | {phases.get('kmeans', float('nan')):.1f} | {phases.get('pairwise', float('nan')):.1f} "
            f"| {phases.get('load', float('nan')):.1f} | {figures.get('clusters')} ({figures.get('largest_cluster')}) "
            f"| {figures.get('kmeans_steps')} | {q['removed']:,} | {q['recall']:.4f} | {q['precision']:.4f} "
            f"| {figures['driver_rss'] / gib:.2f} | {' + '.join(f'{r / gib:.2f}' for r in figures['actor_rss']) or '-'} |"
        )
    if args.compare:
        import pyarrow.parquet as pq

        same = pq.read_table(os.path.join(args.work, "ray.parquet")).equals(pq.read_table(os.path.join(args.work, "reference.parquet")))
        ratio = results["ray"]["wall"] / results["reference"]["wall"]
        lines += ["", f"Distributed and single-process tables identical: **{same}**; wall ratio ray / reference: **{ratio:.2f}x**."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        mode = "a" if os.path.exists(args.out) else "w"
        with open(args.out, mode) as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
