"""`--format label-studio`: a tasks JSON file for Label Studio's import (Data Manager -> Import, or the API).

    [{"data": {"image": "s3://bucket/images/cats/001.jpg", "uri": "s3://bucket/images/cats/001.jpg",
               "rank": 0, "score": 0.71, "method": "geal"}}, ...]

How `data.image` references each image (docs/operations.md, "From bucket to labeling tool"):

- s3:// images, default: the s3:// URI itself. Label Studio resolves it through a source cloud
  storage connected to the project (Settings -> Cloud Storage -> Add Source Storage, same bucket,
  "Use pre-signed URLs" on, "Treat every bucket object as a source file" off; do not sync it).
- s3:// images with `--presign SECONDS`: a presigned HTTPS GET URL, valid that long; no storage
  connection needed, but the URLs expire.
- local images with `--local-files-root DIR`: `/data/local-files/?d=PATH`, PATH relative to DIR, served
  by Label Studio when started with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and
  LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=DIR. A local image outside DIR, or a local image without
  `--local-files-root`, cannot be expressed and is an error.

`data.uri` always keeps the store's uri, so `raysel import-labels` maps annotations back exactly.
"""
from __future__ import annotations

import json
import os
import urllib.parse

from raysel import storage
from raysel.config import ExportConfig
from raysel.export.errors import ExportError
from raysel.export.picks import Picks

IMAGE_KEY = "image"  # the `$image` of a labeling config: <Image name="image" value="$image"/>
LOCAL_FILES_PREFIX = "/data/local-files/?d="


def _local_reference(uri: str, root: str | None) -> str:
    if root is None:
        raise ExportError(
            f"local image {uri}: Label Studio reads local files only through its local-files setting; pass "
            f"--local-files-root DIR (its LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT), or export s3:// images"
        )
    root = os.path.abspath(root).rstrip("/") + "/"
    path = os.path.abspath(uri)
    if not path.startswith(root):
        raise ExportError(f"local image {uri} is outside --local-files-root {root}: Label Studio would not serve it")
    return LOCAL_FILES_PREFIX + urllib.parse.quote(path[len(root):])


def _presigner(config: ExportConfig):
    fs, _ = storage.filesystem("s3://bucket", config.storage())
    return lambda uri: fs.sign(uri[len("s3://"):], expiration=config.presign)


def tasks(picks: Picks, config: ExportConfig) -> list[dict]:
    """One task per pick, in rank order."""
    presign = _presigner(config) if config.presign is not None else None
    local_uris = [u for u in picks.uris if not storage.is_s3(u)]
    if config.presign is not None and local_uris:
        raise ExportError(f"--presign signs s3:// URIs only; {local_uris[0]} is a local path (use --local-files-root)")
    out = []
    for uri, rank, score in zip(picks.uris, picks.ranks, picks.scores):
        if storage.is_s3(uri):
            reference = presign(uri) if presign is not None else uri
        else:
            reference = _local_reference(uri, config.local_files_root)
        data = {IMAGE_KEY: reference, "uri": uri, "rank": rank, "score": score}
        if picks.method:
            data["method"] = picks.method
        out.append({"data": data})
    return out


def build_label_studio(picks: Picks, config: ExportConfig) -> dict[str, bytes]:
    return {config.out: json.dumps(tasks(picks, config), indent=1).encode("utf-8")}
