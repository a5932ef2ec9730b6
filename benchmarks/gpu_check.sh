#!/usr/bin/env bash
# GPU check of featurize (issue #10): prints (a) model-only vs pipeline images/s, (b) batched vs looped K-Means,
# (c) bf16 vs float32 kept-mask agreement. Under 6 minutes on one GPU; `--tiny` runs it on the CPU in seconds.
# Usage: bash benchmarks/gpu_check.sh [--tiny] [--workdir DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}"
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
export RAY_DEDUP_LOGS=0 RAY_DATA_DISABLE_PROGRESS_BARS=1
exec timeout 600 "$PYTHON" benchmarks/gpu_check.py "$@"
