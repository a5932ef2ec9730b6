"""The exports read by the real tools: Label Studio's server (project, import, local files, annotations,
its own JSON export back through import-labels) and FiftyOne (its importer, and its database).

Label Studio runs from the tools venv (.tools/, scripts/install_labeling_tools.sh) on a free
loopback port, one server per test session. FiftyOne's database is a real MongoDB 6.0 server
(.tools/mongodb/, see tests/labeling_tools.py for where it comes from) on a free loopback port:
the export becomes a persistent FiftyOne dataset there, and FiftyOne's brain indexes the exported
embeddings for its similarity search.
"""
from __future__ import annotations

import json
import os
import subprocess
import urllib.request

import pytest

import labeling_tools
from export_pool import write_images, write_pool_store, write_selection
from raysel.config import ExportConfig, ImportLabelsConfig
from raysel.export import export_selection, import_labels
from raysel.select.supervision.labels import read_labels

LABEL_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Choices name="label" toName="image"><Choice value="cat"/><Choice value="dog"/></Choices>
</View>"""


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """(base URL, local-files document root) of a Label Studio server for this session."""
    reason = labeling_tools.missing()
    if reason:
        pytest.fail(reason)
    home = tmp_path_factory.mktemp("label-studio")
    files_root = str(home / "files")
    os.makedirs(files_root)
    data_dir = labeling_tools.fresh_data_dir(str(home / "data"))
    process, base = labeling_tools.start_label_studio(data_dir, files_root, str(home / "server.log"))
    yield base, files_root
    labeling_tools.stop(process)


def test_label_studio_imports_the_tasks_serves_the_images_and_its_export_comes_back_as_labels(label_studio, tmp_path):
    base, files_root = label_studio
    paths = write_images(os.path.join(files_root, "pool"))
    store = str(tmp_path / "store")
    write_pool_store(store, paths)
    selection = str(tmp_path / "selection.parquet")
    picks = write_selection(selection, [paths[4], paths[1], paths[2]], store)
    tasks_file = str(tmp_path / "tasks.json")
    export_selection(ExportConfig(selection=selection, format="label-studio", out=tasks_file, local_files_root=files_root))

    project = labeling_tools.api(base, "POST", "/api/projects", {"title": "raysel picks", "label_config": LABEL_CONFIG})
    imported = labeling_tools.api(base, "POST", f"/api/projects/{project['id']}/import", json.load(open(tasks_file)))
    assert imported["task_count"] == len(picks)
    listed = labeling_tools.api(base, "GET", f"/api/tasks?project={project['id']}&page_size=100")
    tasks = sorted(listed["tasks"] if isinstance(listed, dict) else listed, key=lambda t: t["data"]["rank"])
    assert [t["data"]["uri"] for t in tasks] == [p.uri for p in picks]
    assert [t["data"]["rank"] for t in tasks] == [0, 1, 2] and tasks[0]["data"]["score"] is None
    assert tasks[1]["data"]["score"] == pytest.approx(picks[1].score)

    # Label Studio serves local files only under a Local Storage of the project (connected, not synced)
    labeling_tools.api(base, "POST", "/api/storages/localfiles", {
        "project": project["id"], "path": os.path.join(files_root, "pool"), "title": "pool", "use_blob_urls": False})
    for task, pick in zip(tasks, picks):
        request = urllib.request.Request(base + task["data"]["image"], headers={"Authorization": f"Token {labeling_tools.TOKEN}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.read() == open(pick.uri, "rb").read()

    for task, label in zip(tasks[:2], ["dog", "cat"]):
        labeling_tools.api(base, "POST", f"/api/tasks/{task['id']}/annotations", {
            "result": [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]})
    exported = labeling_tools.api(base, "GET", f"/api/projects/{project['id']}/export?exportType=JSON&download_all_tasks=true")
    export_file = str(tmp_path / "label-studio-export.json")
    json.dump(exported, open(export_file, "w"))
    out = str(tmp_path / "labels.csv")
    summary = import_labels(ImportLabelsConfig(source=export_file, store=store, out=out))
    assert (summary.labeled, summary.unlabeled) == (2, 1)
    labels = read_labels(out)
    assert dict(zip(labels.uris, labels.labels)) == {picks[0].uri: "dog", picks[1].uri: "cat"}


def test_label_studio_accepts_s3_tasks(label_studio, tmp_path):
    base, _ = label_studio
    uris = [f"s3://bucket/images/{i}.jpg" for i in range(3)]
    selection = str(tmp_path / "selection.parquet")
    write_selection(selection, uris, "s3://bucket/store")
    tasks_file = str(tmp_path / "tasks.json")
    export_selection(ExportConfig(selection=selection, format="label-studio", out=tasks_file))
    project = labeling_tools.api(base, "POST", "/api/projects", {"title": "s3 picks", "label_config": LABEL_CONFIG})
    imported = labeling_tools.api(base, "POST", f"/api/projects/{project['id']}/import", json.load(open(tasks_file)))
    assert imported["task_count"] == 3
    listed = labeling_tools.api(base, "GET", f"/api/tasks?project={project['id']}&page_size=100")
    tasks = listed["tasks"] if isinstance(listed, dict) else listed
    assert sorted(t["data"]["image"] for t in tasks) == uris  # resolved by a connected S3 source storage


FIFTYONE_READER = r"""
import json, sys
import fiftyone as fo
from fiftyone.utils.data.importers import LegacyFiftyOneDatasetImporter
importer = LegacyFiftyOneDatasetImporter(sys.argv[1])
with importer:
    samples = list(importer)
    info = importer.get_dataset_info()
assert all(isinstance(sample, fo.Sample) for sample in samples)
print(json.dumps({"info": info, "samples": [{"filepath": s.filepath, "rank": s["rank"], "score": s["score"],
    "method": s["method"], "tags": s.tags, "embedding": s["embedding"]} for s in samples]}))
"""


def export_fiftyone(tmp_path, order: list[int]):
    """A pool, its store and a selection of the images at `order`, exported for FiftyOne with embeddings.

    Returns (store vectors [N, D], selection path, picks, export folder).
    """
    paths = write_images(str(tmp_path / "pool"))
    store = str(tmp_path / "store")
    vectors = write_pool_store(store, paths)
    selection = str(tmp_path / "selection.parquet")
    picks = write_selection(selection, [paths[i] for i in order], store)
    out = str(tmp_path / "fiftyone")
    export_selection(ExportConfig(selection=selection, format="fiftyone", out=out, embeddings=True))
    return vectors, selection, picks, out


def test_fiftyone_importer_reads_the_export_into_samples(tmp_path):
    reason = labeling_tools.missing()
    if reason:
        pytest.fail(reason)
    vectors, selection, picks, out = export_fiftyone(tmp_path, [2, 0])
    env = {**os.environ, "FIFTYONE_DO_NOT_TRACK": "true", "FIFTYONE_DATABASE_DIR": str(tmp_path / "db")}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([labeling_tools.tool("python"), "-c", FIFTYONE_READER, out],
                          capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    samples = loaded["samples"]
    assert [s["filepath"] for s in samples] == [p.uri for p in picks]
    assert [s["rank"] for s in samples] == [0, 1] and samples[0]["score"] is None
    assert all(s["method"] == "geal" and s["tags"] == ["raysel"] for s in samples)
    assert samples[0]["embedding"] == pytest.approx(vectors[2].tolist(), abs=1e-6)
    assert loaded["info"]["raysel_selection"] == selection


FIFTYONE_DATABASE_SCRIPT = r"""
import json, sys
import fiftyone as fo
import fiftyone.brain as fob
from fiftyone import ViewField as F
export, name = sys.argv[1], sys.argv[2]
dataset = fo.Dataset.from_dir(dataset_dir=export, dataset_type=fo.types.LegacyFiftyOneDataset, name=name, persistent=True)
del dataset
fo.core.dataset.delete_non_persistent_datasets()
dataset = fo.load_dataset(name)  # read back from the database, not from the object in memory
by_rank = dataset.sort_by("rank")
fob.compute_similarity(dataset, embeddings="embedding", brain_key="raysel_sim", backend="sklearn", metric="euclidean")
nearest = dataset.sort_by_similarity(by_rank.first().id, k=len(dataset), brain_key="raysel_sim")
print(json.dumps({"datasets": fo.list_datasets(), "count": len(dataset), "filepaths": by_rank.values("filepath"),
                  "ranks": by_rank.values("rank"), "methods": dataset.distinct("method"),
                  "first_rank_only": len(dataset.match(F("rank") < 1)),
                  "embedding_dims": [len(v) for v in by_rank.values("embedding")],
                  "nearest_to_rank_0": nearest.values("rank"), "info": dataset.info}))
"""


def test_fiftyone_database_holds_the_export_and_indexes_its_embeddings(tmp_path):
    for reason in (labeling_tools.missing(), labeling_tools.mongod_missing()):
        if reason:
            pytest.fail(reason)
    order = [3, 0, 2]
    vectors, selection, picks, out = export_fiftyone(tmp_path, order)

    mongod, uri = labeling_tools.start_mongod(str(tmp_path / "mongo"), str(tmp_path / "mongod.log"))
    try:
        env = {**os.environ, "FIFTYONE_DO_NOT_TRACK": "true", "FIFTYONE_DATABASE_URI": uri,
               "FIFTYONE_DATABASE_VALIDATION": "false"}  # MongoDB 6.0 is FiftyOne's oldest supported: no nag
        env.pop("PYTHONPATH", None)
        done = subprocess.run([labeling_tools.tool("python"), "-c", FIFTYONE_DATABASE_SCRIPT, out, "raysel-picks"],
                              capture_output=True, text=True, timeout=240, env=env)
    finally:
        labeling_tools.stop(mongod)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["datasets"] == ["raysel-picks"] and loaded["count"] == len(order)
    assert loaded["filepaths"] == [p.uri for p in picks] and loaded["ranks"] == [0, 1, 2]
    assert loaded["methods"] == ["geal"] and loaded["first_rank_only"] == 1
    assert loaded["embedding_dims"] == [vectors.shape[1]] * len(order)
    assert loaded["info"]["raysel_selection"] == selection
    # FiftyOne's similarity index over the exported embeddings orders the picks as the vectors do.
    first = vectors[order[0]]
    expected = sorted(range(len(order)), key=lambda rank: float(((vectors[order[rank]] - first) ** 2).sum()))
    assert loaded["nearest_to_rank_0"] == expected
