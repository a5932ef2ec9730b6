"""Assemble docs/benchmarks.md from the figures the benchmark scripts wrote to benchmarks/results/.

    .venv/bin/python benchmarks/make_report.py     # after running the benchmarks (see benchmarks/run_all.sh)
"""
from __future__ import annotations

import os

HERE = os.path.dirname(os.path.abspath(__file__))
SECTIONS = [
    ("featurize.md", "Featurize: pipeline vs plain loop", ".venv/bin/python benchmarks/bench_featurize.py"),
    ("kmeans.md", "Knowledge clusters: batched K-Means vs one image at a time", ".venv/bin/python benchmarks/bench_kmeans.py"),
    ("select.md", "Selection: exact K-Center-Greedy", ".venv/bin/python benchmarks/bench_select.py"),
    ("select_large.md", "Selection: a larger store (no per-pick baseline)",
     ".venv/bin/python benchmarks/bench_select.py --images 600000 --no-per-pick --shards 1,2 --results benchmarks/results/select_large.md"),
    ("low_budget.md", "TypiClust and ProbCover wall time", ".venv/bin/python benchmarks/bench_low_budget.py"),
    ("methods_200k.md", "Every method at scale: 200k x 64, budget 200 (typiclust, probcover)",
     "flock /tmp/raysel-heavy.lock .venv/bin/python benchmarks/bench_methods_at_scale.py /tmp/byo-200k --budget 200 --methods typiclust probcover --name methods_200k"),
    ("methods_1m.md", "Every method at scale: 1.28M x 384 float16, budget 1000",
     "flock /tmp/raysel-heavy.lock .venv/bin/python benchmarks/bench_methods_at_scale.py /tmp/byo-1m --budget 1000 --name methods_1m"),
    ("simulate_report_scale.md", "simulate and report at 1.28M (bounded driver memory)",
     ".venv/bin/python benchmarks/bench_simulate_report_at_scale.py /tmp/byo-200k-384 /tmp/byo-1m --test-store /tmp/byo-test"),
    ("pretext.md", "PT4AL pretext training throughput", ".venv/bin/python benchmarks/bench_pretext.py"),
    ("cluster.md", "Local multi-node cluster vs embedded Ray", ".venv/bin/python benchmarks/bench_cluster.py"),
    ("gpu.md", "GPU figures", "see the file's own header"),
    ("featurize_scale.md", "Featurize at scale: small vs large pool, driver memory, patch traffic",
     "flock /tmp/raysel-heavy.lock .venv/bin/python benchmarks/bench_featurize_scale.py --small 10000 --large 100000 --out benchmarks/results/featurize_scale.md"),
    ("gpu_check.md", "GPU check: model vs pipeline, batched K-Means, bf16 kept masks", "bash benchmarks/gpu_check.sh"),
]


def main() -> None:
    parts = [
        "# Benchmarks",
        "",
        "Every figure below is a ratio against a baseline run side by side in the same process or run,",
        "on the machine named in each table. Reproduce all of them with `bash benchmarks/run_all.sh`",
        "(or one at a time with the command under each heading); this page is rebuilt by",
        "`benchmarks/make_report.py` from `benchmarks/results/`.",
        "",
        "Peak RSS: from 2026-12-06 on, the process's own high-water mark (Linux's VmHWM,",
        "`raysel/process_memory.py`). Earlier figures used `getrusage().ru_maxrss`, which in a process",
        "started by `subprocess` (vfork + exec) also holds its parent's peak when that was larger: for",
        "the benchmarks' per-run child processes that parent is the small benchmark script, so those",
        "figures are upper bounds of the same quantity; the targets they meet hold all the more.",
        "",
    ]
    for filename, title, command in SECTIONS:
        path = os.path.join(HERE, "results", filename)
        if not os.path.exists(path):
            continue
        with open(path) as handle:
            body = handle.read().strip()
        parts += [f"## {title}", "", f"Command: `{command}`", "", body, ""]
    target = os.path.join(HERE, "..", "docs", "benchmarks.md")
    with open(target, "w") as handle:
        handle.write("\n".join(parts))
    print(f"wrote {os.path.normpath(target)}")


if __name__ == "__main__":
    main()
