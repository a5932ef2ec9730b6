"""Labels coming back: Label Studio JSON exports and COCO files -> uri,label that `select --labeled` reads."""
from __future__ import annotations

import json
import os

import pytest

from export_pool import write_images, write_pool_store, write_selection
from raysel.cli import main
from raysel.config import ExportConfig, ImportLabelsConfig
from raysel.export import export_selection, import_labels
from raysel.export.errors import LabelsImportError
from raysel.select.supervision.labels import read_labels

pytestmark = pytest.mark.pure


@pytest.fixture
def exported(tmp_path):
    root = str(tmp_path / "pool")
    paths = write_images(root)
    store = str(tmp_path / "store")
    write_pool_store(store, paths)
    selection = str(tmp_path / "selection.parquet")
    write_selection(selection, paths[:4], store)
    return root, store, selection, paths


def annotate(task: dict, label: str | None, task_id: int, cancelled: bool = False) -> dict:
    """A task as Label Studio's JSON export writes it, with one choices annotation."""
    annotations = []
    if label is not None:
        annotations.append({
            "id": task_id * 10, "was_cancelled": cancelled, "created_at": "2026-12-01T10:00:00Z",
            "result": [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}],
        })
    return {"id": task_id, "data": task["data"], "annotations": annotations, "predictions": []}


def test_label_studio_export_becomes_labels_that_select_reads(exported, tmp_path):
    root, store, selection, paths = exported
    tasks_file = str(tmp_path / "tasks.json")
    export_selection(ExportConfig(selection=selection, format="label-studio", out=tasks_file, local_files_root=root))
    tasks = json.load(open(tasks_file))
    labeled = [annotate(tasks[0], "cat", 1), annotate(tasks[1], "dog", 2), annotate(tasks[2], None, 3),
               annotate(tasks[3], "cat", 4, cancelled=True)]
    ls_export = str(tmp_path / "ls-export.json")
    json.dump(labeled, open(ls_export, "w"))
    out = str(tmp_path / "labels.csv")
    summary = import_labels(ImportLabelsConfig(source=ls_export, store=store, out=out))
    assert (summary.labeled, summary.unlabeled, summary.classes) == (2, 2, 2)
    got = read_labels(out)  # what `raysel select --labeled` reads
    assert dict(zip(got.uris, got.labels)) == {paths[0]: "cat", paths[1]: "dog"}


def test_coco_annotations_become_labels_matched_by_file_name(exported, tmp_path):
    root, store, selection, paths = exported
    coco_file = str(tmp_path / "coco.json")
    export_selection(ExportConfig(selection=selection, format="coco", out=coco_file))
    document = json.load(open(coco_file))
    for image in document["images"]:
        image.pop("coco_url")  # as CVAT exports it: only the relative file_name
    document["categories"] = [{"id": 1, "name": "car"}, {"id": 2, "name": "bike"}]
    document["annotations"] = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5]},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]},
        {"id": 3, "image_id": 3, "category_id": 2, "bbox": [0, 0, 3, 3]},
    ]
    json.dump(document, open(coco_file, "w"))
    out = str(tmp_path / "labels.parquet")
    assert main(["import-labels", coco_file, "--store", store, "--out", out]) == 0
    got = read_labels(out)
    assert dict(zip(got.uris, got.labels)) == {paths[0]: "car", paths[2]: "bike"}


def test_unknown_tasks_and_mixed_categories_are_errors_and_write_nothing(exported, tmp_path, capsys):
    root, store, selection, paths = exported
    stranger = {"id": 9, "data": {"image": "s3://elsewhere/x.jpg", "uri": "s3://elsewhere/x.jpg"}}
    ls_export = str(tmp_path / "ls.json")
    json.dump([annotate({"data": {"uri": paths[0], "image": paths[0]}}, "cat", 1), annotate(stranger, "dog", 9)],
              open(ls_export, "w"))
    out = str(tmp_path / "labels.csv")
    with pytest.raises(LabelsImportError, match="s3://elsewhere/x.jpg is not in the feature store"):
        import_labels(ImportLabelsConfig(source=ls_export, store=store, out=out))
    assert not os.path.exists(out)
    coco = {"images": [{"id": 1, "file_name": os.path.relpath(paths[0], root)}],
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1}, {"id": 2, "image_id": 1, "category_id": 2}]}
    coco_file = str(tmp_path / "coco.json")
    json.dump(coco, open(coco_file, "w"))
    assert main(["import-labels", coco_file, "--store", store, "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.startswith("raysel: error:") and "two categories" in err and not os.path.exists(out)
