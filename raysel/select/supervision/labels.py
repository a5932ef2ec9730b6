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
import pyarrow.compute as pc

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


VALIDATE_BLOCK = 65_536  # prediction rows checked at a time (bounds the float64 temporaries)


def _probability_matrix(table: pa.Table, uri: str) -> np.ndarray:
    """[N, K] probabilities straight from the Arrow buffers (float32 or float64 as stored; no Python floats)."""
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
        dtype = np.float32 if all(pa.types.is_float32(c.type) or pa.types.is_float16(c.type) for c in columns) else np.float64
        probs = np.empty((table.num_rows, len(columns)), dtype=dtype)
        for k, column in enumerate(columns):
            probs[:, k] = column.to_numpy(zero_copy_only=False)
        return probs
    if PROBS in table.column_names:
        column = table.column(PROBS)
        column = column.combine_chunks() if column.num_chunks else pa.array([], type=column.type)
        if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type) or pa.types.is_fixed_size_list(column.type)):
            raise PredictionsError(f"predictions file {uri!r}: '{PROBS}' must hold lists of numbers, got {column.type}")
        if column.null_count:
            raise PredictionsError(f"predictions file {uri!r}: every '{PROBS}' row must hold the same number of classes")
        if pa.types.is_fixed_size_list(column.type):
            width = column.type.list_size
        else:
            lengths = np.asarray(column.value_lengths())
            width = int(lengths[0]) if len(lengths) else 0
            if len(lengths) and (lengths != width).any():
                raise PredictionsError(f"predictions file {uri!r}: every '{PROBS}' row must hold the same number of classes")
        values = column.flatten()
        if not (pa.types.is_floating(values.type) or pa.types.is_integer(values.type)) or values.null_count:
            raise PredictionsError(f"predictions file {uri!r}: '{PROBS}' must hold lists of numbers ({values.type})")
        flat = values.to_numpy(zero_copy_only=False)
        if flat.dtype not in (np.float32, np.float64):
            flat = flat.astype(np.float64)
        return flat.reshape(len(column), width)
    raise PredictionsError(
        f"predictions file {uri!r} has no class probabilities: give columns prob_0 .. prob_{{K-1}} "
        f"or a list column '{PROBS}' (columns: {table.column_names})"
    )


def read_predictions(
    uri: str, options: StorageOptions | None = None, logits: bool = False
) -> tuple[pa.Array, np.ndarray]:
    """(uris [N] Arrow strings, probabilities [N, K] float32/float64 numpy) of a predictions file, validated.

    The probabilities stay in one numpy buffer made from the Arrow columns (never Python
    floats); the checks run block by block. With `logits=True` the columns hold raw logits
    (`--predictions-logits`): any finite numbers, no [0, 1] or sum-to-1 check.
    """
    table = read_table(uri, options, "predictions file")
    if schema.URI not in table.column_names:
        raise LabeledError(f"predictions file {uri!r} has no '{schema.URI}' column (columns: {table.column_names})")
    uris = table.column(schema.URI).combine_chunks().cast(pa.string())
    empty = pc.or_kleene(pc.is_null(uris), pc.equal(uris, "")).to_numpy(zero_copy_only=False)
    if empty.any():
        raise LabeledError(f"predictions file {uri!r}: row {int(np.argmax(empty))} has no '{schema.URI}'")
    if pc.count_distinct(uris).as_py() != len(uris):
        raise PredictionsError(f"predictions file {uri!r} lists an image more than once")
    probs = _probability_matrix(table, uri)
    del table
    if probs.shape[1] < 2:
        raise PredictionsError(f"predictions file {uri!r} has {probs.shape[1]} class; need at least 2")
    for start in range(0, len(probs), VALIDATE_BLOCK):
        block = probs[start : start + VALIDATE_BLOCK].astype(np.float64)
        if not np.isfinite(block).all():
            raise PredictionsError(f"predictions file {uri!r} has NaN or infinite probabilities")
        if logits:
            continue
        outside = ((block < -PROBABILITY_TOLERANCE) | (block > 1 + PROBABILITY_TOLERANCE)).any(axis=1)
        if outside.any():
            row = start + int(np.argmax(outside))
            raise PredictionsError(f"predictions file {uri!r}: {uris[row].as_py()} has a probability outside [0, 1]")
        sums = block.sum(axis=1)
        bad = np.abs(sums - 1.0) > PROBABILITY_TOLERANCE
        if bad.any():
            row = int(np.argmax(bad))
            raise PredictionsError(
                f"predictions file {uri!r}: the probabilities of {uris[start + row].as_py()} sum to {sums[row]:.6f}, not 1 "
                f"(tolerance {PROBABILITY_TOLERANCE}); {int(bad.sum())} row(s) in this block of {len(block)}. "
                "Give softmax outputs, or logits with --predictions-logits."
            )
    return uris, probs


def check_known(uris: list[str], known: set[str], what: str) -> None:
    """UnknownUriError naming a few of `uris` that are not in the store."""
    unknown = [u for u in uris if u not in known]
    if unknown:
        shown = ", ".join(unknown[:5]) + (f", ... ({len(unknown)} in all)" if len(unknown) > 5 else "")
        raise UnknownUriError(f"{what} names images the feature store does not have: {shown}")
