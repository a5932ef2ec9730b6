"""Resume: the picks so far, saved atomically next to the output as `<out>.checkpoint.json`.

A checkpoint is tied to a fingerprint of everything that decides the picks
(method, sampling, distance, seed, dtype, labeled uris, what the store holds (its
metadata, and per shard its name, row count and ETag/size/mtime: raysel/fingerprints.py),
and the method's own `fingerprint_options` such as probcover's delta). Budget, shards and candidates are left out on purpose: the picks are
the same prefix whatever they are, so a rerun with more shards or a bigger budget
continues too. The checkpoint is removed once the output is written.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

from raysel import storage
from raysel.config import SelectConfig
from raysel.select.base import Pick
from raysel.select.registry import get_method
from raysel.storage import StorageOptions

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIX = ".checkpoint.json"
CONFIG_SUFFIX = ".config.json"
LEASE_SUFFIX = ".lease"
FORMAT_VERSION = 2  # 2: the store is fingerprinted by content, not by file names and rows


def checkpoint_uri(out: str) -> str:
    return out + CHECKPOINT_SUFFIX


def lease_uri(out: str) -> str:
    """`<out>.lease`: held by the run writing `out` (raysel.storage.Lease)."""
    return out + LEASE_SUFFIX


def config_uri(out: str) -> str:
    return out + CONFIG_SUFFIX


def fingerprint(config: SelectConfig, store_state: dict, labeled: list[str]) -> str:
    """sha256 of what decides the picks (config must be resolved: distance filled in).

    Args:
        store_state: `raysel.fingerprints.store_state(store, file_row_counts(store))`.
    """
    payload = {
        "version": FORMAT_VERSION,
        "method": config.method,
        "sampling": config.sampling,
        "distance": config.distance,
        "seed": config.seed,
        "dtype": config.dtype,
        "store": store_state,
        "labeled": hashlib.sha256("\n".join(sorted(labeled)).encode()).hexdigest(),
    }
    options = get_method(config.method).fingerprint_options
    if options:  # only then, so the fingerprints of methods without such options stay as they were
        payload["options"] = {name: _option_value(config, name) for name in options}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# Options naming a file whose contents (labels, probabilities) decide the picks: fingerprinted by content.
FILE_OPTIONS = ("labeled", "predictions")


def _option_value(config: SelectConfig, name: str):
    value = getattr(config, name)
    if name in FILE_OPTIONS and value:
        return hashlib.sha256(storage.read_bytes(value, config.storage())).hexdigest()
    return value


@dataclass
class Checkpoint:
    fingerprint: str
    picks: list[Pick]


def read_checkpoint(out: str, options: StorageOptions | None = None) -> Checkpoint | None:
    """The checkpoint next to `out`, or None when there is none (or it is unreadable)."""
    uri = checkpoint_uri(out)
    if not storage.exists(uri, options):
        return None
    try:
        payload = storage.read_json(uri, options)
        return Checkpoint(payload["fingerprint"], [Pick(uri_, score) for uri_, score in payload["picks"]])
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable checkpoint %s: %s", uri, exc)
        return None


def write_checkpoint(out: str, fingerprint_: str, picks: list[Pick], options: StorageOptions | None = None) -> None:
    storage.write_json_atomic(
        checkpoint_uri(out),
        {"version": FORMAT_VERSION, "fingerprint": fingerprint_, "picks": [[p.uri, p.score] for p in picks]},
        options,
    )


def remove_checkpoint(out: str, options: StorageOptions | None = None) -> None:
    fs, path = storage.filesystem(checkpoint_uri(out), options)
    if fs.exists(path):
        fs.rm(path)
