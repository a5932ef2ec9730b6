"""Errors of `raysel export` and `raysel import-labels`: ValueErrors raised before anything is written."""
from __future__ import annotations


class ExportError(ValueError):
    """A selection, an image or an option that the chosen format cannot express."""


class LabelsImportError(ValueError):
    """A labeling tool's export that cannot become `uri,label` rows (unknown images, no labels, ...)."""
