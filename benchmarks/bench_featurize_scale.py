"""featurize at two pool sizes in one process: images/s, driver peak RSS, bytes per image leaving the model actor.

Usage: python benchmarks/bench_featurize_scale.py --small 10000 --large 100000 [--out benchmarks/results/featurize_scale.md]
Wrap in `flock /tmp/raysel-heavy.lock` on shared machines. Images: 64 px JPEGs from a generator (gpu_check's),
model: timm's test_vit, random init. The large run goes first-to-last after the small one, same Ray session.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from gpu_check import generate_images  # noqa: E402


class PeakRss:
    """Driver RSS sampled every 50 ms while the block runs; peak minus the RSS at entry."""

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        self.start = self.peak = self.rss()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.rss())
            time.sleep(0.05)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()


def bytes_per_image(images: int = 64) -> tuple[float, float, float]:
    """Model-actor output per image: padded [P, D] float16 (before), kept patches only (after), rows to the driver."""
    from raysel.embed.featurizer import Featurizer
    from raysel.images import DecodeBatch
    from raysel.storage import StorageOptions

    folder = tempfile.mkdtemp(prefix="raysel-bytes-")
    generate_images(folder, images, 64, seed=1)
    featurizer = Featurizer("test_vit", None, True, 0.5, StorageOptions())
    uris = np.array(sorted(os.path.join(folder, n) for n in os.listdir(folder)), dtype=object)
    decoded = DecodeBatch(featurizer.spec.image_size, 10**9, StorageOptions())({"uri": uris})
    out = featurizer(decoded)
    compact = sum(r.nbytes for r in out["kept_features"]) / images
    featurizer.compact = False
    padded = featurizer(decoded)["kept_features"].nbytes / images
    return padded, compact, 16.0  # the driver now gets (chunk_id, rows): two int64 per batch-chunk, not rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from raysel.config import FeaturizeConfig
    from raysel.pipeline import featurize
    from raysel.runtime import ensure_ray

    ensure_ray()
    work = tempfile.mkdtemp(prefix="raysel-scale-")
    rows = []
    for count in (args.small, args.large):
        pool = os.path.join(work, f"pool-{count}")
        generate_images(pool, count, 64, seed=count)
        config = FeaturizeConfig(source=pool, out=os.path.join(work, f"store-{count}"), model="test_vit", random_init=True,
                                 clusters=5, batch_size=64, chunk_size=512, stall_timeout=1800)
        with PeakRss() as rss:
            summary = featurize(config, progress=False)
        rows.append((count, summary.images_per_second, (rss.peak - rss.start) / 2**20, rss.peak / 2**20))
    padded, compact, driver = bytes_per_image()
    lines = [
        f"featurize scale, test_vit random init, 64 px generated JPEGs, batch 64, chunk 512, "
        f"{platform.machine()} {os.cpu_count()} CPUs (shared), {time.strftime('%Y-%m-%d', time.gmtime())}",
        "",
        "| images | images/s (whole call) | driver RSS growth during the call (MiB) | driver peak RSS (MiB) |",
        "|---:|---:|---:|---:|",
        *[f"| {c:,} | {r:.1f} | {g:.0f} | {p:.0f} |" for c, r, g, p in rows],
        f"| ratio large/small | {rows[1][1] / rows[0][1]:.2f}x | | {rows[1][3] / rows[0][3]:.2f}x |",
        "",
        "| bytes per image leaving the model actor (test_vit, D=64, P=100) | bytes |",
        "|---|---:|",
        f"| before: padded kept patches [P, D] float16 | {padded:,.0f} |",
        f"| after: kept patches only [n_i, D] float16 | {compact:,.0f} |",
        f"| rows to the driver per image, before (embedding + clusters + counts) | {4 * (64 + 5 * 64) + 8:,} |",
        "| to the driver per image, after | (chunk_id, rows) per batch: ~0 |",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
