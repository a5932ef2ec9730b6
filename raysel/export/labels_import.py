"""`raysel import-labels`: a labeling tool's export -> the `uri,label` file `select --labeled` reads.

Label Studio JSON export (Export -> JSON): a list of tasks, each with `data` and `annotations`.
The image of a task is `data.uri` (what `raysel export --format label-studio` puts there), else
`data.image` when it is an s3:// URI or a local path of the store; its label is the first
`choices` value of the newest annotation that was not cancelled. Tasks without annotations are
left out (not labeled yet) and counted.

COCO file (CVAT / FiftyOne / pycocotools): `images`, `annotations`, `categories`. An image is
matched to the store by `coco_url` (what `raysel export --format coco` writes) or else by its
`file_name` as the end of exactly one store uri; its label is the name of its annotations'
category (one category per image: raysel's labels are one class per image).

Errors (nothing is written): images the store does not have, an image matching several store
uris, an image with two different labels, a file that is neither format.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from raysel import schema, storage
from raysel.config import ImportLabelsConfig
from raysel.export.errors import LabelsImportError
from raysel.store import FeatureStore, FeatureStoreError


@dataclass
class ImportSummary:
    out: str
    labeled: int
    unlabeled: int
    classes: int

    def lines(self) -> str:
        return (f"{self.labeled} labeled images ({self.classes} classes) -> {self.out}; "
                f"{self.unlabeled} without a label left out")


def store_uris(store_uri: str, config: ImportLabelsConfig) -> set[str]:
    store = FeatureStore(store_uri, config.storage())
    try:
        store.metadata()
        return {uri for table in store.iter_tables(columns=[schema.URI]) for uri in table.column(schema.URI).to_pylist()}
    except FeatureStoreError as exc:
        raise LabelsImportError(f"--store: {exc}") from exc


def _known(uri: str, known: set[str], source: str) -> str:
    if uri not in known:
        raise LabelsImportError(f"{source}: image {uri} is not in the feature store (tasks the store does not know)")
    return uri


def _task_uri(task: dict, known: set[str], source: str) -> str:
    data = task.get("data") or {}
    candidate = data.get("uri") or data.get("image")
    if not isinstance(candidate, str) or not candidate:
        raise LabelsImportError(f"{source}: task {task.get('id')} has neither data.uri nor data.image")
    if candidate not in known and candidate.startswith(("http://", "https://", "/data/")):
        raise LabelsImportError(
            f"{source}: task {task.get('id')} names its image by URL ({candidate[:80]}) and has no data.uri; "
            f"export the tasks with `raysel export --format label-studio` so each carries its store uri"
        )
    return _known(candidate, known, source)


def _task_label(task: dict) -> str | None:
    annotations = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    annotations.sort(key=lambda a: (a.get("updated_at") or a.get("created_at") or "", a.get("id") or 0), reverse=True)
    for annotation in annotations:
        for result in annotation.get("result") or []:
            choices = (result.get("value") or {}).get("choices")
            if choices:
                return str(choices[0])
    return None


def from_label_studio(tasks: list, known: set[str], source: str) -> tuple[dict[str, str], int]:
    labels: dict[str, str] = {}
    unlabeled = 0
    for task in tasks:
        if not isinstance(task, dict):
            raise LabelsImportError(f"{source}: expected a list of Label Studio tasks (objects)")
        uri = _task_uri(task, known, source)
        label = _task_label(task)
        if label is None:
            unlabeled += 1
            continue
        if uri in labels and labels[uri] != label:
            raise LabelsImportError(f"{source}: {uri} has two labels, {labels[uri]!r} and {label!r}")
        labels[uri] = label
    return labels, unlabeled


def _coco_image_uri(image: dict, known: set[str], by_name: dict[str, list[str]], source: str) -> str:
    url = image.get("coco_url")
    if isinstance(url, str) and url in known:
        return url
    name = str(image.get("file_name") or "").lstrip("/")
    if not name:
        raise LabelsImportError(f"{source}: image id {image.get('id')} has no file_name")
    if name in known:
        return name
    matches = by_name.get(name.rsplit("/", 1)[-1], [])
    matches = [u for u in matches if u.endswith("/" + name)]
    if not matches:
        raise LabelsImportError(f"{source}: image {name} (id {image.get('id')}) is not in the feature store")
    if len(matches) > 1:
        raise LabelsImportError(f"{source}: image {name} matches {len(matches)} store uris ({matches[:2]}); give full paths")
    return matches[0]


def from_coco(document: dict, known: set[str], source: str) -> tuple[dict[str, str], int]:
    categories = {c.get("id"): str(c.get("name")) for c in document.get("categories") or []}
    by_name: dict[str, list[str]] = {}
    for uri in known:
        by_name.setdefault(uri.rsplit("/", 1)[-1], []).append(uri)
    image_uris = {image.get("id"): _coco_image_uri(image, known, by_name, source) for image in document.get("images") or []}
    labels: dict[str, str] = {}
    for annotation in document.get("annotations") or []:
        image_id, category = annotation.get("image_id"), annotation.get("category_id")
        if image_id not in image_uris:
            raise LabelsImportError(f"{source}: annotation {annotation.get('id')} names image id {image_id}, not in 'images'")
        if category not in categories:
            raise LabelsImportError(f"{source}: annotation {annotation.get('id')} names category {category}, not in 'categories'")
        uri, label = image_uris[image_id], categories[category]
        if uri in labels and labels[uri] != label:
            raise LabelsImportError(
                f"{source}: {uri} has annotations of two categories ({labels[uri]!r}, {label!r}); "
                f"raysel's labels are one class per image"
            )
        labels[uri] = label
    return labels, len(image_uris) - len(labels)


def _detect(document: Any, source: str) -> str:
    if isinstance(document, list):
        return "label-studio"
    if isinstance(document, dict) and "images" in document:
        return "coco"
    raise LabelsImportError(f"{source} is neither a Label Studio JSON export (a list of tasks) nor a COCO file ('images')")


def labels_table(labels: dict[str, str]) -> pa.Table:
    """uri, label rows sorted by uri (string labels: what the tools name their classes)."""
    uris = sorted(labels)
    return pa.table({schema.URI: pa.array(uris, pa.string()), schema.LABEL: pa.array([labels[u] for u in uris], pa.string())})


def import_labels(config: ImportLabelsConfig) -> ImportSummary:
    """Read `config.source`, check every image against `config.store`, write `config.out` (uri, label)."""
    config.validate()
    options = config.storage()
    try:
        document = json.loads(storage.read_bytes(config.source, options))
    except FileNotFoundError as exc:
        raise LabelsImportError(f"{config.source} does not exist") from exc
    except ValueError as exc:
        raise LabelsImportError(f"{config.source} is not JSON: {exc}") from exc
    kind = _detect(document, config.source) if config.format == "auto" else config.format
    known = store_uris(config.store, config)
    if kind == "label-studio":
        if not isinstance(document, list):
            raise LabelsImportError(f"{config.source} is not a Label Studio JSON export (a list of tasks)")
        labels, unlabeled = from_label_studio(document, known, config.source)
    else:
        if not isinstance(document, dict):
            raise LabelsImportError(f"{config.source} is not a COCO file (an object with 'images')")
        labels, unlabeled = from_coco(document, known, config.source)
    if not labels:
        raise LabelsImportError(f"{config.source} holds no labels (no annotated images): nothing to write")
    table = labels_table(labels)
    if config.out.lower().endswith(".csv"):
        buffer = io.BytesIO()
        pacsv.write_csv(table, buffer)
        storage.write_bytes_atomic(config.out, buffer.getvalue(), options)
    else:
        storage.write_parquet_atomic(table, config.out, options)
    return ImportSummary(config.out, len(labels), unlabeled, len(set(labels.values())))
