"""`--format coco`: a COCO file whose `images` list holds the picks, with empty annotations.

    {"info": {...}, "licenses": [], "categories": [],
     "images": [{"id": 1, "file_name": "cats/001.jpg", "width": 640, "height": 480,
                 "coco_url": "s3://bucket/images/cats/001.jpg", "raysel_rank": 0, "raysel_score": 0.71}, ...],
     "annotations": []}

`file_name` is the image's path relative to `--image-root` (default: the images' common folder),
which is how CVAT, Datumaro and most detection tools match a COCO file to the images of a task or
folder; `coco_url` keeps the full uri (s3:// or an absolute path). Ids are rank + 1 (COCO ids start at 1).
"""
from __future__ import annotations

import json
import time

from raysel import __version__
from raysel.config import ExportConfig
from raysel.export.image_info import image_infos, relative_names
from raysel.export.picks import Picks


def coco_document(picks: Picks, config: ExportConfig) -> dict:
    options = config.storage()
    root, names = relative_names(picks.uris, config.image_root)
    infos = image_infos(picks.uris, options)
    images = [
        {
            "id": rank + 1,
            "file_name": name,
            "width": info.width,
            "height": info.height,
            "coco_url": uri,
            "raysel_rank": rank,
            "raysel_score": score,
        }
        for uri, name, info, rank, score in zip(picks.uris, names, infos, picks.ranks, picks.scores)
    ]
    return {
        "info": {
            "description": f"raysel selection {picks.source} ({picks.method or 'method not recorded'})",
            "version": __version__,
            "date_created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "image_root": root,
        },
        "licenses": [],
        "categories": [],
        "images": images,
        "annotations": [],
    }


def build_coco(picks: Picks, config: ExportConfig) -> dict[str, bytes]:
    return {config.out: json.dumps(coco_document(picks, config), indent=1).encode("utf-8")}
