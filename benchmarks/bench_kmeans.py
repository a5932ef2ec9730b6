"""Knowledge-cluster K-Means: one image at a time vs the whole batch at once.

    .venv/bin/python benchmarks/bench_kmeans.py                 # 512 images, CPU
    .venv/bin/python benchmarks/bench_kmeans.py --device cuda   # on a GPU

Builds tokens shaped like the featurizer's output for ViT-S/16 at tau = 0.5
(196 patches x 384 dims, float16, each image's kept patches first, 20..100
kept), clusters them with K = 5 (at most 100 iterations, tolerance 1e-4), and
times, in one process on the same data:

- the released code's pattern: a Python loop over images calling `kmeans_single`,
- the same loop with scikit-learn's KMeans per image (`KMeans(n_clusters=K).fit(points)`, the
  pattern most GEAL-style code on GitHub uses; n_init=1, same max_iter and tol),
- the same loop with faiss.Kmeans per image (C++ Lloyd with its own random
  init, stopping once assignments no longer change: its centers differ),
- `batched_kmeans` on batches of images, whole or in count-sorted groups.

The batched centers are checked against the per-image loop's. Each timing is
the best of --repeats rounds, each round running every method once (on a
shared machine the best run is the least disturbed one). Prints a markdown table and writes it to
benchmarks/results/kmeans.md.

The synthetic patch features are a few "parts" per image (2..8 random
directions, LayerNorm scale) plus noise: K-Means on them converges in a few
iterations, as on real patch features, which cluster by object part.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from raysel.cluster.kmeans import batched_kmeans, kmeans_single

RESULTS = Path(__file__).parent / "results" / "kmeans.md"


def synthetic_kept_features(
    num_images: int, num_patches: int, dim: int, min_kept: int, max_kept: int, noise: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """[N, P, D] float16 kept patch features (packed first, zero padding) and [N] int32 kept counts."""
    rng = np.random.default_rng(seed)
    kept_features = np.zeros((num_images, num_patches, dim), dtype=np.float16)
    num_kept = rng.integers(min_kept, max_kept + 1, size=num_images).astype(np.int32)
    for image in range(num_images):
        parts = rng.standard_normal((rng.integers(2, 9), dim))
        labels = rng.integers(0, len(parts), size=num_kept[image])
        patches = parts[labels] + noise * rng.standard_normal((num_kept[image], dim))
        kept_features[image, : num_kept[image]] = patches
    return kept_features, num_kept


def best_times(
    methods: dict[str, Callable[[], object]], repeats: int, synchronize: Callable[[], None]
) -> dict[str, tuple[float, object]]:
    """Best wall time and last result of each method, over `repeats` rounds that run every method once.

    Interleaving the rounds spreads a noisy neighbour's load over all methods
    instead of landing on whichever ran at that moment.
    """
    best: dict[str, tuple[float, object]] = {name: (float("inf"), None) for name in methods}
    for _ in range(repeats):
        for name, run in methods.items():
            synchronize()
            started = time.perf_counter()
            result = run()
            synchronize()
            best[name] = (min(best[name][0], time.perf_counter() - started), result)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--patches", type=int, default=196)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--min-kept", type=int, default=20)
    parser.add_argument("--max-kept", type=int, default=100)
    parser.add_argument("--noise", type=float, default=0.6, help="patch noise around its part (part norm ~sqrt(D))")
    parser.add_argument("--clusters", type=int, default=5)
    parser.add_argument("--max-iters", type=int, default=100)
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=256, help="images per batched_kmeans call")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-faiss", action="store_true")
    parser.add_argument("--no-sklearn", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    device = torch.device(args.device)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    kept_np, num_kept_np = synthetic_kept_features(
        args.images, args.patches, args.dim, args.min_kept, args.max_kept, args.noise, args.seed
    )
    kept = torch.from_numpy(kept_np).to(device)
    num_kept = torch.from_numpy(num_kept_np).to(device)
    mask = torch.arange(args.patches, device=device)[None, :] < num_kept[:, None]
    k, max_iters, tol = args.clusters, args.max_iters, args.tol
    counts = num_kept_np.tolist()

    def per_image_loop() -> torch.Tensor:
        return torch.stack([kmeans_single(kept[i, : counts[i]], k, max_iters, tol) for i in range(args.images)])

    def batched(group_size: int | None) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            parts = []
            for start in range(0, args.images, args.batch_size):
                rows = slice(start, start + args.batch_size)
                parts.append(batched_kmeans(kept[rows], mask[rows], k, max_iters, tol, group_size))
            return torch.cat(parts)

        return run

    loop_label = "per-image loop, `kmeans_single`"
    faiss_label = "per-image loop, `faiss.Kmeans` (C++; stops when assignments settle; own random init)"
    methods: dict[str, Callable[[], object]] = {loop_label: per_image_loop}
    if not args.no_faiss and device.type == "cpu":
        import faiss

        faiss.omp_set_num_threads(torch.get_num_threads())

        def faiss_loop() -> None:
            for i in range(args.images):
                # min_points_per_centroid=1: 20..100 points per image is all there is.
                kmeans = faiss.Kmeans(args.dim, k, niter=max_iters, seed=args.seed, min_points_per_centroid=1)
                kmeans.train(kept_np[i, : counts[i]].astype(np.float32))

        methods[faiss_label] = faiss_loop
    sklearn_label = "per-image loop, scikit-learn `KMeans(n_clusters=K, n_init=1)` (GitHub GEAL-style code)"
    if not args.no_sklearn:
        from sklearn.cluster import KMeans

        def sklearn_loop() -> None:
            for i in range(args.images):
                points = kept[i, : counts[i]].float().cpu().numpy()
                KMeans(n_clusters=min(k, len(points)), n_init=1, max_iter=max_iters, tol=tol, random_state=args.seed).fit(points)

        methods[sklearn_label] = sklearn_loop
    for group_size in [None, 32, 64, 128] if device.type == "cpu" else [None]:
        label = f"`batched_kmeans`, batches of {args.batch_size}" + (
            f", groups of {group_size}" if group_size else ", one group"
        )
        methods[label] = batched(group_size)

    timings = best_times(methods, args.repeats, synchronize)
    loop_seconds, reference = timings[loop_label]
    rows = []
    for label, (seconds, centers) in timings.items():
        if label == loop_label:
            difference = "reference"
        elif isinstance(centers, torch.Tensor):
            difference = f"{float((centers - reference).abs().max()):.1e}"
        else:
            difference = "not compared"
        rows.append((label, seconds, difference))

    lines = [
        f"K-Means for knowledge clusters: {args.images} images x {args.patches} patches x {args.dim} dims "
        f"(float16), {args.min_kept}..{args.max_kept} kept per image, noise {args.noise}, K={k}, "
        f"max_iters={max_iters}, tol={tol}, device {device.type}",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads"
        + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else "")
        + f"; best of {args.repeats} runs.",
        "",
        "| method | images/s | speedup vs `kmeans_single` loop | speedup vs scikit-learn loop | max abs diff vs `kmeans_single` loop |",
        "|---|---:|---:|---:|---:|",
    ]
    sklearn_seconds = timings[sklearn_label][0] if sklearn_label in timings else None
    for label, seconds, difference in rows:
        versus_sklearn = f"{sklearn_seconds / seconds:.1f}x" if sklearn_seconds else "-"
        lines.append(
            f"| {label} | {args.images / seconds:,.0f} | {loop_seconds / seconds:.1f}x | {versus_sklearn} | {difference} |"
        )
    table = "\n".join(lines)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table + "\n")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
