#!/usr/bin/env bash
# Every benchmark, then docs/benchmarks.md from their figures. About an hour on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
$PY benchmarks/bench_featurize.py
$PY benchmarks/bench_kmeans.py
$PY benchmarks/bench_select.py
$PY benchmarks/bench_select.py --images 600000 --no-per-pick --shards 1,2 --results benchmarks/results/select_large.md
$PY benchmarks/bench_low_budget.py
[ -f benchmarks/bench_pretext.py ] && $PY benchmarks/bench_pretext.py
[ -f benchmarks/bench_cluster.py ] && $PY benchmarks/bench_cluster.py
$PY benchmarks/make_byo_store.py /tmp/byo-200k --rows 200000 --dims 64
$PY benchmarks/bench_methods_at_scale.py /tmp/byo-200k --budget 200 --methods typiclust probcover --name methods_200k
$PY benchmarks/make_byo_store.py /tmp/byo-1m --rows 1280000 --dims 384 --dtype float16
$PY benchmarks/bench_methods_at_scale.py /tmp/byo-1m --budget 1000 --name methods_1m
$PY benchmarks/make_report.py
