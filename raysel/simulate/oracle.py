"""The simulated oracle: every image's true label, revealed when the image is picked.

Labels files are read with `raysel.select.labels.read_labels` (`uri`, `label`;
Parquet or CSV). A labels file must name exactly the images of its store: a
pool image without a label could be picked and never revealed, and a label of an
unknown image means the two files do not belong together.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from raysel import schema, storage
from raysel.select.supervision.labels import read_labels
from raysel.simulate.errors import OracleLabelsError
from raysel.storage import StorageOptions


def _shown(uris: Sequence[str]) -> str:
    return ", ".join(uris[:3]) + (f", ... ({len(uris)} in all)" if len(uris) > 3 else "")


def read_oracle_labels(labels_uri: str, store_uris: Sequence[str], what: str, options: StorageOptions) -> dict[str, Any]:
    """uri -> label for every image of a store, from its labels file.

    Raises:
        OracleLabelsError: a store image without a label, or a label for an image the store does not have.
        LabeledError / LabelsMissingError: an unreadable file, no `label` column, empty labels.
    """
    labeled = read_labels(labels_uri, options)
    label_of = dict(zip(labeled.uris, labeled.labels))
    missing = [uri for uri in store_uris if uri not in label_of]
    if missing:
        raise OracleLabelsError(
            f"{what} labels {labels_uri!r} have no label for {len(missing)} image(s) of the store, e.g. {_shown(missing)}; "
            "the simulated oracle must know every image's label"
        )
    known = set(store_uris)
    unknown = [uri for uri in labeled.uris if uri not in known]
    if unknown:
        raise OracleLabelsError(
            f"{what} labels {labels_uri!r} name {len(unknown)} image(s) the store does not have, e.g. {_shown(unknown)}"
        )
    return label_of


@dataclass
class Oracle:
    """True labels of the pool and of the test split, with one class numbering for both."""

    pool_labels: dict[str, Any]
    test_labels: dict[str, Any]

    @property
    def classes(self) -> list[Any]:
        """Every label of pool and test, sorted (numbers numerically, strings alphabetically)."""
        values = set(self.pool_labels.values()) | set(self.test_labels.values())
        return sorted(values, key=lambda value: (isinstance(value, str), value))

    def class_indices(self, labels: Sequence[Any]) -> np.ndarray:
        """[n] int64 index of each label in `classes`."""
        position = {label: index for index, label in enumerate(self.classes)}
        return np.array([position[label] for label in labels], dtype=np.int64)

    def reveal(self, uris: Sequence[str]) -> list[Any]:
        """The labels of picked pool images."""
        missing = [uri for uri in uris if uri not in self.pool_labels]
        if missing:
            raise OracleLabelsError(f"the oracle has no label for picked image(s) {_shown(missing)}")
        return [self.pool_labels[uri] for uri in uris]

    def write_labeled(self, uris: Sequence[str], uri: str, options: StorageOptions) -> None:
        """A labels file (`uri`, `label`) of `uris`, as `raysel select --labeled` reads it."""
        labels = self.reveal(uris)
        table = pa.table({schema.URI: pa.array(list(uris), pa.string()), schema.LABEL: labels})
        storage.write_parquet_atomic(table, uri, options)
