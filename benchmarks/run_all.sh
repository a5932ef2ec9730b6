#!/usr/bin/env bash
# Every benchmark, then docs/benchmarks.md from their figures. About 15 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
$PY benchmarks/bench_featurize.py
$PY benchmarks/bench_kmeans.py
$PY benchmarks/bench_select.py
[ -f benchmarks/bench_pretext.py ] && $PY benchmarks/bench_pretext.py
[ -f benchmarks/bench_cluster.py ] && $PY benchmarks/bench_cluster.py
$PY benchmarks/make_report.py
