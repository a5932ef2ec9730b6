"""scikit-learn's bundled handwritten digits (1797 real 8x8 images, 10 classes) as PNG files + labels.csv.

    from raysel.datasets.digits import write_digits
    labels_csv = write_digits("out/digits", image_size=32)   # out/digits/images/d0000.png ..., out/digits/labels.csv

The data ship inside scikit-learn (no download); scikit-learn is a test/benchmark
dependency of raysel, imported only here and only when called.
"""
from __future__ import annotations

import csv
import os

import numpy as np
from PIL import Image

DIGITS_IMAGES = 1797


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images [1797, 8, 8] uint8 0..255, labels [1797] int64)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError(
            "raysel.datasets.digits needs scikit-learn (it ships the digits): pip install scikit-learn, "
            "or install raysel's test extra: pip install -e '.[test]'"
        ) from exc
    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)  # 0..16 -> 0..255
    return images, digits.target.astype(np.int64)


def write_digits(folder: str, image_size: int = 32, limit: int | None = None) -> str:
    """Write the digits as `folder/images/dNNNN.png` (grayscale, `image_size` px, bicubic) and `folder/labels.csv`.

    Returns the path of labels.csv (columns `uri`, `label`; uris are absolute paths).
    Rewriting an existing folder overwrites the same files.
    """
    images, labels = load_digits_arrays()
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    image_dir = os.path.abspath(os.path.join(folder, "images"))
    os.makedirs(image_dir, exist_ok=True)
    rows = []
    for index, (pixels, label) in enumerate(zip(images, labels)):
        path = os.path.join(image_dir, f"d{index:04d}.png")
        Image.fromarray(pixels).resize((image_size, image_size), Image.Resampling.BICUBIC).save(path)
        rows.append((path, int(label)))
    labels_path = os.path.join(os.path.abspath(folder), "labels.csv")
    with open(labels_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uri", "label"])
        writer.writerows(rows)
    return labels_path
