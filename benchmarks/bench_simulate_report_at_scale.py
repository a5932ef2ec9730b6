"""`raysel simulate` and `raysel report` on a small and an ImageNet-size store, side by side: wall, driver peak RSS.

    .venv/bin/python benchmarks/make_byo_store.py /tmp/byo-200k-384 --rows 200000 --dims 384 --oracle
    .venv/bin/python benchmarks/make_byo_store.py /tmp/byo-1m --rows 1280000 --dims 384 --oracle
    .venv/bin/python benchmarks/make_byo_store.py /tmp/byo-test --rows 20000 --dims 384 --split test --oracle
    flock /tmp/raysel-heavy.lock .venv/bin/python benchmarks/bench_simulate_report_at_scale.py \
        /tmp/byo-200k-384 /tmp/byo-1m --test-store /tmp/byo-test --name simulate_report_scale

For each pool store, three CLI commands run one after another, each in its own process with
the command's defaults (an embedded Ray on this machine's CPUs):
  1. `raysel simulate POOL --labels POOL-oracle.csv --test-store TEST ... --methods random
     --budgets 1000,2000 --seeds 0` (the rounds' own machinery: the pool scanned, the oracle,
     the linear probe; random is the method whose own cost is nil);
  2. `raysel select POOL --method random --budget 1000` (the selection the report shows);
  3. `raysel report POOL --selection ... --labels POOL-oracle.csv --simulation ... --max-tiles 0
     --overlays 0` (coverage curve on its default 100,000-image sample, class histogram,
     accuracy plot; no thumbnails: the synthetic uris are no images).
Peak RSS is each command's own (VmHWM, `raysel/process_memory.py`). The ratio column divides the
larger pool's figure by the smaller one's: memory that grows with the pool shows as a ratio
near the pool ratio (6.4 for 1.28M / 200k), bounded memory near 1.
Writes benchmarks/results/<name>.md.
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

RESULTS = Path(__file__).parent / "results"

# runs raysel's CLI in this process and reports the process's own peak RSS on the last stderr line
WRAPPER = (
    "import json, sys\n"
    "from raysel.cli import main\n"
    "from raysel.process_memory import peak_rss_bytes\n"
    "code = main(sys.argv[1:])\n"
    "print(json.dumps({'peak_rss': peak_rss_bytes()}), file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def run_cli(arguments: list[str], timeout: float) -> dict:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", WRAPPER, *arguments], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")})
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"raysel {' '.join(arguments)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    peak = json.loads(done.stderr.strip().splitlines()[-1])["peak_rss"]
    return {"wall_s": wall, "peak_rss": peak}


def rows_of(store: str) -> int:
    from raysel.store import FeatureStore

    return int(FeatureStore(store).metadata()["synthetic"]["rows"])


def measure(pool: str, test: str, timeout: float) -> dict[str, dict]:
    oracle, test_oracle = f"{pool.rstrip('/')}-oracle.csv", f"{test.rstrip('/')}-oracle.csv"
    with tempfile.TemporaryDirectory() as tmp:
        sim, selection = f"{tmp}/sim", f"{tmp}/selection.parquet"
        figures = {
            "simulate": run_cli(["simulate", pool, "--labels", oracle, "--test-store", test, "--test-labels", test_oracle,
                                 "--methods", "random", "--budgets", "1000,2000", "--seeds", "0", "--out", sim], timeout),
            "select": run_cli(["select", pool, "--method", "random", "--budget", "1000", "--seed", "0", "--out", selection,
                               "--no-progress"], timeout),
            "report": run_cli(["report", pool, "--selection", selection, "--labels", oracle, "--simulation", sim,
                               "--max-tiles", "0", "--overlays", "0", "--out", f"{tmp}/report.html"], timeout),
        }
        figures["report"]["page_bytes"] = os.path.getsize(f"{tmp}/report.html")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("small", help="the smaller pool store (with <store>-oracle.csv beside it)")
    parser.add_argument("large", help="the larger pool store (with <store>-oracle.csv beside it)")
    parser.add_argument("--test-store", required=True, help="test split store (with <store>-oracle.csv beside it)")
    parser.add_argument("--name", default="simulate_report_scale")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per command")
    args = parser.parse_args()
    sizes = {args.small: rows_of(args.small), args.large: rows_of(args.large)}
    results = {store: measure(store, args.test_store, args.timeout) for store in (args.small, args.large)}
    small, large = results[args.small], results[args.large]
    lines = [
        f"# simulate and report: {sizes[args.small]:,} vs {sizes[args.large]:,} pool images",
        "",
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end.",
        f"Command: `{' '.join(['python', *sys.argv])}`; test split {rows_of(args.test_store):,} images.",
        "",
        f"| command | wall s ({sizes[args.small]:,} / {sizes[args.large]:,}) | driver peak RSS GiB (both) | RSS ratio | wall ratio |",
        "|---|---|---|---|---|",
    ]
    for command in ("simulate", "select", "report"):
        a, b = small[command], large[command]
        lines.append(
            f"| {command} | {a['wall_s']:.1f} / {b['wall_s']:.1f} | {a['peak_rss'] / 2**30:.2f} / {b['peak_rss'] / 2**30:.2f} "
            f"| {b['peak_rss'] / a['peak_rss']:.2f} | {b['wall_s'] / a['wall_s']:.2f} |"
        )
    lines += ["", f"Pool ratio: {sizes[args.large] / sizes[args.small]:.2f}. Report page: "
              f"{small['report']['page_bytes']:,} / {large['report']['page_bytes']:,} bytes."]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
