"""A small image pool with a store and a selection, as `raysel select` leaves them (export tests)."""
from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
from PIL import Image

from raysel.select.base import Pick, selection_table
from raysel.storage import write_parquet_atomic
from raysel.store import write_store

SIZES = [(40, 30), (32, 48), (50, 50), (24, 36), (64, 20), (30, 30)]  # width, height: every image differs


def write_images(root: str, count: int = 6) -> list[str]:
    """`count` images under root/a and root/b (nested, so names relative to root keep a folder)."""
    paths = []
    rng = np.random.default_rng(0)
    for index in range(count):
        width, height = SIZES[index % len(SIZES)]
        folder = os.path.join(root, "a" if index % 2 == 0 else "b")
        os.makedirs(folder, exist_ok=True)
        extension = "png" if index % 3 else "jpg"
        path = os.path.join(folder, f"img-{index:02d}.{extension}")
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def write_pool_store(store: str, uris: list[str], dim: int = 8) -> np.ndarray:
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((len(uris), dim)).astype(np.float32)
    table = pa.table({"uri": uris, "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim)})
    write_store(store, table, options=None)
    return vectors


def write_selection(path: str, uris: list[str], store: str, method: str = "geal") -> list[Pick]:
    """A selection of `uris` in that order (first score null, as a random first pick), with its config.json."""
    picks = [Pick(uri, None if rank == 0 else 1.0 / (rank + 1)) for rank, uri in enumerate(uris)]
    write_parquet_atomic(selection_table(picks), path)
    with open(path + ".config.json", "w") as handle:
        json.dump({"config": {"method": method, "store": store, "budget": len(uris)}, "fingerprint": "test"}, handle)
    return picks
