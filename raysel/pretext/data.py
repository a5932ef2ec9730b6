"""The pool as Ray Data rows for pretext training: the same listing and decoding as `featurize`.

Torch-free on purpose: the decode tasks import this module, and should not pay
for importing torch and timm.
"""
from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from raysel import schema
from raysel.images import DecodeBatch
from raysel.storage import StorageOptions

log = logging.getLogger(__name__)

IMAGE = "image"  # [B, S, S, 3] uint8, as raysel.images.DecodeBatch makes it
ROWS_PER_BLOCK = 64  # URIs per input block: the unit of parallel decoding
DECODE_CPUS = 0.5  # reservation of a decode task feeding the training workers


class DecodeForTraining:
    """URIs -> `image` [B, S, S, 3] uint8 of the decodable images only (failures are logged and skipped)."""

    def __init__(self, decode: DecodeBatch):
        self.decode = decode

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        decoded = self.decode(batch)
        good = decoded[schema.ERROR].astype(str) == ""
        for uri, reason in zip(decoded[schema.URI][~good], decoded[schema.ERROR][~good]):
            log.warning("pretext training skips %s: %s", uri, reason)
        return {IMAGE: decoded[IMAGE][good]}


def training_dataset(
    uris: list[str], image_size: int, options: StorageOptions, max_image_pixels: int, decode_threads: int = 8
):
    """A Ray Data dataset with one column, `image` [S, S, 3] uint8, in `uris` order."""
    import ray

    blocks = [
        pa.table({schema.URI: pa.array(uris[start : start + ROWS_PER_BLOCK], pa.string())})
        for start in range(0, len(uris), ROWS_PER_BLOCK)
    ]
    decode = DecodeBatch(image_size, max_image_pixels, options, decode_threads)
    return ray.data.from_arrow(blocks).map_batches(DecodeForTraining(decode), batch_size=ROWS_PER_BLOCK, num_cpus=DECODE_CPUS)
