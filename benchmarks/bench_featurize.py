"""images/s of `raysel featurize` (Ray Data pipeline) vs a plain single-process PyTorch loop.

Same images, same model, same cores, decode included; both produce embeddings and knowledge
clusters. Run on this machine:

    .venv/bin/python benchmarks/bench_featurize.py            # ViT-S/16 (DINO-sized, random init), 768 images (~6 min)
    .venv/bin/python benchmarks/bench_featurize.py --quick    # test_vit, 96 images

The pipeline's rate includes everything `raysel featurize` does per run (listing, Ray Data
planning, starting the model and K-Means actors, loading the model, writing shards); the plain
loop's excludes building its model. Those fixed seconds weigh on small pools: at 192 images the
ratio was 0.66x on this machine, at 768 images 0.84x; at millions of images only the steady state counts.

The model is randomly initialised (no hub here); its compute equals the pretrained one's.
Writes a markdown table to benchmarks/results/featurize.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from raysel.cluster.kmeans import batched_kmeans  # noqa: E402
from raysel.config import FeaturizeConfig, RayConfig  # noqa: E402
from raysel.embed.backbone import input_spec, load_backbone  # noqa: E402
from raysel.embed.knowledge import extract_tokens, normalize_images, pack_kept_patches  # noqa: E402
from raysel.images import read_and_decode  # noqa: E402
from raysel.storage import StorageOptions  # noqa: E402


def make_images(folder: str, count: int, size: int = 256) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        # Smooth random images: JPEG sizes like photos, not like noise.
        small = rng.integers(0, 256, size=(size // 16, size // 16, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)
        path = os.path.join(folder, f"img-{index:05d}.jpg")
        image.save(path, quality=90)
        paths.append(path)
    return paths


def plain_loop(paths: list[str], config: FeaturizeConfig) -> float:
    """The single-process baseline: decode, forward, kept patches, batched K-Means, batch by batch."""
    torch.set_num_threads(os.cpu_count() or 1)
    model = load_backbone(config.model, random_init=True, seed=config.seed)
    spec = input_spec(model)
    started = time.perf_counter()
    done = 0
    for start in range(0, len(paths), config.batch_size):
        decoded = [read_and_decode(p, spec.image_size, config.max_image_pixels, StorageOptions()) for p in paths[start : start + config.batch_size]]
        pixels = torch.from_numpy(np.stack([image for image, _ in decoded]))
        with torch.inference_mode():
            tokens = extract_tokens(model, normalize_images(pixels, spec.mean, spec.std))
            kept, counts = pack_kept_patches(tokens.patch_features, tokens.cls_attention, config.tau)
            mask = torch.arange(kept.shape[1])[None, :] < counts[:, None]
            batched_kmeans(kept.float(), mask, config.clusters, config.kmeans_iters, config.kmeans_tol)
        done += len(decoded)
    return done / (time.perf_counter() - started)


def pipeline(folder: str, out: str, config: FeaturizeConfig) -> float:
    from raysel.pipeline import featurize

    summary = featurize(FeaturizeConfig(**{**config.__dict__, "source": folder, "out": out}), progress=False)
    return summary.images_per_second


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "featurize.md"))
    args = parser.parse_args()
    model = "test_vit" if args.quick else "vit_small_patch16_224"
    count = args.images or (96 if args.quick else 768)
    config = FeaturizeConfig(source="-", out="-", model=model, random_init=True, batch_size=32, chunk_size=64)

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "pool")
        os.makedirs(folder)
        paths = make_images(folder, count)
        ray_started = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        ray_start_s = time.perf_counter() - ray_started
        # Warm both paths once (model construction, Ray worker start-up), then measure.
        pipeline(folder, os.path.join(tmp, "warm"), config)
        plain_loop(paths[: config.batch_size], config)
        rates = {"plain": [], "pipeline": []}
        for repeat in range(2):  # interleaved, so drift hits both alike
            rates["plain"].append(plain_loop(paths, config))
            rates["pipeline"].append(pipeline(folder, os.path.join(tmp, f"store-{repeat}"), config))
        ray.shutdown()

    plain, piped = max(rates["plain"]), max(rates["pipeline"])
    lines = [
        f"featurize throughput, {model} (random init), {count} JPEG images 256x256 -> {config.clusters} knowledge clusters, "
        f"batch {config.batch_size}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "",
        "| path | images/s (best of 2) | all runs |",
        "|---|---|---|",
        f"| plain single-process loop (decode + forward + K-Means) | {plain:.1f} | {', '.join(f'{r:.1f}' for r in rates['plain'])} |",
        f"| raysel featurize (Ray Data, embedded Ray) | {piped:.1f} | {', '.join(f'{r:.1f}' for r in rates['pipeline'])} |",
        f"| ratio pipeline / plain | {piped / plain:.2f}x | |",
        "",
        f"Ray start-up (not in the rates above, paid once per process): {ray_start_s:.1f} s.",
    ]
    text = "\n".join(lines)
    print(text)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as handle:
        handle.write(text + "\n")


if __name__ == "__main__":
    main()
