from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from image_files import bad_files, bomb_file, encode, good_files, odd_mode_files, rgb_image
from raysel.images import DecodeBatch, ImageDecodeError, ManifestError, decode_image, list_images, read_manifest
from raysel.storage import StorageError, StorageOptions

pytestmark = pytest.mark.pure
LIMIT = 89_478_485


def test_decode_resizes_to_square_rgb():
    pixels = decode_image(encode(rgb_image(size=50), "PNG"), 32, LIMIT)
    assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8


@pytest.mark.parametrize("name", sorted(odd_mode_files()))
def test_decode_handles_odd_modes(name):
    pixels = decode_image(odd_mode_files()[name], 24, LIMIT)
    assert pixels.shape == (24, 24, 3)


def test_sixteen_bit_is_scaled_not_clipped():
    pixels = decode_image(odd_mode_files()["mode-16bit.png"], 40, LIMIT)
    # A ramp from 0 to 58500 must still be a ramp from dark to bright, not all-white.
    assert pixels[:, :5].mean() < 40 and pixels[:, -5:].mean() > 200


def test_alpha_is_composited_on_white():
    transparent = np.zeros((10, 10, 4), dtype=np.uint8)  # black, fully transparent
    from PIL import Image

    pixels = decode_image(encode(Image.fromarray(transparent, mode="RGBA"), "PNG"), 10, LIMIT)
    assert pixels.min() == 255


@pytest.mark.parametrize("name", sorted(bad_files()))
def test_bad_files_raise_with_reason(name):
    data, word = bad_files()[name]
    with pytest.raises(ImageDecodeError, match=word):
        decode_image(data, 16, LIMIT)


def test_decompression_bomb_is_refused():
    with pytest.raises(ImageDecodeError, match="too large"):
        decode_image(bomb_file(), 16, LIMIT)
    with pytest.raises(ImageDecodeError, match="too large"):
        decode_image(encode(rgb_image(size=64), "PNG"), 16, max_pixels=1000)


def write_files(folder, files):
    for name, data in files.items():
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(data)


def test_decode_batch_keeps_good_images_next_to_bad_ones(tmp_path):
    good = good_files(3)
    bad = {name: data for name, (data, _) in bad_files().items()}
    write_files(tmp_path, {**good, **bad})
    uris = sorted(str(tmp_path / name) for name in [*good, *bad]) + [str(tmp_path / "deleted.jpg")]
    out = DecodeBatch(16, LIMIT, StorageOptions(), threads=4)({"uri": np.array(uris, dtype=object)})
    errors = dict(zip(out["uri"], out["error"]))
    assert all(errors[str(tmp_path / n)] == "" for n in good)
    assert all(errors[str(tmp_path / n)] != "" for n in bad)
    assert "missing" in errors[str(tmp_path / "deleted.jpg")]
    assert out["image"].shape == (len(uris), 16, 16, 3)


@pytest.mark.parametrize("cpus, most", [(1.0, 1), (0.5, 1), (2.0, 2)])
def test_decode_batch_decodes_at_most_its_reserved_cpus_at_once_while_reads_overlap(tmp_path, monkeypatch, cpus, most):
    """A decode task reserving 1 CPU uses one: PIL decodes outside the GIL, so 8 threads would use 8 cores."""
    import threading
    import time

    import raysel.images as images

    write_files(tmp_path, good_files(8))
    uris = np.array(sorted(str(tmp_path / name) for name in good_files(8)), dtype=object)
    lock, running, seen, reads = threading.Lock(), [0], [0], [0]
    decode, read = images.decode_image_sizes, images.storage.read_bytes

    def counting_decode(*args):
        with lock:
            running[0] += 1
            seen[0] = max(seen[0], running[0])
        time.sleep(0.05)  # long enough for the other threads to try
        try:
            return decode(*args)
        finally:
            with lock:
                running[0] -= 1

    def counting_read(*args):
        with lock:
            reads[0] += 1
        return read(*args)

    monkeypatch.setattr(images, "decode_image_sizes", counting_decode)
    monkeypatch.setattr(images.storage, "read_bytes", counting_read)
    out = DecodeBatch(16, LIMIT, StorageOptions(), threads=8, cpus=cpus)({"uri": uris})
    assert list(out["error"]) == [""] * 8 and reads[0] == 8
    assert seen[0] == most


def test_list_local_folder_recursive_sorted_skips_hidden(tmp_path):
    write_files(tmp_path, {"b/x.png": b"1", "a.jpg": b"2", ".hidden.jpg": b"3", "_SUCCESS": b"", "c/d/e.png": b"4"})
    assert list_images(str(tmp_path)) == [str(tmp_path / p) for p in ("a.jpg", "b/x.png", "c/d/e.png")]


def test_list_missing_or_empty_source(tmp_path):
    with pytest.raises(StorageError, match="does not exist"):
        list_images(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(StorageError, match="no files"):
        list_images(str(tmp_path / "empty"))


def test_manifests(tmp_path):
    pq.write_table(pa.table({"uri": ["/a.jpg", "s3://b/c.png"]}), tmp_path / "m.parquet")
    assert read_manifest(str(tmp_path / "m.parquet")) == ["/a.jpg", "s3://b/c.png"]
    (tmp_path / "m.csv").write_text("uri,label\n/a.jpg,1\n/b.jpg,2\n")
    assert list_images(str(tmp_path / "m.csv")) == ["/a.jpg", "/b.jpg"]


@pytest.mark.parametrize(
    "name, content, problem",
    [
        ("nouri.csv", "path\n/a.jpg\n", "no 'uri' column"),
        ("empty.csv", "uri\n", "empty"),
        ("blank.csv", 'uri\n/a.jpg\n""\n', "empty 'uri'"),
        ("scheme.csv", "uri\nhttp://x/a.jpg\n", "unsupported URI"),
        ("garbage.parquet", "not parquet", "not a readable parquet"),
        ("missing.csv", None, "does not exist"),
    ],
)
def test_malformed_manifests_name_the_problem(tmp_path, name, content, problem):
    if content is not None:
        (tmp_path / name).write_text(content)
    with pytest.raises(ManifestError, match=problem):
        read_manifest(str(tmp_path / name))


def test_manifest_with_numeric_uri_column(tmp_path):
    pq.write_table(pa.table({"uri": [1, 2]}), tmp_path / "m.parquet")
    with pytest.raises(ManifestError, match="strings"):
        read_manifest(str(tmp_path / "m.parquet"))


def test_manifest_with_repeated_uris_is_deduplicated_with_a_warning(tmp_path, caplog):
    (tmp_path / "dup.csv").write_text("uri\n/b.jpg\n/a.jpg\n/b.jpg\n/a.jpg\n/c.jpg\n")
    with caplog.at_level("WARNING", logger="raysel.images"):
        assert read_manifest(str(tmp_path / "dup.csv")) == ["/b.jpg", "/a.jpg", "/c.jpg"]  # first occurrences, in order
    assert "more than once" in caplog.text and "5 rows -> 3 images" in caplog.text


def test_decode_at_several_sizes_equals_decoding_at_each_size(tmp_path):
    good = good_files(3, seed=7)
    write_files(tmp_path, good)
    uris = np.array(sorted(str(tmp_path / n) for n in good), dtype=object)
    both = DecodeBatch(48, LIMIT, StorageOptions(), extra_sizes={"pretext_image": 20})({"uri": uris})
    np.testing.assert_array_equal(both["image"], DecodeBatch(48, LIMIT, StorageOptions())({"uri": uris})["image"])
    np.testing.assert_array_equal(both["pretext_image"], DecodeBatch(20, LIMIT, StorageOptions())({"uri": uris})["image"])
    assert both["pretext_image"].shape == (3, 20, 20, 3)


@pytest.mark.s3
def test_s3_listing_in_parallel_by_prefix_equals_a_sorted_find(s3_endpoint, s3_bucket):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    keys = ["top.jpg", "a.jpg", "a/1.png", "a/b/2.png", "a-b/3.png", "z/4.jpg", "z/_SUCCESS", ".hidden/5.jpg", "a/.x.jpg"]
    for key in keys:
        client.put_object(Bucket=s3_bucket, Key=f"pool/{key}", Body=b"x")
    options = StorageOptions(s3_endpoint=s3_endpoint)
    expected = sorted(f"s3://{s3_bucket}/pool/{k}" for k in ["top.jpg", "a.jpg", "a/1.png", "a/b/2.png", "a-b/3.png", "z/4.jpg"])
    assert list_images(f"s3://{s3_bucket}/pool", options) == expected


@pytest.mark.s3
def test_s3_listing_over_several_prefixes_streams_the_same_sorted_uris_as_a_plain_find(s3_endpoint, s3_bucket, monkeypatch):
    import boto3

    from raysel import images, storage

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    keys = [f"{prefix}/{i:03d}.jpg" for prefix in ("p0", "p1", "p1-x", "q/deep/er") for i in range(7)] + ["root.png"]
    for key in keys:
        client.put_object(Bucket=s3_bucket, Key=f"pool/{key}", Body=b"x")
    options = StorageOptions(s3_endpoint=s3_endpoint)
    monkeypatch.setattr(images, "LISTING_BATCH", 3)  # many small Arrow arrays per prefix
    monkeypatch.setattr(images, "LIST_THREADS", 2)  # fewer slots than prefixes
    listed = images.list_image_uris(f"s3://{s3_bucket}/pool", options)
    fs, path = storage.filesystem(f"s3://{s3_bucket}/pool", options)
    assert listed.to_pylist() == sorted(f"s3://{name}" for name in fs.find(path))
    assert listed.num_chunks >= 1 and len(listed) == len(keys)


def test_local_listing_in_small_batches_equals_one_sorted_list(tmp_path, monkeypatch):
    from raysel import images

    write_files(tmp_path, {f"d{i % 3}/{i:02d}.jpg": b"x" for i in range(10)} | {"_tmp/a.jpg": b"", "d0/.b.jpg": b""})
    monkeypatch.setattr(images, "LISTING_BATCH", 4)
    expected = sorted(str(tmp_path / f"d{i % 3}" / f"{i:02d}.jpg") for i in range(10))
    assert images.list_image_uris(str(tmp_path)).to_pylist() == expected
