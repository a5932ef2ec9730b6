"""PT4AL pretext training throughput: Ray Train with 1 and 2 workers vs a plain single-process loop.

    .venv/bin/python benchmarks/bench_pretext.py                        # 512 images, resnet10t at 32 px, CPU
    .venv/bin/python benchmarks/bench_pretext.py --images 2048 --model resnet18

Same pool (raysel.sample_pool, 96 px PNG/JPEG decoded to --image-size), same model, same global batch,
same number of epochs, all on this machine's CPUs:

- plain: one process, a Python loop over batches that reads + decodes each batch (`DecodeBatch`, as the
  pipeline does) and takes one SGD step on its 4 rotations; torch uses every core. Also the same loop on
  a pool decoded once up front (pure training compute).
- ray-1: `train_pretext` with 1 Ray Train worker holding every core (`--cpus-per-worker` = cores).
- ray-2: `train_pretext` with 2 workers (DDP over gloo), the cores split between them.

"training images/s" counts images (each in 4 rotations) over the epochs' wall time as the workers see it
(Ray Data decodes in parallel tasks, streamed); "wall s" is the whole call: Ray Train start-up,
worker placement, epochs, checkpoints and the model file. Prints a markdown table and writes it to
benchmarks/results/pretext.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "pretext.md"


def plain_loop(
    uris: list[str], model: str, image_size: int, epochs: int, batch_size: int, seed: int, threads: int, predecode: bool = False
) -> tuple[float, float, list[float]]:
    """(training images/s, wall s, loss per epoch) of a single-process loop with no Ray at all.

    predecode: decode the whole pool once before the epochs (held in memory, not timed as training).
    """
    import torch
    import torch.nn.functional as F

    from raysel.embed.knowledge import normalize_images
    from raysel.images import DecodeBatch
    from raysel.pretext.rotation import build_rotation_net, rotated_views
    from raysel.storage import StorageOptions

    started = time.perf_counter()
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    net, spec = build_rotation_net(model, image_size, seed=seed)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    decode = DecodeBatch(image_size, 10**8, StorageOptions())
    decoded = decode({"uri": np.array(uris, dtype=object)})["image"] if predecode else None
    rng = np.random.default_rng(seed)
    train_seconds, images, history = 0.0, 0, []
    for _ in range(epochs):
        epoch_started = time.perf_counter()
        order = rng.permutation(len(uris))
        total = 0.0
        net.train()
        for start in range(0, len(uris), batch_size):
            rows = order[start : start + batch_size]
            if decoded is not None:
                pixels = torch.from_numpy(decoded[rows])
            else:
                pixels = torch.from_numpy(decode({"uri": np.array([uris[i] for i in rows], dtype=object)})["image"])
            views, labels = rotated_views(normalize_images(pixels, spec.mean, spec.std))
            loss = F.cross_entropy(net(views), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(pixels)
            images += len(pixels)
        history.append(total / len(uris))
        train_seconds += time.perf_counter() - epoch_started
    return images / train_seconds, time.perf_counter() - started, history


def ray_train(folder: str, out_dir: str, workers: int, cpus_per_worker: int, model: str, image_size: int, epochs: int, batch_size: int, seed: int):
    from raysel.config import PretextConfig
    from raysel.pretext.training import train_pretext

    started = time.perf_counter()
    summary = train_pretext(
        PretextConfig(
            source=folder, out=os.path.join(out_dir, f"ray-{workers}.pt"), model=model, image_size=image_size,
            epochs=epochs, batch_size=batch_size, num_workers=workers, cpus_per_worker=cpus_per_worker, seed=seed,
            shuffle_buffer=batch_size,
        )
    )
    return summary.images_per_second, time.perf_counter() - started, summary.history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--model", default="resnet10t")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()

    import ray

    from raysel.sample_pool import make_sample_pool

    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    cores = os.cpu_count() or 2
    work = tempfile.mkdtemp(prefix="bench-pretext-")
    try:
        folder = os.path.join(work, "pool")
        uris = sorted(make_sample_pool(folder, count=args.images, seed=args.seed))
        common = dict(model=args.model, image_size=args.image_size, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
        rows = []
        load_before = os.getloadavg()[0]
        rate, wall, history = plain_loop(uris, threads=cores, **common)
        rows.append(("plain loop (no Ray), decoding each batch", f"1 x {cores}", rate, wall, history))
        rate, wall, history = plain_loop(uris, threads=cores, predecode=True, **common)
        rows.append(("plain loop (no Ray), pool decoded once in memory", f"1 x {cores}", rate, wall, history))
        ray.init(num_cpus=cores + 1, include_dashboard=False, log_to_driver=False)  # + 1 logical CPU for the decode tasks
        for workers in (1, 2):
            per_worker = max(1, cores // workers)
            rate, wall, history = ray_train(folder, work, workers, per_worker, **common)
            rows.append((f"Ray Train, {workers} worker{'s' if workers > 1 else ''}", f"{workers} x {per_worker}", rate, wall, history))
        ray.shutdown()
        load_after = os.getloadavg()[0]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    plain_rate = rows[0][2]
    lines = [
        f"Machine: {platform.machine()}, {cores} CPUs, no GPU; load average {load_before:.1f} before, {load_after:.1f} "
        f"after (other processes share the machine). {args.images} images ({args.image_size} px), model "
        f"{args.model}, global batch {args.batch_size} (x4 rotations), {args.epochs} epochs, SGD lr 0.1.",
        "",
        "| setup | workers x threads | training images/s | vs plain | wall s (incl. start-up) | loss per epoch |",
        "|---|---|---|---|---|---|",
        *[
            f"| {name} | {shape} | {rate:.1f} | {rate / plain_rate:.2f}x | {wall:.1f} | {' '.join(f'{h:.3f}' for h in history)} |"
            for name, shape, rate, wall, history in rows
        ],
        "",
        "Training images/s counts the epochs only; wall s adds everything else (Ray Train start-up: worker",
        "placement, process group, dataset planning; checkpoints; the model file). Ray Data decodes in",
        "parallel tasks that overlap the training step, which the first plain loop does in series; two",
        "single-threaded workers also use 2 cores better than one process's 2 intra-op threads on these",
        "small batches. On a shared machine the ratios move with the load; repeat before trusting",
        "a difference under ~20%. Across GPUs and nodes each worker brings its own accelerator.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as handle:
        handle.write(text)


if __name__ == "__main__":
    main()
