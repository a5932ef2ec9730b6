"""What a result was computed from: content fingerprints of feature stores and input files.

A cached result (a finished selection, a checkpoint, a simulation's curves) may only be
reused when the data under it is the data it was computed from. Paths are not enough: a
store rebuilt at the same path (new model, new tau, new images with the same chunking)
has the same shard names and often the same row counts. So a store is fingerprinted by

- its metadata file (`_raysel_store.json`: identity keys such as model, tau, K, and the
  `created` stamp, which every new store gets), hashed whole;
- per shard file: its name, its row count and what the storage says about its bytes:
  on S3 the ETag and size, locally the size, mtime (ns) and inode (every atomic write
  is a new file, so a rewritten shard has a new inode and mtime).

Neither read costs more than one listing and one footer per shard.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from raysel import schema, storage
from raysel.storage import StorageOptions


def file_signature(info: dict[str, Any]) -> list[Any]:
    """What the storage says identifies an object's bytes: [size, ETag] on S3, [size, mtime, inode] locally."""
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return [info.get("size"), str(etag).strip('"')]
    mtime = info.get("mtime")
    return [info.get("size"), repr(mtime), info.get("ino")]


def store_state(store, row_counts: list[tuple[str, int]]) -> dict[str, Any]:
    """The fingerprint payload of a feature store.

    Args:
        store: a `raysel.store.FeatureStore`.
        row_counts: (shard uri, rows) per shard, as `select.pool.store_rows.file_row_counts` reads them.

    Returns:
        {"metadata": sha256 of the metadata file, "shards": [[name, rows, *signature], ...]}.
    """
    metadata_uri = store.path(schema.STORE_METADATA_FILE)
    try:
        metadata = hashlib.sha256(storage.read_bytes(metadata_uri, store.options)).hexdigest()
    except FileNotFoundError:
        metadata = None
    infos = _listing(store.path(schema.SHARDS_DIR), store.options)
    shards = []
    for uri, rows in row_counts:
        name = uri.rstrip("/").rsplit("/", 1)[-1]
        shards.append([name, rows, *file_signature(infos.get(name, {}))])
    return {"metadata": metadata, "shards": shards}


def file_digest(uri: str | None, options: StorageOptions | None = None) -> str | None:
    """sha256 of a (small) input file's bytes, e.g. a labels file; None for no file."""
    if not uri:
        return None
    return hashlib.sha256(storage.read_bytes(uri, options)).hexdigest()


def digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _listing(directory: str, options: StorageOptions | None) -> dict[str, dict[str, Any]]:
    fs, path = storage.filesystem(directory, options)
    try:
        entries = fs.ls(path, detail=True)
    except FileNotFoundError:
        return {}
    return {entry["name"].rstrip("/").rsplit("/", 1)[-1]: entry for entry in entries if entry.get("type") == "file"}
