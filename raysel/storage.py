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


class StorageWriteError(StorageError):
    """A file or object that could not be written (read-only folder, full disk, access denied, endpoint down).

    Nothing is left at the target: the old contents, or nothing, stay there; a temporary file is removed.
    """


class LeaseError(StorageError):
    """Another live run holds the lease on an output."""


class StorageUnavailableError(StorageError):
    """Object storage did not answer after every retry (unreachable, timed out, 5xx or SlowDown): not the object's fault.

    A run that meets it stops (its finished chunks kept) rather than record the object as a bad input.
    """


# S3 error codes that say the service, not the request or the object, failed.
UNAVAILABLE_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeoutException",
                     "InternalError", "ServiceUnavailable", "503", "500"}


def is_unavailable(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) is storage not answering: a connection refused, reset or timed out, or a
    5xx / SlowDown answer that outlived the retries. A 403, a 404 or a corrupt body are not."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        module, name = type(exc).__module__ or "", type(exc).__name__
        if module.startswith("botocore") and name in (
            "EndpointConnectionError", "ConnectionClosedError", "ConnectTimeoutError", "ReadTimeoutError",
            "ProxyConnectionError", "HTTPClientError", "ConnectionError",
        ):
            return True
        if module.startswith("aiohttp") and ("Connect" in name or "Disconnected" in name or "Timeout" in name):
            return True
        if isinstance(exc, (TimeoutError, ConnectionError)):  # the builtins: socket timeouts, resets, refusals
            return True
        response = getattr(exc, "response", None)
        if isinstance(response, dict):
            error = response.get("Error", {})
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if error.get("Code") in UNAVAILABLE_CODES or (isinstance(status, int) and status >= 500):
                return True
        exc = exc.__cause__ or exc.__context__
    return False


def unavailable_error(action: str, uri: str, exc: BaseException, options: StorageOptions | None) -> StorageUnavailableError:
    """The error for storage that did not answer while doing `action` ("reading", "listing") on `uri`."""
    from raysel.redact import redact

    options = options or StorageOptions()
    endpoint = options.endpoint() or "the default AWS endpoint"
    return StorageUnavailableError(redact(
        f"object storage {endpoint} did not answer {action} {uri} after {options.s3_max_attempts} attempts "
        f"({_reason(exc)}); nothing was recorded against it: rerun once the endpoint answers"
    ))


@dataclass(frozen=True)
class StorageOptions:
    """How to reach object storage. Picklable: shipped to every Ray worker."""

    s3_endpoint: str | None = None  # e.g. http://127.0.0.1:9000; falls back to $AWS_ENDPOINT_URL
    # Retries of a failed S3 request (503 SlowDown, 500, reset connections, timeouts): botocore's
    # "standard" mode, exponential backoff with jitter capped at 20 s; s3fs's own retry loop is kept short.
    s3_max_attempts: int = 8  # attempts per request, the first included
    s3_connect_timeout: float = 5.0  # seconds to open a connection
    s3_read_timeout: float = 30.0  # seconds of silence on an open connection

    def endpoint(self) -> str | None:
        return self.s3_endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


S3FS_RETRIES = 2  # s3fs's loop around botocore's: a dead endpoint fails in bounded time


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def filesystem(uri: str, options: StorageOptions | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for `uri` and the path inside it (no scheme)."""
    options = options or StorageOptions()
    if is_s3(uri):
        endpoint = options.endpoint()
        client_kwargs = {"endpoint_url": endpoint} if endpoint else {}
        fs = fsspec.filesystem(
            "s3",
            client_kwargs=client_kwargs,
            use_listings_cache=False,
            config_kwargs={
                "retries": {"max_attempts": options.s3_max_attempts, "mode": "standard"},
                "connect_timeout": options.s3_connect_timeout,
                "read_timeout": options.s3_read_timeout,
            },
        )
        fs.retries = S3FS_RETRIES  # a class attribute in s3fs, not a constructor argument
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
        try:
            fs.pipe_file(path, data)
        except (OSError, ValueError) as exc:  # s3fs maps AccessDenied to PermissionError, a dead endpoint to OSError
            raise StorageWriteError(f"cannot write {uri}: {_reason(exc)}; nothing was written there") from exc
        return
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # read-only folder, full disk, permissions
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise StorageWriteError(f"cannot write {uri}: {_reason(exc)}; nothing was written there") from exc


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


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


def read_uri_table(
    uri: str, what: str, error: type[Exception], options: StorageOptions | None = None, string_columns: tuple[str, ...] = ("uri",)
) -> pa.Table:
    """`read_table_file` of a file that must have a `uri` column; `error` naming `what` (e.g. "selection") otherwise.

    `string_columns` are read as strings (a CSV column of numbers-like names stays text).
    """
    try:
        table = read_table_file(uri, options, string_columns=string_columns)
    except FileNotFoundError as exc:
        raise error(f"{what} {uri!r} does not exist") from exc
    except (pa.ArrowInvalid, OSError) as exc:
        raise error(f"{what} {uri!r} is not a readable .parquet/.csv table: {exc}") from exc
    if "uri" not in table.column_names:
        raise error(f"{what} {uri!r} has no 'uri' column (columns: {table.column_names})")
    return table


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


def remove_tree(uri: str, options: StorageOptions | None = None) -> None:
    """Delete directory `uri` and everything under it; nothing when it does not exist."""
    fs, path = filesystem(uri, options)
    try:
        if fs.exists(path):
            fs.rm(path, recursive=True)
    except FileNotFoundError:
        pass


def list_dirs(uri: str, options: StorageOptions | None = None) -> list[str]:
    """Full URIs of the directories directly under `uri`, sorted; [] when it does not exist."""
    fs, path = filesystem(uri, options)
    try:
        entries = fs.ls(path, detail=True)
    except FileNotFoundError:
        return []
    return sorted(full_uri(fs, e["name"].rstrip("/")) for e in entries if e.get("type") == "directory")


# ----------------------------------------------------------------------------- leases

LEASE_STALE_AFTER_S = 600.0  # a lease not refreshed for this long belongs to a dead run


def _lease_owner() -> dict[str, Any]:
    import socket
    import time

    return {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex, "heartbeat": time.time()}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lease_is_stale(owner: dict[str, Any], stale_after_s: float = LEASE_STALE_AFTER_S) -> bool:
    """Staleness rule: on this host, the owner's pid is gone; elsewhere, no heartbeat for `stale_after_s`."""
    import socket
    import time

    if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
        return not _pid_alive(owner["pid"])
    return time.time() - float(owner.get("heartbeat", 0)) > stale_after_s


class Lease:
    """An exclusive claim on an output (`<out>.lease`, or `_lease.json` in a store), held while a run writes it.

    The file holds the owner's host, pid and a heartbeat that a thread refreshes every
    `stale_after_s / 4`. A second run finding a live owner fails at once with LeaseError naming
    it; a stale lease (see `lease_is_stale`) is taken over. Locally the claim is an exclusive
    create (O_EXCL); on S3 it is written and read back (a race between two runs starting within
    the same second can let both through; the runs' atomic writes keep the output whole).

    Use as a context manager; the lease file is removed on exit.
    """

    def __init__(self, uri: str, options: StorageOptions | None = None, what: str = "output",
                 stale_after_s: float = LEASE_STALE_AFTER_S) -> None:
        self.uri, self.options, self.what, self.stale_after_s = uri, options, what, stale_after_s
        self.owner = _lease_owner()
        self._stop = None
        self._thread = None
        self._made_folder: str | None = None

    def __enter__(self) -> "Lease":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        for _ in range(2):
            if self._create():
                break
            current = self._read()
            if current is not None and not lease_is_stale(current, self.stale_after_s):
                raise LeaseError(
                    f"{self.what} is being written by another run (host {current.get('host')}, pid {current.get('pid')}; "
                    f"lease {self.uri}); wait for it to finish, or remove the lease file if that run is gone"
                )
            remove(self.uri, self.options)  # stale: its owner is gone
        else:
            raise LeaseError(f"could not take the lease {self.uri}: another run took it at the same moment")
        import threading

        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._heartbeat, name="raysel-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        if self._stop is not None:
            self._stop.set()
            self._thread.join(timeout=5)
        current = self._read()
        if current is not None and current.get("token") == self.owner["token"]:
            remove(self.uri, self.options)
        if self._made_folder:
            try:
                os.rmdir(self._made_folder)  # only if empty: a run that failed early leaves nothing behind
            except OSError:
                pass

    def _create(self) -> bool:
        payload = json.dumps(self.owner).encode()
        if is_s3(self.uri):
            if exists(self.uri, self.options):
                return False
            write_bytes_atomic(self.uri, payload, self.options)
            current = self._read()
            return current is not None and current.get("token") == self.owner["token"]
        _, path = filesystem(self.uri, self.options)
        folder = os.path.dirname(path) or "."
        if not os.path.isdir(folder):
            self._made_folder = folder  # removed again on release if the run left it empty
        try:
            os.makedirs(folder, exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            raise StorageWriteError(f"cannot write {self.uri}: {_reason(exc)}; nothing was written there") from exc
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(payload)
        return True

    def _read(self) -> dict[str, Any] | None:
        try:
            value = read_json(self.uri, self.options)
        except (FileNotFoundError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def _heartbeat(self) -> None:
        import time

        while not self._stop.wait(self.stale_after_s / 4):
            self.owner["heartbeat"] = time.time()
            try:
                write_bytes_atomic(self.uri, json.dumps(self.owner).encode(), self.options)
            except StorageError:
                pass  # the run's own writes report the problem
