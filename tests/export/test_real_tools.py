"""The exports read by the real tools: Label Studio's server (project, import, local files, annotations,
its own JSON export back through import-labels) and FiftyOne's own importer.

Label Studio runs from the tools venv (.tools/, scripts/install_labeling_tools.sh) on a free
loopback port, one server per test session. FiftyOne's database (MongoDB, which the fiftyone-db
package downloads at install time) cannot be fetched on a machine without internet, so FiftyOne is
driven as far as it goes without one: its LegacyFiftyOneDataset importer reads the export into
`fiftyone.Sample`s.
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


def test_fiftyone_importer_reads_the_export_into_samples(tmp_path):
    reason = labeling_tools.missing()
    if reason:
        pytest.fail(reason)
    paths = write_images(str(tmp_path / "pool"))
    store = str(tmp_path / "store")
    vectors = write_pool_store(store, paths)
    selection = str(tmp_path / "selection.parquet")
    picks = write_selection(selection, [paths[2], paths[0]], store)
    out = str(tmp_path / "fiftyone")
    export_selection(ExportConfig(selection=selection, format="fiftyone", out=out, embeddings=True))
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
