"""`export_selection(config)`: what `raysel export` and `raysel.api.export` call.

1. Check the options, read the selection (and its recorded config).
2. Build every output file in memory with the format's builder: any image or uri the format cannot
   express raises an ExportError here, before a byte is written.
3. Write the files (a directory output is filled under a temporary name, then renamed), then
   `<out>.raysel.json`: this export's config, the selection's own config, counts, version.
"""
from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from typing import Callable

from raysel import __version__, storage
from raysel.config import ExportConfig, to_dict
from raysel.export.coco import build_coco
from raysel.export.csv_format import build_csv
from raysel.export.cvat import build_cvat
from raysel.export.fiftyone_format import build_fiftyone
from raysel.export.label_studio import build_label_studio
from raysel.export.picks import Picks, read_picks

EXPORT_RECORD_SUFFIX = ".raysel.json"  # next to every export: what produced it

BUILDERS: dict[str, Callable[[Picks, ExportConfig], dict[str, bytes]]] = {
    "csv": build_csv,
    "coco": build_coco,
    "label-studio": build_label_studio,
    "cvat": build_cvat,
    "fiftyone": build_fiftyone,
}
DIRECTORY_FORMATS = ("fiftyone",)


@dataclass
class ExportSummary:
    out: str
    format: str
    images: int
    files: list[str]

    def lines(self) -> str:
        return f"exported {self.images} images as {self.format} -> {self.out} (+ {self.out}{EXPORT_RECORD_SUFFIX})"


def record_uri(out: str) -> str:
    return out.rstrip("/") + EXPORT_RECORD_SUFFIX


def _write_directory(out: str, files: dict[str, bytes], config: ExportConfig) -> None:
    """Every file of a directory output, or none: locally built aside and renamed into place."""
    options = config.storage()
    if storage.is_s3(out):
        for uri, data in sorted(files.items(), key=lambda item: item[0].endswith("samples.json")):
            storage.write_bytes_atomic(uri, data, options)  # samples.json last: its presence marks the dataset whole
        return
    final = os.path.abspath(out)
    staging = f"{final}.tmp-{uuid.uuid4().hex}"
    os.makedirs(staging)
    for uri, data in files.items():
        with open(os.path.join(staging, os.path.relpath(os.path.abspath(uri), final)), "wb") as handle:
            handle.write(data)
    if os.path.isdir(final):
        retired = f"{final}.old-{uuid.uuid4().hex}"
        os.replace(final, retired)
        os.replace(staging, final)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, final)


def export_selection(config: ExportConfig) -> ExportSummary:
    """Write the selection `config.selection` in `config.format` to `config.out`.

    Returns:
        ExportSummary (images exported, files written). Raises ExportError (a ValueError)
        for any input the format cannot express; nothing is written then.
    """
    config.validate()
    options = config.storage()
    picks = read_picks(config.selection, options)
    files = BUILDERS[config.format](picks, config)
    if config.format in DIRECTORY_FORMATS:
        _write_directory(config.out, files, config)
    else:
        for uri, data in files.items():
            storage.write_bytes_atomic(uri, data, options)
    storage.write_json_atomic(
        record_uri(config.out),
        {
            "export": to_dict(config),
            "images": len(picks.uris),
            "selection": picks.source,
            "selection_config": picks.selection_config or None,
            "raysel_version": __version__,
        },
        options,
    )
    return ExportSummary(config.out, config.format, len(picks.uris), sorted(files))
