from __future__ import annotations

import pyarrow as pa
import pytest

from raysel import storage
from raysel.images import list_images
from raysel.storage import StorageError, StorageOptions


@pytest.mark.pure
def test_local_atomic_write_and_listing(tmp_path):
    target = str(tmp_path / "d" / "x.parquet")
    storage.write_parquet_atomic(pa.table({"a": [1, 2]}), target)
    assert storage.read_parquet(target).column("a").to_pylist() == [1, 2]
    assert storage.list_files(str(tmp_path / "d"), suffix=".parquet") == [target]
    assert not [p for p in (tmp_path / "d").iterdir() if ".tmp-" in p.name]
    assert storage.list_files(str(tmp_path / "missing")) == []


@pytest.mark.pure
def test_unsupported_scheme():
    with pytest.raises(StorageError, match="unsupported URI scheme"):
        storage.filesystem("gs://bucket/x")


@pytest.mark.s3
def test_s3_roundtrip_and_listing(s3_endpoint, s3_bucket):
    options = StorageOptions(s3_endpoint=s3_endpoint)
    storage.write_json_atomic(f"s3://{s3_bucket}/p/a.json", {"x": 1}, options)
    storage.write_bytes_atomic(f"s3://{s3_bucket}/p/sub/b.jpg", b"123", options)
    assert storage.read_json(f"s3://{s3_bucket}/p/a.json", options) == {"x": 1}
    assert list_images(f"s3://{s3_bucket}/p", options) == [f"s3://{s3_bucket}/p/a.json", f"s3://{s3_bucket}/p/sub/b.jpg"]
    assert storage.list_files(f"s3://{s3_bucket}/p", options) == [f"s3://{s3_bucket}/p/a.json"]


@pytest.mark.s3
def test_s3_missing_bucket_and_prefix_are_clear_errors(s3_endpoint, s3_bucket):
    options = StorageOptions(s3_endpoint=s3_endpoint)
    with pytest.raises(StorageError, match="does not exist"):
        list_images("s3://no-such-bucket-raysel/images", options)
    with pytest.raises(StorageError, match="does not exist"):
        list_images(f"s3://{s3_bucket}/no/such/prefix", options)


@pytest.mark.s3
def test_endpoint_from_environment(s3_endpoint, s3_bucket, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    storage.write_bytes_atomic(f"s3://{s3_bucket}/e.bin", b"x")
    assert storage.read_bytes(f"s3://{s3_bucket}/e.bin") == b"x"


@pytest.mark.pure
def test_unavailable_storage_is_told_apart_from_a_bad_object():
    """An outage (refused, timed out, 5xx/SlowDown past the retries) is no fault of the object; 403/404/EIO are."""
    import errno

    from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

    from raysel.storage import is_unavailable

    def answered(status: int, code: str) -> OSError:
        error = OSError(errno.EIO, code)  # as s3fs translates a ClientError it has no mapping for
        error.__cause__ = ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")
        return error

    assert is_unavailable(EndpointConnectionError(endpoint_url="http://127.0.0.1:1/b/k"))
    assert is_unavailable(ReadTimeoutError(endpoint_url="http://127.0.0.1:1/b/k"))
    assert is_unavailable(ConnectionResetError(104, "Connection reset by peer"))
    assert is_unavailable(answered(503, "SlowDown")) and is_unavailable(answered(500, "InternalError"))
    assert not is_unavailable(answered(403, "AccessDenied")) and not is_unavailable(answered(404, "NoSuchKey"))
    assert not is_unavailable(OSError(errno.EIO, "Input/output error")) and not is_unavailable(ValueError("corrupt"))
