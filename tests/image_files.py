"""Builders of good and bad image files, shared by the decode, pipeline and S3 tests."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def rgb_image(seed: int = 0, size: int = 40) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8))


def good_files(count: int, seed: int = 0) -> dict[str, bytes]:
    """`count` valid images, alternating PNG and JPEG."""
    files = {}
    for index in range(count):
        fmt = "PNG" if index % 2 == 0 else "JPEG"
        files[f"good-{index:03d}.{fmt.lower()}"] = encode(rgb_image(seed + index), fmt)
    return files


def odd_mode_files() -> dict[str, bytes]:
    """Valid images in modes that need care: grayscale, CMYK, 16-bit, alpha, palette."""
    gray = Image.fromarray(np.tile(np.arange(40, dtype=np.uint8) * 6, (40, 1)), mode="L")
    sixteen = Image.fromarray((np.tile(np.arange(40, dtype=np.uint16), (40, 1)) * 1500).astype(np.uint16))
    rgba = rgb_image(7).convert("RGBA")
    rgba.putalpha(128)
    return {
        "mode-gray.png": encode(gray, "PNG"),
        "mode-cmyk.jpg": encode(rgb_image(8).convert("CMYK"), "JPEG"),
        "mode-16bit.png": encode(sixteen, "PNG"),
        "mode-alpha.png": encode(rgba, "PNG"),
        "mode-palette.gif": encode(rgb_image(9).convert("P"), "GIF"),
    }


def bad_files() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, a word the recorded error must contain)."""
    jpeg = encode(rgb_image(11, size=64), "JPEG")
    png = encode(rgb_image(12, size=64), "PNG")
    return {
        "bad-empty.jpg": (b"", "empty"),
        "bad-text.jpg": (b"this is not an image at all\n" * 10, "not an image"),
        "bad-corrupt.jpg": (jpeg[:200] + bytes(range(256)) * 8, "corrupt"),
        "bad-truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "bad-truncated.png": (png[: len(png) // 2], "truncated"),
    }


def bomb_file() -> bytes:
    """A small PNG that decodes to 144M pixels (above PIL's and our default limit)."""
    return encode(Image.new("1", (12000, 12000)), "PNG")
