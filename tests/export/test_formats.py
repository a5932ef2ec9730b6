"""Every export format against its reader: csv, COCO (pycocotools), CVAT manifest, Label Studio tasks, FiftyOne files."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import urllib.request

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from export_pool import write_images, write_pool_store, write_selection
from raysel.cli import main
from raysel.config import ExportConfig
from raysel.export import ExportError, export_selection

pytestmark = pytest.mark.pure


@pytest.fixture
def picked(tmp_path):
    """(images root, store, selection path, picks) with picks in a rank order unlike the file order."""
    root = str(tmp_path / "pool")
    paths = write_images(root)
    store = str(tmp_path / "store")
    write_pool_store(store, paths)
    order = [paths[3], paths[0], paths[5], paths[1]]
    selection = str(tmp_path / "selection.parquet")
    picks = write_selection(selection, order, store)
    return root, store, selection, picks


def test_csv_lists_uri_rank_score_and_records_both_configs(picked, tmp_path):
    _, store, selection, picks = picked
    out = str(tmp_path / "picks.csv")
    summary = export_selection(ExportConfig(selection=selection, format="csv", out=out))
    with open(out) as handle:
        rows = list(csv.DictReader(handle))
    assert [row["uri"] for row in rows] == [p.uri for p in picks]
    assert [int(row["rank"]) for row in rows] == list(range(len(picks)))
    assert rows[0]["score"] == "" and float(rows[1]["score"]) == pytest.approx(picks[1].score)
    record = json.load(open(out + ".raysel.json"))
    assert record["export"]["format"] == "csv" and record["images"] == len(picks) == summary.images
    assert record["selection_config"]["config"]["method"] == "geal"


def test_coco_file_loads_in_pycocotools_with_true_sizes(picked, tmp_path):
    from pycocotools.coco import COCO

    root, _, selection, picks = picked
    out = str(tmp_path / "picks.coco.json")
    export_selection(ExportConfig(selection=selection, format="coco", out=out))
    coco = COCO(out)
    ids = sorted(coco.getImgIds())
    assert ids == list(range(1, len(picks) + 1))
    assert coco.getAnnIds() == [] and coco.loadCats(coco.getCatIds()) == []
    for image in coco.loadImgs(ids):
        uri = picks[image["id"] - 1].uri
        path = os.path.join(root, image["file_name"])  # names are relative to the images' common folder
        assert os.path.samefile(path, uri) and image["coco_url"] == uri
        with Image.open(uri) as handle:
            assert (image["width"], image["height"]) == handle.size
        assert image["raysel_rank"] == image["id"] - 1


def test_cvat_manifest_names_sizes_and_checksums_each_pick_in_rank_order(picked, tmp_path):
    root, _, selection, picks = picked
    out = str(tmp_path / "manifest.jsonl")
    export_selection(ExportConfig(selection=selection, format="cvat", out=out, image_root=root))
    lines = [json.loads(line) for line in open(out)]
    assert lines[0] == {"version": "1.1"} and lines[1] == {"type": "images"}
    items = lines[2:]
    assert len(items) == len(picks)
    for item, pick in zip(items, picks):
        path = os.path.join(root, item["name"] + item["extension"])
        assert os.path.samefile(path, pick.uri)
        with Image.open(path) as handle:
            assert (item["width"], item["height"]) == handle.size
        assert item["checksum"] == hashlib.md5(open(path, "rb").read()).hexdigest()


def test_label_studio_local_files_reference_paths_under_the_document_root(picked, tmp_path):
    root, _, selection, picks = picked
    out = str(tmp_path / "tasks.json")
    export_selection(ExportConfig(selection=selection, format="label-studio", out=out, local_files_root=root))
    tasks = json.load(open(out))
    assert [t["data"]["uri"] for t in tasks] == [p.uri for p in picks]
    for task, pick in zip(tasks, picks):
        assert task["data"]["image"] == "/data/local-files/?d=" + os.path.relpath(pick.uri, root)
        assert task["data"]["rank"] == picks.index(pick) and task["data"]["method"] == "geal"
    assert tasks[0]["data"]["score"] is None and tasks[1]["data"]["score"] == pytest.approx(picks[1].score)


def test_fiftyone_files_carry_rank_score_method_and_embeddings(picked, tmp_path):
    _, store, selection, picks = picked
    out = str(tmp_path / "fo")
    export_selection(ExportConfig(selection=selection, format="fiftyone", out=out, embeddings=True))
    samples = json.load(open(os.path.join(out, "samples.json")))["samples"]
    assert [s["filepath"] for s in samples] == [p.uri for p in picks]
    stored = pq.read_table(os.path.join(store, "shards", "part-000000.parquet")).to_pylist()
    by_uri = {row["uri"]: row["embedding"] for row in stored}
    for sample in samples:
        assert sample["embedding"] == pytest.approx(by_uri[sample["uri"]], abs=1e-6)
    assert json.load(open(os.path.join(out, "metadata.json")))["media_type"] == "image"
    assert not [name for name in os.listdir(tmp_path) if ".tmp-" in name]


@pytest.mark.parametrize("problem", ["no-uri", "local-without-root", "outside-root", "unreadable-image", "presign-local"])
def test_bad_inputs_fail_clearly_and_write_nothing(picked, tmp_path, problem):
    root, _, selection, picks = picked
    out = str(tmp_path / "out.json")
    config = ExportConfig(selection=selection, format="label-studio", out=out, local_files_root=root)
    if problem == "no-uri":
        bad = str(tmp_path / "bad.parquet")
        pq.write_table(pa.table({"path": [p.uri for p in picks]}), bad)
        config.selection, expected = bad, "no 'uri' column"
    elif problem == "local-without-root":
        config.local_files_root, expected = None, "--local-files-root"
    elif problem == "outside-root":
        config.local_files_root, expected = os.path.join(root, "a"), "outside --local-files-root"
    elif problem == "unreadable-image":
        open(picks[2].uri, "wb").write(b"not an image")
        config.format, config.local_files_root, expected = "coco", None, os.path.basename(picks[2].uri)
    else:
        config.local_files_root, config.presign, expected = None, 60, "signs s3:// URIs only"
    with pytest.raises(ExportError, match=expected.replace("(", r"\(")):
        export_selection(config)
    assert not os.path.exists(out) and not os.path.exists(out + ".raysel.json")


def test_cli_export_reports_a_bad_selection_in_one_line(picked, tmp_path, capsys):
    _, _, _, picks = picked
    bad = str(tmp_path / "bad.csv")
    open(bad, "w").write("path\n" + "\n".join(p.uri for p in picks) + "\n")
    assert main(["export", bad, "--format", "csv", "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("raysel: error:") and "'uri'" in err[0]
    assert main(["export", bad, "--format", "yolo", "--out", str(tmp_path / "x.csv")]) == 2
    assert "--format must be one of" in capsys.readouterr().err


@pytest.mark.s3
def test_label_studio_s3_uris_and_presigned_urls_fetch_the_objects(s3_endpoint, s3_bucket, tmp_path):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    local = write_images(str(tmp_path / "pool"), count=3)
    uris = []
    for path in local:
        key = "images/" + os.path.basename(path)
        client.upload_file(path, s3_bucket, key)
        uris.append(f"s3://{s3_bucket}/{key}")
    selection = str(tmp_path / "selection.parquet")
    write_selection(selection, uris, store="s3://unused")
    plain = str(tmp_path / "tasks.json")
    export_selection(ExportConfig(selection=selection, format="label-studio", out=plain, s3_endpoint=s3_endpoint))
    assert [t["data"]["image"] for t in json.load(open(plain))] == uris
    signed = f"s3://{s3_bucket}/exports/tasks.json"  # the export itself can go to the bucket
    export_selection(ExportConfig(selection=selection, format="label-studio", out=signed, presign=300, s3_endpoint=s3_endpoint))
    tasks = json.loads(client.get_object(Bucket=s3_bucket, Key="exports/tasks.json")["Body"].read())
    for task, path in zip(tasks, local):
        url = task["data"]["image"]
        assert url.startswith(s3_endpoint + "/") and "Signature" in url
        with urllib.request.urlopen(url, timeout=10) as response:  # no credentials: the URL alone grants the GET
            assert response.read() == open(path, "rb").read()
    coco = str(tmp_path / "coco.json")
    export_selection(ExportConfig(selection=selection, format="coco", out=coco, s3_endpoint=s3_endpoint))
    document = json.load(open(coco))
    assert [i["file_name"] for i in document["images"]] == [os.path.basename(p) for p in local]
    assert document["info"]["image_root"] == f"s3://{s3_bucket}/images/"
