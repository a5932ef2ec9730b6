"""Class probabilities of pool images for the label-aware methods (pt4al, uncertainty).

Either your own model's (`--predictions FILE`), or those of a linear head
(multinomial logistic regression, `probe.py`) trained on the store's frozen
`embedding` of the labeled images (`--labeled FILE` with `uri` and `label`).
The store is streamed shard by shard; only the labeled images' embeddings are
held at once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raysel import schema
from raysel.config import SelectConfig
from raysel.select.errors import DuplicateUriError, EmptyStoreError, InconsistentVectorsError
from raysel.select.supervision.labels import (
    LabelsMissingError,
    PredictionsError,
    SingleClassError,
    check_known,
    read_labels,
    read_predictions,
)
from raysel.store import FeatureStore, FeatureStoreError, vectors_of

if TYPE_CHECKING:  # torch is imported only when a linear head is trained
    from raysel.select.supervision.probe import LinearProbe


def iter_rows(store: FeatureStore, embeddings: bool) -> Iterator[tuple[list[str], np.ndarray | None]]:
    """(uris [n], embedding [n, D] float32 or None) per shard, in store order."""
    columns = [schema.URI, schema.EMBEDDING] if embeddings else [schema.URI]
    for table in store.iter_tables(columns=columns):
        uris = table.column(schema.URI).to_pylist()
        vectors = None
        if embeddings:
            try:
                vectors = vectors_of(table.column(schema.EMBEDDING), 2)
            except FeatureStoreError as exc:
                raise InconsistentVectorsError(f"{store.uri}: column '{schema.EMBEDDING}': {exc}") from exc
        yield uris, vectors


def store_uris(store: FeatureStore) -> list[str]:
    """Every uri of the store, in store order; EmptyStoreError / DuplicateUriError when unusable."""
    store.metadata()  # a clear error when `store` is not a feature store
    uris = [uri for part, _ in iter_rows(store, embeddings=False) for uri in part]
    if not uris:
        raise EmptyStoreError(f"the feature store {store.uri} has no rows")
    if len(set(uris)) != len(uris):
        seen: set[str] = set()
        duplicates = [u for u in uris if u in seen or seen.add(u)]
        raise DuplicateUriError(f"{len(duplicates)} uri(s) appear on more than one row of the store, e.g. {duplicates[:3]}")
    return uris


@dataclass
class Posteriors:
    """Class probabilities for any image of the store: `predict(uris, embeddings)` -> [n, K] float64."""

    classes: list[Any]
    source: str  # "predictions" or "linear head"
    probe: LinearProbe | None = None
    prediction_uris: pa.Array | None = None  # [M] uris of --predictions (Arrow strings)
    prediction_probs: np.ndarray | None = None  # [M, K] their probabilities (float32 or float64 buffer)
    labeled: list[str] = field(default_factory=list)  # uris with labels (empty with --predictions)
    table_holds_logits: bool = False  # --predictions-logits: `prediction_probs` rows are logits, not probabilities

    @property
    def needs_embeddings(self) -> bool:
        return self.probe is not None

    @property
    def has_logits(self) -> bool:
        """Whether `predict_logits` works: the linear head, or a predictions file of logits."""
        return self.probe is not None or self.table_holds_logits

    def predict(self, uris: list[str], embeddings: np.ndarray | None) -> np.ndarray:
        if self.probe is not None:
            return self.probe.predict_proba(embeddings)
        rows = self._table_rows(uris)
        if self.table_holds_logits and len(rows):
            exp = np.exp(rows - rows.max(axis=1, keepdims=True))
            return exp / exp.sum(axis=1, keepdims=True)
        return rows

    def predict_logits(self, uris: list[str], embeddings: np.ndarray | None) -> np.ndarray:
        """[n, K] float64 logits (see `has_logits`)."""
        if self.probe is not None:
            return self.probe.predict_logits(embeddings)
        if not self.table_holds_logits:
            raise PredictionsError("the predictions file holds probabilities, not logits (see --predictions-logits)")
        return self._table_rows(uris)

    def _table_rows(self, uris: list[str]) -> np.ndarray:
        if not uris:
            return np.zeros((0, len(self.classes)))
        found = pc.index_in(pa.array(uris, pa.string()), value_set=self.prediction_uris)
        missing = found.is_null().to_numpy(zero_copy_only=False)
        rows = found.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        if missing.any():
            shown = [uris[i] for i in np.flatnonzero(missing)[:3]]
            raise PredictionsError(
                f"the predictions file has no probabilities for {int(missing.sum())} image(s) the method must rank, "
                f"e.g. {shown}"
            )
        return self.prediction_probs[rows].astype(np.float64)


def _check_label_classes(config: SelectConfig, classes: int, options) -> None:
    """PredictionsError when the labeled file's integer labels name a class the predictions do not have."""
    if not config.labeled:
        return
    try:
        labeled = read_labels(config.labeled, options)
    except LabelsMissingError:
        return  # a uri-only labeled file: nothing to compare
    numbers = [label for label in labeled.labels if isinstance(label, int)]
    if numbers and (max(numbers) >= classes or min(numbers) < 0):
        raise PredictionsError(
            f"the predictions file {config.predictions!r} has {classes} classes (prob_0 .. prob_{classes - 1}) but "
            f"the labeled file {config.labeled!r} uses label {max(numbers) if max(numbers) >= classes else min(numbers)}"
        )


def build_posteriors(config: SelectConfig, store: FeatureStore, known: set[str], method: str) -> Posteriors:
    """From `--predictions`, else a linear head on the labeled images' embeddings.

    Raises:
        LabelsMissingError: neither a predictions file nor a labeled file with labels.
        UnknownUriError: a labels or predictions file naming images not in the store.
        SingleClassError: labels of fewer than two classes.
        PredictionsError: probabilities that cannot be used.
    """
    options = config.storage()
    if config.predictions:
        logits = bool(getattr(config, "predictions_logits", False))
        uris, probs = read_predictions(config.predictions, options, logits=logits)
        unknown = pc.invert(pc.is_in(uris, value_set=pa.array(list(known), pa.string()))).to_numpy(zero_copy_only=False)
        if unknown.any():
            check_known([uris[int(i)].as_py() for i in np.flatnonzero(unknown)], known, f"predictions file {config.predictions!r}")
        _check_label_classes(config, probs.shape[1], options)
        return Posteriors(
            classes=list(range(probs.shape[1])), source="predictions", prediction_uris=uris, prediction_probs=probs,
            table_holds_logits=logits,
        )
    if not config.labeled:
        raise LabelsMissingError(
            f"{method} needs a classifier's probabilities: give --labeled FILE with 'uri' and 'label' columns "
            "(a linear head is trained on the labeled images' embeddings) or --predictions FILE"
        )
    labeled = read_labels(config.labeled, options)
    check_known(labeled.uris, known, f"labeled file {config.labeled!r}")
    classes, targets = labeled.class_indices()
    if len(classes) < 2:
        raise SingleClassError(
            f"the labeled images of {config.labeled!r} hold {len(classes)} class ({classes}); a classifier needs at "
            "least two. Label a few images of another class, or pass --predictions"
        )
    wanted = {uri: index for index, uri in enumerate(labeled.uris)}
    features: np.ndarray | None = None
    wanted_uris = pa.array(labeled.uris, pa.string())
    found = 0
    for uris, vectors in iter_rows(store, embeddings=True):  # one store shard at a time; only labeled rows kept
        position = pc.index_in(pa.array(uris, pa.string()), value_set=wanted_uris)
        rows = np.flatnonzero(position.is_valid().to_numpy(zero_copy_only=False))
        if not len(rows):
            continue
        if features is None:
            features = np.zeros((len(wanted), vectors.shape[1]), dtype=np.float32)
        if vectors.shape[1] != features.shape[1]:
            raise InconsistentVectorsError(f"{store.uri}: embeddings of different dimensions")
        features[position.to_numpy(zero_copy_only=False)[rows].astype(np.int64)] = vectors[rows]
        found += len(rows)
    if features is None or not np.isfinite(features).all():
        raise InconsistentVectorsError(f"{store.uri}: the labeled images' embeddings are missing or not finite")
    from raysel.select.supervision.probe import fit_linear_probe

    probe = fit_linear_probe(features, targets, len(classes))
    return Posteriors(classes=classes, source="linear head", probe=probe, labeled=labeled.uris)
