"""Labels and class probabilities that the label-aware methods (pt4al, uncertainty) read.

- A labels file (`--labeled FILE`, .parquet or .csv, local or s3://): `uri` and
  `label` (int or string), one row per labeled image.
- A predictions file (`--predictions FILE`): `uri` and class probabilities, either
  columns `prob_0 .. prob_{K-1}` or one list column `probs`; each row sums to 1.

Errors name the file, the row or uri, and what to fix; all are `SelectionError`s
(ValueError), raised before anything is written.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from raysel import schema, storage
from raysel.select.errors import LabeledError, SelectionError
from raysel.storage import StorageOptions

PROBS = "probs"  # list<float> column of a predictions file
PROB_COLUMN = re.compile(r"^prob_(\d+)$")
PROBABILITY_TOLERANCE = 1e-3  # |sum of a row - 1| allowed in a predictions file


class LabelsMissingError(LabeledError):
    """A method needs labels and the labeled file has none (no `label` column, or empty labels)."""


class UnknownUriError(LabeledError):
    """A labels or predictions file names images the feature store does not have."""


class SingleClassError(SelectionError):
    """The labeled images hold fewer than two classes: no classifier can be trained."""


class PredictionsError(SelectionError):
    """A predictions file that cannot be used: no probability columns, bad values, rows not summing to 1."""


@dataclass
class LabeledSet:
    """Labeled images: `uris` [N] and `labels` [N] (python ints or strings), in file order."""

    uris: list[str]
    labels: list[Any]

    def classes(self) -> list[Any]:
        """The distinct labels, sorted (numbers numerically, strings alphabetically)."""
        return sorted(set(self.labels), key=lambda value: (isinstance(value, str), value))

    def class_indices(self) -> tuple[list[Any], np.ndarray]:
        """(classes, [N] int64 index of each image's label in classes)."""
        classes = self.classes()
        position = {label: index for index, label in enumerate(classes)}
        return classes, np.array([position[label] for label in self.labels], dtype=np.int64)


def read_table(uri: str, options: StorageOptions | None = None, what: str = "file") -> pa.Table:
    """A .parquet or .csv file (local or s3://) as an Arrow table; `uri` column read as strings."""
    if not uri.lower().endswith((".parquet", ".csv")):
        raise LabeledError(f"{what} {uri!r} must be a .parquet or .csv file")
    try:
        return storage.read_table_file(uri, options, string_columns=(schema.URI,))
    except FileNotFoundError as exc:
        raise LabeledError(f"{what} {uri!r} does not exist") from exc
    except (pa.ArrowInvalid, OSError) as exc:
        raise LabeledError(f"{what} {uri!r} is not a readable table: {exc}") from exc


def _uris_of(table: pa.Table, uri: str, what: str) -> list[str]:
    if schema.URI not in table.column_names:
        raise LabeledError(f"{what} {uri!r} has no '{schema.URI}' column (columns: {table.column_names})")
    uris = table.column(schema.URI).to_pylist()
    for row, value in enumerate(uris):
        if not isinstance(value, str) or not value:
            raise LabeledError(f"{what} {uri!r}: row {row} has no '{schema.URI}'")
    return uris


def read_labels(uri: str, options: StorageOptions | None = None) -> LabeledSet:
    """`uri` + `label` rows of a labels file; the same uri twice must carry the same label."""
    table = read_table(uri, options, "labeled file")
    uris = _uris_of(table, uri, "labeled file")
    if schema.LABEL not in table.column_names:
        raise LabelsMissingError(
            f"labeled file {uri!r} has no '{schema.LABEL}' column (columns: {table.column_names}); "
            f"this method trains a classifier and needs each image's label"
        )
    labels = table.column(schema.LABEL).to_pylist()
    seen: dict[str, Any] = {}
    for row, (image, label) in enumerate(zip(uris, labels)):
        if label is None or (isinstance(label, float) and not np.isfinite(label)) or label == "":
            raise LabelsMissingError(f"labeled file {uri!r}: row {row} ({image}) has no label")
        if isinstance(label, float) and label.is_integer():
            label = int(label)
        if image in seen and seen[image] != label:
            raise LabeledError(f"labeled file {uri!r}: {image} has two labels, {seen[image]!r} and {label!r}")
        seen[image] = label
    return LabeledSet(uris=list(seen), labels=list(seen.values()))


def read_predictions(
    uri: str, options: StorageOptions | None = None, logits: bool = False
) -> tuple[list[str], np.ndarray]:
    """(uris [N], probabilities [N, K] float64) of a predictions file, validated.

    With `logits=True` the columns hold raw logits (`--predictions-logits`): any
    finite numbers, no [0, 1] or sum-to-1 check.
    """
    table = read_table(uri, options, "predictions file")
    uris = _uris_of(table, uri, "predictions file")
    if len(set(uris)) != len(uris):
        raise PredictionsError(f"predictions file {uri!r} lists an image more than once")
    prob_columns = sorted(
        (int(match.group(1)), name) for name in table.column_names if (match := PROB_COLUMN.match(name))
    )
    if prob_columns:
        if [index for index, _ in prob_columns] != list(range(len(prob_columns))):
            raise PredictionsError(
                f"predictions file {uri!r}: probability columns must be prob_0 .. prob_{{K-1}} without gaps, "
                f"got {[name for _, name in prob_columns]}"
            )
        columns = [table.column(name) for _, name in prob_columns]
        if any(column.null_count for column in columns):
            raise PredictionsError(f"predictions file {uri!r} has empty probabilities")
        for (_, name), column in zip(prob_columns, columns):
            if not (pa.types.is_floating(column.type) or pa.types.is_integer(column.type)):
                raise PredictionsError(f"predictions file {uri!r}: column {name} holds {column.type}, not numbers")
        probs = np.stack([column.to_numpy(zero_copy_only=False).astype(np.float64) for column in columns], axis=1)
    elif PROBS in table.column_names:
        rows = table.column(PROBS).to_pylist()
        lengths = {len(row) if row is not None else -1 for row in rows}
        if len(lengths) > 1 or -1 in lengths:
            raise PredictionsError(f"predictions file {uri!r}: every '{PROBS}' row must hold the same number of classes")
        try:
            probs = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)
        except (TypeError, ValueError) as exc:
            raise PredictionsError(f"predictions file {uri!r}: '{PROBS}' must hold lists of numbers ({exc})") from exc
    else:
        raise PredictionsError(
            f"predictions file {uri!r} has no class probabilities: give columns prob_0 .. prob_{{K-1}} "
            f"or a list column '{PROBS}' (columns: {table.column_names})"
        )
    if probs.shape[1] < 2:
        raise PredictionsError(f"predictions file {uri!r} has {probs.shape[1]} class; need at least 2")
    if not np.isfinite(probs).all():
        raise PredictionsError(f"predictions file {uri!r} has NaN or infinite probabilities")
    if logits:
        return uris, probs
    if (probs < -PROBABILITY_TOLERANCE).any() or (probs > 1 + PROBABILITY_TOLERANCE).any():
        row = int(np.argmax(((probs < -PROBABILITY_TOLERANCE) | (probs > 1 + PROBABILITY_TOLERANCE)).any(axis=1)))
        raise PredictionsError(f"predictions file {uri!r}: {uris[row]} has a probability outside [0, 1]")
    sums = probs.sum(axis=1)
    bad = np.abs(sums - 1.0) > PROBABILITY_TOLERANCE
    if bad.any():
        row = int(np.argmax(bad))
        raise PredictionsError(
            f"predictions file {uri!r}: the probabilities of {uris[row]} sum to {sums[row]:.6f}, not 1 "
            f"(tolerance {PROBABILITY_TOLERANCE}); {int(bad.sum())} row(s) in all. Give softmax outputs, or logits with --predictions-logits."
        )
    return uris, probs


def check_known(uris: list[str], known: set[str], what: str) -> None:
    """UnknownUriError naming a few of `uris` that are not in the store."""
    unknown = [u for u in uris if u not in known]
    if unknown:
        shown = ", ".join(unknown[:5]) + (f", ... ({len(unknown)} in all)" if len(unknown) > 5 else "")
        raise UnknownUriError(f"{what} names images the feature store does not have: {shown}")
