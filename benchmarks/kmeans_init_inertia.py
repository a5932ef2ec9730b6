"""GEAL K-Means seeding: which init gives the lower inertia on patch features of real photographs?

    flock /tmp/raysel-heavy.lock .venv/bin/python benchmarks/kmeans_init_inertia.py

Compares, on the same points, the K-Means rules raysel offers (`--kmeans-init`, `--kmeans-stop`,
`--kmeans-empty`) against scikit-learn's `KMeans(n_clusters=K, n_init=10)` (k-means++ seeding,
ten restarts, the best kept): the lowest inertia any of them reaches, used as the baseline.

Points: the kept patches (tau = 0.5 of the last block's class-token attention) of 48 images,
seeded random crops (160 to 427 px, resized bicubic to 224) of scikit-learn's two bundled
photographs (`sklearn.datasets.load_sample_images`: china.jpg, flower.jpg). No pretrained ViT can
be downloaded here, so the features come from two sources, both named in the output:

- `vit-random`: the patch features raysel's featurizer extracts (block 11 of 12, final norm) from
  `vit_small_patch16_224` with *random* weights (seed 0). Real photographs, a real pipeline, but
  not DINO's semantic features.
- `pixels`: the raw 16 x 16 x 3 pixel patches (768 numbers, ImageNet-normalised) of the same kept
  patches: real image statistics with no model at all.

Figures per rule: inertia / baseline inertia (mean and worst over images), how often the rule is
within 1% of the baseline, and the share of clusters holding a single patch (a singleton is an
outlier patch that raises its image's max-over-clusters score in K-Center-Greedy). The random
rules run with three --seed values. Writes benchmarks/results/kmeans_init.md.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from raysel.cluster.kmeans import image_seed, kmeans_single, nearest_center
from raysel.embed.backbone import load_backbone
from raysel.embed.knowledge import extract_tokens, kept_patch_order, normalize_images

RULES = {
    "farthest + max-shift (raysel default)": {"init": "farthest", "stop": "max-shift", "empty": "keep"},
    "random + sum-shift^2 + reseed (released kmeans_pytorch)": {"init": "random", "stop": "sum-shift-squared", "empty": "reseed"},
    "kmeans++ + max-shift": {"init": "kmeans++", "stop": "max-shift", "empty": "keep"},
    "kmeans++ + sum-shift^2 + reseed": {"init": "kmeans++", "stop": "sum-shift-squared", "empty": "reseed"},
}
RANDOM_SEEDS = (0, 1, 2)


def crops(count: int, seed: int) -> np.ndarray:
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        photo = photos[i % len(photos)]
        size = int(rng.integers(160, min(photo.shape[:2]) + 1))
        top = int(rng.integers(0, photo.shape[0] - size + 1))
        left = int(rng.integers(0, photo.shape[1] - size + 1))
        crop = Image.fromarray(photo[top : top + size, left : left + size]).resize((224, 224), Image.BICUBIC)
        out.append(np.asarray(crop))
    return np.stack(out)


def kept_points(images: np.ndarray, tau: float) -> dict[str, list[torch.Tensor]]:
    model = load_backbone("vit_small_patch16_224", random_init=True, seed=0)
    pixels = torch.from_numpy(images)
    normalized = normalize_images(pixels, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    with torch.inference_mode():
        tokens = extract_tokens(model, normalized)
    order, num_kept = kept_patch_order(tokens.cls_attention, tau)
    # [B, 196, 768] raw pixel patches in the ViT's patch order (row-major 14 x 14 grid).
    patches = normalized.unfold(2, 16, 16).unfold(3, 16, 16).permute(0, 2, 3, 1, 4, 5).reshape(len(images), 196, -1)
    sources: dict[str, list[torch.Tensor]] = {"vit-random": [], "pixels": []}
    for b in range(len(images)):
        kept = order[b, : num_kept[b]]
        sources["vit-random"].append(tokens.patch_features[b, kept].float())
        sources["pixels"].append(patches[b, kept].float())
    return sources


def inertia(points: torch.Tensor, centers: torch.Tensor) -> tuple[float, int]:
    assignment = nearest_center(points, centers)
    sizes = torch.bincount(assignment, minlength=len(centers))
    return float(((points - centers[assignment]) ** 2).sum()), int((sizes == 1).sum())


def speed(repeats: int = 3) -> str:
    """Batched K-Means throughput of each init on synthetic featurizer-shaped batches (256 images, 196 x 384
    float16, 20..100 kept, groups of 64 as on CPU), as a ratio to farthest point; best of `repeats`."""
    from raysel.cluster.kmeans import batched_kmeans

    g = torch.Generator().manual_seed(0)
    num_images, patches, dim = 256, 196, 384
    parts = torch.randn(num_images, 6, dim, generator=g)
    assign = torch.randint(0, 6, (num_images, patches), generator=g)
    points = (parts[torch.arange(num_images)[:, None], assign] + 0.3 * torch.randn(num_images, patches, dim, generator=g)).half()
    mask = torch.arange(patches)[None] < torch.randint(20, 101, (num_images,), generator=g)[:, None]
    seeds = [image_seed(f"u{i}") for i in range(num_images)]
    rules = {name: {**rule, "seeds": seeds} for name, rule in RULES.items()}
    best = {name: float("inf") for name in rules}
    for _ in range(repeats):
        for name, rule in rules.items():
            started = time.perf_counter()
            batched_kmeans(points, mask, 5, group_size=64, **rule)
            best[name] = min(best[name], time.perf_counter() - started)
    reference = best[next(iter(rules))]
    lines = ["## Speed (batched, CPU, 2 threads)", "", "| rule | images/s | vs farthest |", "|---|---|---|"]
    lines += [f"| {name} | {num_images / best[name]:.0f} | {reference / best[name]:.2f} |" for name in rules]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--speed-only", action="store_true", help="only the throughput table (appended to --out)")
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--clusters", type=int, default=5)
    parser.add_argument("--tau", type=float, default=0.5)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "kmeans_init.md"))
    args = parser.parse_args()
    from sklearn.cluster import KMeans

    torch.set_num_threads(2)
    if args.speed_only:
        text = speed()
        print(text)
        with open(args.out, "a") as handle:
            handle.write("\nCommand: `flock /tmp/raysel-heavy.lock .venv/bin/python benchmarks/kmeans_init_inertia.py --speed-only`\n\n" + text)
        return
    started = time.time()
    images = crops(args.images, seed=0)
    sources = kept_points(images, args.tau)
    lines = [
        "# GEAL K-Means seeding: inertia on patch features of real photographs",
        "",
        f"Command: `flock /tmp/raysel-heavy.lock .venv/bin/python benchmarks/kmeans_init_inertia.py` "
        f"({args.images} crops of sklearn's two sample photographs, tau {args.tau}, K = {args.clusters}, "
        "at most 100 iterations, tol 1e-4). Baseline: scikit-learn `KMeans(n_clusters=K, n_init=10, random_state=0)` "
        "on the same points. Ratio = inertia / baseline inertia (1.00 = as good as ten k-means++ restarts). "
        "Random rules: mean over --seed 0, 1, 2.",
        "",
    ]
    for source, per_image in sources.items():
        counts = [len(p) for p in per_image]
        usable = [i for i, n in enumerate(counts) if n > args.clusters]
        base = {}
        for i in usable:
            km = KMeans(n_clusters=args.clusters, n_init=10, random_state=0).fit(per_image[i].double().numpy())
            base[i] = inertia(per_image[i], torch.from_numpy(km.cluster_centers_).float())[0]
        lines += [
            f"## {source}: {len(usable)} images with more than K kept patches (kept per image: "
            f"{min(counts)} .. {max(counts)}, median {int(np.median(counts))})",
            "",
            "| rule | mean ratio | worst ratio | within 1% of baseline | singleton clusters |",
            "|---|---|---|---|---|",
        ]
        for name, rule in RULES.items():
            seeds = RANDOM_SEEDS if rule["init"] != "farthest" or rule["empty"] == "reseed" else (0,)
            ratios, singletons, clusters = [], 0, 0
            for seed in seeds:
                for i in usable:
                    centers = kmeans_single(per_image[i], args.clusters, 100, 1e-4, **rule, seed=image_seed(f"crop-{i}", seed))
                    value, singles = inertia(per_image[i], centers)
                    ratios.append(value / base[i])
                    singletons += singles
                    clusters += args.clusters
            ratios_ = np.array(ratios)
            lines.append(
                f"| {name} | {ratios_.mean():.3f} | {ratios_.max():.3f} | {100 * (ratios_ <= 1.01).mean():.0f}% | "
                f"{100 * singletons / clusters:.1f}% |"
            )
        lines.append("")
    lines.append(f"Wall time: {time.time() - started:.0f} s.")
    text = "\n".join(lines) + "\n"
    print(text)
    with open(args.out, "w") as handle:
        handle.write(text)


if __name__ == "__main__":
    main()
