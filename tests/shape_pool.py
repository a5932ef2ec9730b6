"""A small pool of upright shapes (3 classes) whose rotation a tiny model can learn in a few steps."""
from __future__ import annotations

import csv
import os

import numpy as np
from PIL import Image

CLASSES = ("bar", "wedge", "ell")


def shape_image(label: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """[size, size, 3] uint8: a coloured shape with a clear up and down on a darker gradient."""
    image = np.zeros((size, size, 3), dtype=np.float64)
    image += np.linspace(0, 60, size)[:, None, None]  # brighter towards the bottom
    colour = rng.integers(120, 256, size=3)
    dx, dy = rng.integers(-3, 4, size=2)
    rows, cols = np.mgrid[0:size, 0:size]
    rows, cols = rows - dy, cols - dx
    if label == 0:  # a thick bar near the bottom
        mask = (rows > 22) & (rows < 28) & (cols > 4) & (cols < 28)
    elif label == 1:  # a wedge pointing up
        mask = (rows > 6) & (rows < 28) & (np.abs(cols - 16) < (rows - 6) * 0.6)
    else:  # an L: a stem and a foot to the right
        mask = ((cols > 6) & (cols < 11) & (rows > 4) & (rows < 28)) | ((rows > 23) & (rows < 28) & (cols > 6) & (cols < 26))
    image[mask] = colour
    image += rng.normal(0, 8, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_shape_pool(folder, count: int = 48, seed: int = 0) -> dict[str, int]:
    """PNG files under `folder`; returns uri -> label (the oracle)."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = {}
    for index in range(count):
        label = index % len(CLASSES)
        path = os.path.join(str(folder), f"img-{index:03d}.png")
        Image.fromarray(shape_image(label, rng)).save(path)
        labels[path] = label
    return labels


def write_labels(path, labels: dict[str, int]) -> str:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uri", "label"])
        for uri, label in sorted(labels.items()):
            writer.writerow([uri, label])
    return str(path)
