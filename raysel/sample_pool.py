"""A small synthetic image pool made locally, so the demo and tests need no download."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "stripes")


def make_sample_pool(out_dir: str, count: int = 48, size: int = 96, seed: int = 0) -> list[str]:
    """Write `count` PNG/JPEG images of coloured shapes on noisy backgrounds; returns their paths.

    Four shape families x random colours, positions and scales: visibly different
    groups, so a selector has structure to find.
    """
    rng = np.random.default_rng(seed)
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for index in range(count):
        shape = SHAPES[index % len(SHAPES)]
        background = rng.integers(0, 80, size=(size, size, 3), dtype=np.uint8)
        image = Image.fromarray(background)
        draw = ImageDraw.Draw(image)
        colour = tuple(int(c) for c in rng.integers(100, 256, size=3))
        half = int(rng.integers(size // 6, size // 3))
        cx, cy = (int(v) for v in rng.integers(half, size - half, size=2))
        box = (cx - half, cy - half, cx + half, cy + half)
        if shape == "circle":
            draw.ellipse(box, fill=colour)
        elif shape == "square":
            draw.rectangle(box, fill=colour)
        elif shape == "triangle":
            draw.polygon([(cx, cy - half), (cx - half, cy + half), (cx + half, cy + half)], fill=colour)
        else:
            for x in range(0, size, 8):
                draw.rectangle((x, 0, x + 3, size), fill=colour)
        extension = "jpg" if index % 2 else "png"
        path = os.path.join(out_dir, shape, f"{shape}-{index:04d}.{extension}")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        image.save(path)
        paths.append(path)
    return sorted(paths)
