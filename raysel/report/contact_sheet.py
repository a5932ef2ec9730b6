"""Section 1: the selected images as a contact sheet of thumbnails, with rank and score.

Images are read through raysel's storage layer (local paths and s3:// alike) and
decoded as the model sees them (square, bicubic). An image that cannot be read
gets a tile with the reason instead of a thumbnail.
"""
from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from raysel.images import read_and_decode
from raysel.report.inputs import Selection
from raysel.report.page import Section, escape, img
from raysel.storage import StorageOptions

READ_THREADS = 8  # concurrent object reads: object-store latency dominates
MAX_PIXELS = 89_478_485  # the decompression-bomb guard featurize uses by default


def thumbnail_jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def read_thumbnails(uris: list[str], size: int, options: StorageOptions) -> list[tuple[bytes | None, str]]:
    """(JPEG bytes, "") per uri, or (None, reason) for an image that cannot be used; in input order."""

    def one(uri: str) -> tuple[bytes | None, str]:
        pixels, reason = read_and_decode(uri, size, MAX_PIXELS, options)
        return (thumbnail_jpeg(pixels), "") if pixels is not None else (None, reason)

    with ThreadPoolExecutor(max_workers=max(1, min(READ_THREADS, len(uris)))) as pool:
        return list(pool.map(one, uris))


def format_score(score: float) -> str:
    return "random pick" if np.isnan(score) else f"score {score:.4g}"


def contact_sheet_section(selection: Selection, max_tiles: int, size: int, options: StorageOptions) -> Section:
    shown = selection.uris[:max_tiles]
    thumbnails = read_thumbnails(shown, size, options)
    tiles = []
    for rank, (uri, (jpeg, reason)) in enumerate(zip(shown, thumbnails)):
        name = os.path.basename(uri.rstrip("/"))
        caption = f"#{rank} · {format_score(selection.scores[rank])}"
        if jpeg is not None:
            picture = img(jpeg, "image/jpeg", f"rank {rank}: {name}", width=size, height=size)
        else:
            picture = f'<div class="failed" style="width:{size}px;height:{size}px">{escape(reason)}</div>'
        tiles.append(
            f'<figure class="tile" data-rank="{rank}" title="{escape(uri)}">{picture}'
            f"<figcaption>{escape(caption)}</figcaption></figure>"
        )
    failed = sum(1 for jpeg, _ in thumbnails if jpeg is None)
    notes = [f"{len(selection.uris)} images selected, in pick order (rank 0 first)"]
    if not max_tiles:
        notes.append("no thumbnails (--max-tiles 0)")
    elif len(shown) < len(selection.uris):
        notes.append(f"showing the first {len(shown)} (--max-tiles)")
    if failed:
        notes.append(f"{failed} could not be read")
    body = f'<p class="note">{escape("; ".join(notes))}.</p>\n<div class="sheet">{"".join(tiles)}</div>'
    return Section("selection", "Selection", body)
