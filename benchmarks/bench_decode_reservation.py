"""CPU a decode task uses vs what it reserves: `DecodeBatch` with 8 read threads, decodes unlimited vs limited.

PIL decodes and resizes outside the GIL, so a task with 8 threads decoding at once uses up to 8
cores while Ray counts the 1 CPU it reserves. `DecodeBatch(cpus=1)` lets its threads read
concurrently but decode one image at a time. This measures cores used (process CPU time / wall
time) and images/s for both, interleaved, on the same 500x375 JPEGs. Run on this machine:

    .venv/bin/python benchmarks/bench_decode_reservation.py           # 256 images, 5 rounds (~1 min)

Writes benchmarks/results/decode_reservation.md.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from raysel.images import DecodeBatch  # noqa: E402
from raysel.storage import StorageOptions  # noqa: E402


def make_jpegs(folder: str, count: int) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        small = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)  # smooth: photo-like JPEG sizes
        path = os.path.join(folder, f"img-{index:05d}.jpg")
        Image.fromarray(small).resize((500, 375), Image.Resampling.BICUBIC).save(path, quality=90)
        paths.append(path)
    return paths


def measure(decode: DecodeBatch, batch: dict) -> tuple[float, float]:
    """(cores used, images/s) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    decode(batch)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return cpu / wall, len(batch["uri"]) / wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        batch = {"uri": np.array(make_jpegs(tmp, args.images), dtype=object)}
        variants = {
            "8 threads, decodes unlimited (before)": DecodeBatch(224, 89_478_485, StorageOptions(), 8, cpus=8),
            "8 threads, 1 decode at a time (`cpus=1`, now)": DecodeBatch(224, 89_478_485, StorageOptions(), 8, cpus=1),
        }
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
        for decode in variants.values():
            decode(batch)  # warm the page cache
        for _ in range(args.rounds):
            for name, decode in variants.items():
                results[name].append(measure(decode, batch))
    lines = [
        "# Decode task: CPU used vs reserved",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_decode_reservation.py --images {args.images} --rounds {args.rounds}`",
        f"Machine: {os.cpu_count()} CPUs (shared), load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after; "
        f"{datetime.date.today().isoformat()}. {args.images} JPEGs 500x375 -> 224x224, median of {args.rounds} interleaved rounds.",
        "",
        "| decode task | cores used (CPU s / wall s) | images/s |",
        "|---|---:|---:|",
    ]
    for name, values in results.items():
        cores, rate = np.median([v[0] for v in values]), np.median([v[1] for v in values])
        lines.append(f"| {name} | {cores:.2f} | {rate:.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = os.path.join(os.path.dirname(__file__), "results", "decode_reservation.md")
    with open(out, "w") as handle:
        handle.write(text)


if __name__ == "__main__":
    main()
