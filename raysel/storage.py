"""Filesystems for local paths and s3:// URIs (any S3-compatible endpoint), atomic writes.

Everything that touches bytes goes through here so that a custom endpoint, the
standard AWS credential chain and atomic-rename semantics are handled once.
Credentials are never read or logged by raysel: s3fs/botocore find them.
"""
from __future__ import annotations

import io
import json
import os
import posixpath
import uuid
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq


class StorageError(RuntimeError):
    """A bucket, prefix or object that cannot be reached or read."""


@dataclass(frozen=True)
class StorageOptions:
    """How to reach object storage. Picklable: shipped to every Ray worker."""

    s3_endpoint: str | None = None  # e.g. http://127.0.0.1:9000; falls back to $AWS_ENDPOINT_URL

    def endpoint(self) -> str | None:
        return self.s3_endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def filesystem(uri: str, options: StorageOptions | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for `uri` and the path inside it (no scheme)."""
    options = options or StorageOptions()
    if is_s3(uri):
        endpoint = options.endpoint()
        client_kwargs = {"endpoint_url": endpoint} if endpoint else {}
        fs = fsspec.filesystem("s3", client_kwargs=client_kwargs, use_listings_cache=False)
        return fs, uri[len("s3://"):].rstrip("/")
    if "://" in uri and not uri.startswith("file://"):
        raise StorageError(f"unsupported URI scheme in {uri!r}: use a local path or s3://bucket/prefix")
    path = uri[len("file://"):] if uri.startswith("file://") else uri
    return fsspec.filesystem("file"), os.path.abspath(os.path.expanduser(path))


def full_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """The user-facing URI of a path inside `fs` (s3://bucket/key or an absolute local path)."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return f"s3://{path}" if protocol in ("s3", "s3a") else path


def join(uri: str, *parts: str) -> str:
    if is_s3(uri):
        return posixpath.join(uri.rstrip("/"), *parts)
    return os.path.join(uri, *parts)


def exists(uri: str, options: StorageOptions | None = None) -> bool:
    fs, path = filesystem(uri, options)
    return fs.exists(path)


def remove(uri: str, options: StorageOptions | None = None) -> None:
    """Delete one file or object if it exists (a no-op when it does not)."""
    fs, path = filesystem(uri, options)
    try:
        fs.rm(path)
    except FileNotFoundError:
        pass


def read_bytes(uri: str, options: StorageOptions | None = None) -> bytes:
    fs, path = filesystem(uri, options)
    with fs.open(path, "rb") as handle:
        return handle.read()


def write_bytes_atomic(uri: str, data: bytes, options: StorageOptions | None = None) -> None:
    """Write `data` so that readers see the old object or the whole new one, never a part.

    S3 PUTs are atomic already; locally we write a temporary file and rename it.
    """
    fs, path = filesystem(uri, options)
    if is_s3(uri):
        fs.pipe_file(path, data)
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_parquet_atomic(table: pa.Table, uri: str, options: StorageOptions | None = None) -> None:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    write_bytes_atomic(uri, buffer.getvalue(), options)


def read_parquet(uri: str, options: StorageOptions | None = None, columns: list[str] | None = None) -> pa.Table:
    fs, path = filesystem(uri, options)
    with fs.open(path, "rb") as handle:
        return pq.read_table(handle, columns=columns)


def read_table_file(uri: str, options: StorageOptions | None = None, string_columns: tuple[str, ...] = ()) -> pa.Table:
    """A .csv file (with `string_columns` read as strings, not guessed) or else a Parquet file, as a table.

    Raises FileNotFoundError for a missing file, pa.ArrowInvalid or OSError for an unreadable one.
    """
    raw = read_bytes(uri, options)
    if uri.lower().endswith(".csv"):
        convert = pacsv.ConvertOptions(column_types={name: pa.string() for name in string_columns})
        return pacsv.read_csv(io.BytesIO(raw), convert_options=convert)
    return pq.read_table(io.BytesIO(raw))


def write_json_atomic(uri: str, payload: Any, options: StorageOptions | None = None) -> None:
    write_bytes_atomic(uri, json.dumps(payload, indent=2, sort_keys=True, default=str).encode(), options)


def read_json(uri: str, options: StorageOptions | None = None) -> Any:
    return json.loads(read_bytes(uri, options))


def list_files(uri: str, options: StorageOptions | None = None, suffix: str = "") -> list[str]:
    """Full URIs of the files directly under directory `uri`, sorted; [] when it does not exist."""
    fs, path = filesystem(uri, options)
    try:
        entries = fs.ls(path, detail=True)
    except FileNotFoundError:
        return []
    names = [e["name"] for e in entries if e.get("type") == "file"]
    return sorted(full_uri(fs, name) for name in names if name.endswith(suffix) and ".tmp-" not in name)
