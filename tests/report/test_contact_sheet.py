"""Contact sheet: one tile per pick (up to --max-tiles), in rank order, read from local disk and from S3."""
from __future__ import annotations

import re

import boto3
import numpy as np
import pytest

from image_files import encode, rgb_image
from raysel.report.contact_sheet import contact_sheet_section
from raysel.report.inputs import Selection
from raysel.storage import StorageOptions

pytestmark = pytest.mark.pure


def tiles(body: str) -> list[tuple[int, str, str]]:
    """(rank, uri, caption) of every tile."""
    pattern = r'<figure class="tile" data-rank="(\d+)" title="([^"]*)">.*?<figcaption>(.*?)</figcaption>'
    return [(int(rank), uri, caption) for rank, uri, caption in re.findall(pattern, body)]


def write_images(folder, count: int) -> list[str]:
    paths = []
    for index in range(count):
        path = folder / f"img-{index}.png"
        path.write_bytes(encode(rgb_image(index, size=30), "PNG"))
        paths.append(str(path))
    return paths


def test_tiles_follow_rank_with_scores_and_a_random_first_pick(tmp_path):
    uris = write_images(tmp_path, 5)[::-1]
    selection = Selection(uri="sel.parquet", uris=uris, scores=np.array([np.nan, 0.9, 0.5, 0.25, 0.125]))
    body = contact_sheet_section(selection, max_tiles=10, size=32, options=StorageOptions()).body
    found = tiles(body)
    assert [rank for rank, _, _ in found] == [0, 1, 2, 3, 4]
    assert [uri for _, uri, _ in found] == uris
    assert found[0][2] == "#0 · random pick" and found[1][2] == "#1 · score 0.9" and found[4][2] == "#4 · score 0.125"
    assert body.count('src="data:image/jpeg;base64,') == 5 and 'width="32"' in body


def test_max_tiles_shows_the_first_picks_and_says_so(tmp_path):
    uris = write_images(tmp_path, 4)
    selection = Selection(uri="sel.parquet", uris=uris, scores=np.linspace(1, 0.1, 4))
    body = contact_sheet_section(selection, max_tiles=2, size=16, options=StorageOptions()).body
    assert [rank for rank, _, _ in tiles(body)] == [0, 1]
    assert "4 images selected" in body and "showing the first 2" in body


def test_no_tiles_reads_no_image_and_says_so():
    selection = Selection(uri="sel.parquet", uris=["s3://nowhere-reachable/a.jpg", "/no/such/b.jpg"], scores=np.ones(2))
    body = contact_sheet_section(selection, max_tiles=0, size=16, options=StorageOptions()).body
    assert tiles(body) == [] and "could not be read" not in body
    assert "2 images selected" in body and "no thumbnails (--max-tiles 0)" in body


def test_an_unreadable_image_gets_a_tile_with_the_reason(tmp_path):
    good = write_images(tmp_path, 1)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    selection = Selection(uri="sel.parquet", uris=[*good, str(broken), str(tmp_path / "gone.png")], scores=np.array([np.nan, 1.0, 0.5]))
    body = contact_sheet_section(selection, max_tiles=10, size=16, options=StorageOptions()).body
    assert len(tiles(body)) == 3 and body.count("data:image/jpeg") == 1
    assert "not an image" in body and "missing object" in body and "2 could not be read" in body


@pytest.mark.s3
def test_thumbnails_are_read_from_s3(s3_endpoint, s3_bucket):
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    uris = []
    for index in range(3):
        client.put_object(Bucket=s3_bucket, Key=f"pool/img-{index}.png", Body=encode(rgb_image(index, size=30), "PNG"))
        uris.append(f"s3://{s3_bucket}/pool/img-{index}.png")
    selection = Selection(uri="sel.parquet", uris=uris, scores=np.array([np.nan, 0.5, 0.25]))
    body = contact_sheet_section(selection, max_tiles=10, size=24, options=StorageOptions(s3_endpoint=s3_endpoint)).body
    assert [uri for _, uri, _ in tiles(body)] == uris
    assert body.count("data:image/jpeg;base64,") == 3 and "could not be read" not in body
