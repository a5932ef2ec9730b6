"""Listing -> manifest -> refresh diff at 10M URIs: the Arrow path vs the old Python list/set path.

    flock /tmp/raysel-heavy.lock .venv/bin/python benchmarks/bench_manifest_scale.py            # 10M rows
    .venv/bin/python benchmarks/bench_manifest_scale.py --rows 1000000 --out benchmarks/results/manifest_scale_1m.md

Each phase runs in a fresh subprocess (so its peak RSS is its own), once with the
code of this raysel (`arrow`) and once with the code it replaced (`lists`, copied
below: Python lists of every key, `sorted()`, `to_pylist()`, Python sets):

1. list -> manifest: S3-like pages of 1000 keys (what each ListObjectsV2 page gives) for
   `--rows` objects over 16 first-level prefixes become the sorted manifest Parquet.
2. refresh: the stored manifest and a new listing (every 1000th image gone, 1% new) are
   read, diffed (new, gone), the new URIs appended as chunks, the manifest written, and
   every pending chunk's URIs taken (as featurize does before its run).

Prints markdown and writes it to benchmarks/results/manifest_scale.md (peak RSS growth
over the process after imports, wall seconds, and the ratios arrow / lists).
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "manifest_scale.md"
PREFIXES = 16
PAGE = 1000
CHUNK_SIZE = 512  # featurize's default --chunk-size

PHASE = r'''
import json, resource, sys, time
import numpy as np, pyarrow as pa, pyarrow.compute as pc, pyarrow.parquet as pq
REPO, FOLDER, ROWS, PREFIXES, PAGE, CHUNK_SIZE, path, phase = sys.argv[1:9]
ROWS, PREFIXES, PAGE, CHUNK_SIZE = int(ROWS), int(PREFIXES), int(PAGE), int(CHUNK_SIZE)
sys.path.insert(0, REPO)
from raysel import images, schema
from raysel.manifest import Manifest, diff_listing, from_table
from raysel.process_memory import peak_rss_bytes

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()

def pages(rows, prefixes, page, salt=""):
    """S3-like listing pages: lists of `page` key names, prefix by prefix, every 1000th key of `salt` left out."""
    per = -(-rows // prefixes)
    for p in range(prefixes):
        ids = range(p * per, min(rows, (p + 1) * per))
        for start in range(0, len(ids), page):
            names = [f"b/pool/p{p:02d}/{i:09d}.jpg" for i in ids[start:start + page]]
            if salt == "refresh":
                names = [n for n, i in zip(names, ids[start:start + page]) if i % 1000 != 7]
            yield names
    if salt == "refresh":  # 1% new images, in a prefix of their own
        new = rows // 100
        for start in range(0, new, page):
            yield [f"b/pool/zz/{i:09d}.jpg" for i in range(start, min(new, start + page))]

def visible(name, root):
    return not any(part.startswith((".", "_")) for part in name[len(root):].split("/") if part)

def list_arrow(salt):
    arrays, batch = [], []
    for page in pages(ROWS, PREFIXES, PAGE, salt):
        for name in page:  # what raysel.images._list_s3 does per entry
            if not name.endswith("/") and visible(name, "b/pool"):
                batch.append(f"s3://{name}")
        if len(batch) >= images.LISTING_BATCH:
            arrays.append(pa.array(batch, pa.string()))
            batch = []
    if batch:
        arrays.append(pa.array(batch, pa.string()))
    uris = pa.chunked_array(arrays, pa.string())
    if pc.all(pc.less_equal(uris.slice(0, len(uris) - 1), uris.slice(1))).as_py():  # as raysel.images does
        return uris
    return uris.take(pc.sort_indices(uris))

def list_lists(salt):  # the replaced code: every name in one list, then sorted()
    found = []
    for page in pages(ROWS, PREFIXES, PAGE, salt):
        found.extend(page)
    return sorted(f"s3://{name}" for name in found if visible(name, "b/pool"))

def run(path, phase):
    if phase == "list":
        if path == "arrow":
            manifest = Manifest.of(list_arrow(""), CHUNK_SIZE)
            pq.write_table(manifest.table, f"{FOLDER}/manifest-{path}.parquet")
            return manifest.num_rows
        uris = list_lists("")
        table = pa.table({"uri": pa.array(uris, pa.string()),
                          "chunk_id": pa.array([row // CHUNK_SIZE for row in range(len(uris))], pa.int64())})
        pq.write_table(table, f"{FOLDER}/manifest-{path}.parquet")
        return len(uris)
    # refresh
    if path == "arrow":
        manifest = from_table(pq.read_table(f"{FOLDER}/manifest-arrow.parquet"), None)
        new, gone = diff_listing(manifest.uris, list_arrow("refresh"))
        manifest = manifest.appended(new, CHUNK_SIZE)
        pq.write_table(manifest.table, f"{FOLDER}/refreshed-{path}.parquet")
        pending = {i: manifest.chunk_uris(s) for i, s in manifest.spans().items() if i >= manifest.next_chunk_id() - 20}
        return [len(new), len(gone), manifest.num_rows]
    table = pq.read_table(f"{FOLDER}/manifest-lists.parquet")
    uris, chunk_ids = table.column("uri").to_pylist(), table.column("chunk_id").to_pylist()
    del table
    listed = list_lists("refresh")
    known = set(uris)
    new = [u for u in listed if u not in known]
    listed_set = set(listed)
    gone = [u for u in uris if u not in listed_set]
    first = max(chunk_ids, default=-1) + 1
    uris, chunk_ids = uris + new, chunk_ids + [first + row // CHUNK_SIZE for row in range(len(new))]
    pq.write_table(pa.table({"uri": pa.array(uris, pa.string()), "chunk_id": pa.array(chunk_ids, pa.int64())}),
                   f"{FOLDER}/refreshed-{path}.parquet")
    chunks = {}
    for uri, chunk_id in zip(uris, chunk_ids):
        chunks.setdefault(chunk_id, []).append(uri)
    return [len(new), len(gone), len(uris)]

baseline = rss()
started = time.perf_counter()
result = run(path, phase)
seconds = time.perf_counter() - started
peak = peak_rss_bytes()
print(json.dumps({"result": result, "seconds": seconds, "growth": peak - baseline}))
'''


def phase(folder: str, rows: int, path: str, name: str) -> dict:
    args = [sys.executable, "-c", PHASE, str(REPO), folder, str(rows), str(PREFIXES), str(PAGE), str(CHUNK_SIZE), path, name]
    done = subprocess.run(args, capture_output=True, text=True, timeout=3600)
    if done.returncode:
        raise SystemExit(f"phase {name} ({path}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--out", type=Path, default=RESULTS, help="markdown file to write")
    args = parser.parse_args()
    figures: dict[tuple[str, str], dict] = {}
    with tempfile.TemporaryDirectory(prefix="raysel-manifest-bench-") as folder:
        for name in ("list", "refresh"):
            for path in ("arrow", "lists"):
                figures[(name, path)] = phase(folder, args.rows, path, name)
                print(name, path, figures[(name, path)], file=sys.stderr, flush=True)
    assert figures[("refresh", "arrow")]["result"] == figures[("refresh", "lists")]["result"], "the two paths differ"
    gib = 2**30
    lines = [
        f"# Listing, manifest and refresh at {args.rows:,} URIs",
        "",
        f"`.venv/bin/python benchmarks/bench_manifest_scale.py --rows {args.rows}`, "
        f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, Python {platform.python_version()}, on the shared 2-core machine "
        "(other jobs running: compare the ratios, not the seconds).",
        "",
        f"Listing: {PREFIXES} first-level prefixes of S3-like pages of {PAGE} keys (generated, no network). "
        f"Refresh: every 1000th image gone, {args.rows // 100:,} new; new / gone / rows after: "
        f"{figures[('refresh', 'arrow')]['result']} (the same on both paths).",
        "",
        "| phase | arrow: peak RSS growth | lists (old): peak RSS growth | RSS ratio | arrow: s | lists (old): s | time ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("list", "refresh"):
        a, b = figures[(name, "arrow")], figures[(name, "lists")]
        lines.append(
            f"| {name} | {a['growth'] / gib:.2f} GiB | {b['growth'] / gib:.2f} GiB | {a['growth'] / b['growth']:.2f} | "
            f"{a['seconds']:.1f} | {b['seconds']:.1f} | {a['seconds'] / b['seconds']:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
