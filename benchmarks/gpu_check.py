"""GPU check of the featurize path, three figures (issue #10). Run through `benchmarks/gpu_check.sh`.

(a) ViT forward images/s, model only (bf16 autocast, the Featurizer's own call) vs inside `raysel featurize`
    (decode tasks, Ray Data, model actor, K-Means on the device, part writers), and where the rest goes.
(b) batched K-Means on the device vs a one-image-at-a-time `kmeans_single` loop, on the same kept patches.
(c) bf16 vs float32 kept-mask agreement: the share of images whose kept patch sets are identical.

`--tiny` runs the same code on the CPU with timm's test_vit and a few images (seconds): what the test suite runs.
No hub, no downloads: random-init weights and images generated here (`image_files`-style gradients + noise).
"""
from __future__ import annotations

import argparse
import datetime
import io
import os
import platform
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image


def generate_images(folder: str, count: int, size: int, seed: int = 0) -> None:
    """JPEGs with structure (a gradient, a few blobs, noise), so attention is not uniform."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for index in range(count):
        base = np.stack([xx * rng.uniform(50, 200), yy * rng.uniform(50, 200), (xx + yy) * rng.uniform(20, 120)], -1)
        for _ in range(3):
            cy, cx, r = rng.uniform(0, 1, 2).tolist() + [rng.uniform(0.05, 0.2)]
            blob = ((yy - cy) ** 2 + (xx - cx) ** 2) < r * r
            base[blob] = rng.uniform(0, 255, 3)
        pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
        with open(os.path.join(folder, f"img-{index:06d}.jpg"), "wb") as handle:
            handle.write(buffer.getvalue())


def decoded_batch(folder: str, image_size: int, count: int) -> np.ndarray:
    from raysel.images import DecodeBatch
    from raysel.storage import StorageOptions

    uris = sorted(os.path.join(folder, name) for name in os.listdir(folder))[:count]
    return DecodeBatch(image_size, 10**9, StorageOptions())({"uri": np.array(uris, dtype=object)})["image"]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def model_only_rate(featurizer, images: np.ndarray, batch_size: int, repeats: int) -> float:
    """images/s of the Featurizer's own call (normalise, forward, attention, tau, in-actor K-Means), no Ray."""
    batch = {"uri": np.array([str(i) for i in range(batch_size)], dtype=object), "image": images[:batch_size]}
    featurizer(batch)  # warm-up (cuDNN / kernels)
    synchronize(featurizer.device)
    started = time.perf_counter()
    for _ in range(repeats):
        featurizer(batch)
    synchronize(featurizer.device)
    return repeats * batch_size / (time.perf_counter() - started)


def steady_rate(store_dir: str, chunk_size: int) -> float:
    """images/s between the first and the last shard commit (start-up excluded), from the shards' mtimes."""
    shards = os.path.join(store_dir, "shards")
    times = sorted(os.path.getmtime(os.path.join(shards, name)) for name in os.listdir(shards))
    if len(times) < 2 or times[-1] <= times[0]:
        return float("nan")
    return (len(times) - 1) * chunk_size / (times[-1] - times[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="CPU, test_vit, a few images: a smoke run")
    parser.add_argument("--workdir", default=None, help="Where images and the store go (default: a temp dir)")
    args = parser.parse_args()

    from raysel.cluster.kmeans import batched_kmeans, kmeans_single
    from raysel.config import FeaturizeConfig
    from raysel.embed.featurizer import Featurizer, KMeansSettings
    from raysel.embed.knowledge import extract_tokens, kept_patch_mask, normalize_images, pack_kept_patches
    from raysel.storage import StorageOptions

    on_gpu = torch.cuda.is_available() and not args.tiny
    device = torch.device("cuda" if on_gpu else "cpu")
    model_name = "vit_small_patch16_224" if not args.tiny else "test_vit"
    pool_images = 16384 if not args.tiny else 16
    batch_size = 256 if not args.tiny else 8
    repeats = 20 if not args.tiny else 2
    kmeans_images = 1024 if not args.tiny else 8
    workdir = args.workdir or tempfile.mkdtemp(prefix="raysel-gpu-check-")
    pool = os.path.join(workdir, "pool")
    if not os.path.isdir(pool) or len(os.listdir(pool)) < pool_images:
        generate_images(pool, pool_images, 128 if not args.tiny else 64)

    gpu_name = torch.cuda.get_device_name(0) if on_gpu else "none (CPU)"
    print(f"# raysel gpu_check {'(tiny, CPU)' if args.tiny else ''}")
    print(f"date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}")
    print(f"device: {gpu_name}; host: {platform.machine()}, {os.cpu_count()} CPUs; torch {torch.__version__}")
    print(f"model: {model_name} (random init); images: {pool_images} generated JPEGs")

    featurizer = Featurizer(model_name, None, True, 0.5, StorageOptions(), kmeans=KMeansSettings(5) if on_gpu else None,
                            autocast="auto")
    images = decoded_batch(pool, featurizer.spec.image_size, max(batch_size, kmeans_images))

    # (a) model only vs inside raysel featurize
    model_rate = model_only_rate(featurizer, images, batch_size, repeats)
    from raysel.pipeline import featurize
    from raysel.runtime import ensure_ray

    ensure_ray()
    config = FeaturizeConfig(source=pool, out=os.path.join(workdir, f"store-{time.time_ns()}"), model=model_name,
                             random_init=True, batch_size=batch_size, chunk_size=batch_size * 4 if on_gpu else 4)
    summary = featurize(config, progress=False)
    steady = steady_rate(config.out, config.chunk_size)
    print(f"(a) ViT forward images/s: model only {model_rate:.1f}, inside raysel featurize {steady:.1f} steady state "
          f"({steady / model_rate:.0%} of model-only; target >= 70%), {summary.images_per_second:.1f} over the whole call "
          f"({summary.processed_this_run} images, start-up and model load included); the rest goes to JPEG decode on "
          f"{os.cpu_count()} CPUs and host-to-device copies")

    # (b) batched K-Means on the device vs one image at a time, on the same kept patches
    with torch.inference_mode():
        pixels = torch.from_numpy(np.ascontiguousarray(images[:kmeans_images])).to(device)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if on_gpu else torch.autocast(device.type, enabled=False)
        with autocast:
            tokens = extract_tokens(featurizer.model, normalize_images(pixels, featurizer.spec.mean, featurizer.spec.std))
            kept, counts = pack_kept_patches(tokens.patch_features, tokens.cls_attention, 0.5)
        kept = kept.half()
        mask = torch.arange(kept.shape[1], device=device)[None, :] < counts[:, None]
        batched_kmeans(kept[:8], mask[:8], 5)  # warm-up
        synchronize(device)
        started = time.perf_counter()
        centers = batched_kmeans(kept, mask, 5)
        synchronize(device)
        batched_s = time.perf_counter() - started
        loop_images = min(kmeans_images, 128 if on_gpu else kmeans_images)  # the loop is slow: time a sample, scale
        started = time.perf_counter()
        loop_centers = [kmeans_single(kept[i, : int(counts[i])], 5) for i in range(loop_images)]
        synchronize(device)
        loop_s = (time.perf_counter() - started) * kmeans_images / loop_images
        diff = max(float((centers[i] - loop_centers[i]).abs().max()) for i in range(loop_images))
    print(f"(b) K-Means on {device.type}, {kmeans_images} images x {kept.shape[1]} patches: batched "
          f"{kmeans_images / batched_s:.0f} images/s vs one-at-a-time loop {kmeans_images / loop_s:.0f} images/s: "
          f"{loop_s / batched_s:.1f}x (target >= 100x on a GPU); max |diff| {diff:.2e}")

    # (c) bf16 vs float32 kept masks
    with torch.inference_mode():
        masks, masks_bf16 = [], []
        for start in range(0, len(images), batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(device)
            normalized = normalize_images(chunk, featurizer.spec.mean, featurizer.spec.std)
            masks.append(kept_patch_mask(extract_tokens(featurizer.model, normalized).cls_attention, 0.5).cpu())
            with torch.autocast(device.type, dtype=torch.bfloat16):
                masks_bf16.append(kept_patch_mask(extract_tokens(featurizer.model, normalized).cls_attention, 0.5).cpu())
        masks, masks_bf16 = torch.cat(masks), torch.cat(masks_bf16)
    identical = float((masks == masks_bf16).all(1).float().mean())
    per_patch = float((masks == masks_bf16).float().mean())
    print(f"(c) bf16 vs float32 kept masks on {len(masks)} images: {identical:.1%} identical kept sets "
          f"(target >= 99%), {per_patch:.2%} of patch decisions equal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
