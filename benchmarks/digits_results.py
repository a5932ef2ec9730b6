"""Accuracy vs budget on scikit-learn's digits, for every registered selection method (`raysel simulate`).

    .venv/bin/python benchmarks/digits_results.py            # a few minutes on 2 cores; writes docs/

1. The 1797 bundled digits (8x8 scans, 10 classes; `raysel.datasets.digits`, no download), split
   stratified 75 / 25 with seed 0: a pool of 1347 images and a test split of 450.
2. Embedding: the 64 pixel intensities, standardized with the pool's per-pixel mean and standard
   deviation (pixels that never vary are 0). No model: nothing to download and nothing learned from
   the labels, so every method sees the same plain features.
3. geal's knowledge clusters: a stand-in. GEAL groups the ViT patches that hold the class token's
   attention; an 8x8 digit has no ViT, so each image gets K = 4 vectors, its four 4x4 quadrants of the
   standardized pixels. This exercises GEAL's set-to-set K-Center-Greedy, not its features.
4. pt4al's pretext_loss: the trained ResNet-18 rotation losses `benchmarks/pt4al_digits.py` writes
   (its losses.csv, `--pretext-losses`). Without that file pt4al is left out, and the doc says so.
5. `raysel simulate` (the CLI's own code path, in process) over every registered method, `--budgets`,
   `--seeds`; writes DIR/results.parquet, results.csv, accuracy.png, config.yaml.
6. Copies the plot to docs/img/digits_accuracy.png and the table (mean ± std over seeds) into
   docs/results.md between the markers below; the reading around it is written by hand.
"""
from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import time

import numpy as np

START_MARKER = "<!-- digits-results:table:start -->"
END_MARKER = "<!-- digits-results:table:end -->"


def uri_of(index: int) -> str:
    return f"sklearn-digits/d{index:04d}.png"  # the names raysel.datasets.digits.write_digits gives the files


def read_pretext_losses(path: str) -> dict[int, float]:
    """digit index -> rotation loss, from pt4al_digits.py's losses.csv (uri ends in dNNNN.png)."""
    with open(path) as handle:
        return {int(os.path.basename(row["uri"])[1:5]): float(row["pretext_loss"]) for row in csv.DictReader(handle)}


def write_split(work: str, name: str, indices: np.ndarray, features: np.ndarray, labels: np.ndarray,
                pretext: dict[int, float] | None) -> tuple[str, str]:
    """A feature store (uri, embedding, clusters, pretext_loss) and a labels CSV of the digits in `indices`."""
    import pyarrow as pa

    from raysel.store import write_store

    images = features[indices]
    quadrants = images.reshape(-1, 2, 4, 2, 4).transpose(0, 1, 3, 2, 4).reshape(-1, 4, 16)
    columns = {
        "uri": [uri_of(i) for i in indices],
        "embedding": pa.array(list(images.astype(np.float32)), pa.list_(pa.float32())),
        "clusters": pa.array([list(q) for q in quadrants.astype(np.float32)], pa.list_(pa.list_(pa.float32()))),
    }
    if pretext is not None:
        columns["pretext_loss"] = pa.array([pretext[i] for i in indices], pa.float32())
    store = write_store(os.path.join(work, f"{name}-store"), pa.table(columns)).uri
    labels_path = os.path.join(work, f"{name}-labels.csv")
    with open(labels_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uri", "label"])
        writer.writerows((uri_of(i), int(labels[i])) for i in indices)
    return store, labels_path


def markdown_table(rows: list[dict], budgets: list[int], methods: list[str]) -> str:
    """Methods x budgets, mean ± std test accuracy over seeds; the best mean per budget in bold."""
    cells: dict[tuple[str, int], list[float]] = {}
    for row in rows:
        cells.setdefault((row["method"], row["labeled"]), []).append(row["accuracy"])
    best = {b: max(np.mean(cells[(m, b)]) for m in methods) for b in budgets}
    lines = ["| method | " + " | ".join(f"{b} labels" for b in budgets) + " |", "|---|" + "---|" * len(budgets)]
    for method in methods:
        parts = []
        for budget in budgets:
            values = cells[(method, budget)]
            text = f"{np.mean(values):.3f} ± {np.std(values):.3f}"
            parts.append(f"**{text}**" if np.mean(values) >= best[budget] - 1e-12 else text)
        lines.append(f"| {method} | " + " | ".join(parts) + " |")
    return "\n".join(lines)


def update_results_md(path: str, table: str) -> None:
    """Replace the text between the markers in docs/results.md (append a stub section when absent)."""
    text = open(path).read() if os.path.exists(path) else "# Results\n"
    block = f"{START_MARKER}\n{table}\n{END_MARKER}"
    if START_MARKER in text and END_MARKER in text:
        head, rest = text.split(START_MARKER, 1)
        text = head + block + rest.split(END_MARKER, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## Accuracy vs budget on digits\n\n" + block + "\n"
    with open(path, "w") as handle:
        handle.write(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="out/digits_results", help="Working folder: stores, labels, the simulation")
    parser.add_argument("--budgets", default="10,20,40,80,160", help="Labeled images after each round")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--methods", default=None, help="Default: every registered method")
    parser.add_argument("--pretext-losses", default="out/pt4al_digits/losses.csv",
                        help="pt4al_digits.py's per-image losses (pt4al is left out without them)")
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--docs", default="docs", help="Where results.md and img/digits_accuracy.png go ('' to skip)")
    args = parser.parse_args()

    from sklearn.model_selection import train_test_split

    from raysel.cli import main as raysel_main
    from raysel.datasets.digits import load_digits_arrays
    from raysel.select import list_methods
    from raysel.simulate.results import read_results
    from raysel.storage import StorageOptions

    images, labels = load_digits_arrays()
    pool, test = train_test_split(np.arange(len(labels)), test_size=0.25, stratify=labels, random_state=0)
    pool, test = np.sort(pool), np.sort(test)
    pixels = images.reshape(len(images), -1).astype(np.float64)
    mean, std = pixels[pool].mean(axis=0), pixels[pool].std(axis=0)
    features = np.where(std > 0, (pixels - mean) / np.where(std > 0, std, 1.0), 0.0)

    pretext = read_pretext_losses(args.pretext_losses) if os.path.exists(args.pretext_losses) else None
    methods = args.methods.split(",") if args.methods else list_methods()
    if pretext is None and "pt4al" in methods:
        methods.remove("pt4al")
        print(f"no {args.pretext_losses}: pt4al left out (run benchmarks/pt4al_digits.py first)", file=sys.stderr)

    os.makedirs(args.out, exist_ok=True)
    pool_store, pool_labels = write_split(args.out, "pool", pool, features, labels, pretext)
    test_store, test_labels = write_split(args.out, "test", test, features, labels, pretext)
    simulation = os.path.join(args.out, "simulation")
    command = [
        "simulate", pool_store, "--labels", pool_labels, "--test-store", test_store, "--test-labels", test_labels,
        "--out", simulation, "--methods", ",".join(methods), "--budgets", args.budgets, "--seeds", args.seeds,
        "--num-cpus", str(args.num_cpus),
    ]
    print("raysel " + " ".join(command))
    started = time.time()
    code = raysel_main(command)
    if code:
        return code
    print(f"simulate: {time.time() - started:.0f} s for {len(methods)} methods")

    rows = read_results(simulation, StorageOptions())
    budgets = [int(b) for b in args.budgets.split(",")]
    table = markdown_table(rows, budgets, sorted(methods, key=lambda m: (m != "random", m)))
    print(table)
    if args.docs:
        os.makedirs(os.path.join(args.docs, "img"), exist_ok=True)
        shutil.copyfile(os.path.join(simulation, "accuracy.png"), os.path.join(args.docs, "img", "digits_accuracy.png"))
        update_results_md(os.path.join(args.docs, "results.md"), table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
