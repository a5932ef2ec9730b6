"""`--format cvat`: a CVAT dataset manifest (manifest.jsonl) for a task over cloud-storage images.

    {"version":"1.1"}
    {"type":"images"}
    {"name":"cats/001","extension":".jpg","width":640,"height":480,"meta":{"related_images":[]},"checksum":"<md5>"}

One line per pick, in rank order; `name` is the path relative to `--image-root` (default: the
images' common folder / s3:// prefix) without its extension, `checksum` the md5 of the file. Put the
file in the bucket at that root, attach the bucket to CVAT as a cloud storage with this manifest
(Cloud Storages -> Add, "Manifests"), and create the task from it with "Sort: predefined", so the
frames follow the pick order (docs/operations.md, "From bucket to labeling tool").
"""
from __future__ import annotations

import json
import posixpath

from raysel.config import ExportConfig
from raysel.export.image_info import image_infos, relative_names
from raysel.export.picks import Picks

MANIFEST_VERSION = "1.1"


def manifest_lines(picks: Picks, config: ExportConfig) -> list[dict]:
    _, names = relative_names(picks.uris, config.image_root)
    infos = image_infos(picks.uris, config.storage())
    lines: list[dict] = [{"version": MANIFEST_VERSION}, {"type": "images"}]
    for name, info in zip(names, infos):
        stem, extension = posixpath.splitext(name)
        lines.append({
            "name": stem,
            "extension": extension,
            "width": info.width,
            "height": info.height,
            "meta": {"related_images": []},
            "checksum": info.md5,
        })
    return lines


def build_cvat(picks: Picks, config: ExportConfig) -> dict[str, bytes]:
    text = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in manifest_lines(picks, config))
    return {config.out: text.encode("utf-8")}
