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
    table: dict[str, np.ndarray] = field(default_factory=dict)  # uri -> [K] row of --predictions
    labeled: list[str] = field(default_factory=list)  # uris with labels (empty with --predictions)
    table_holds_logits: bool = False  # --predictions-logits: `table` rows are logits, not probabilities

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
        missing = [u for u in uris if u not in self.table]
        if missing:
            raise PredictionsError(
                f"the predictions file has no probabilities for {len(missing)} image(s) the method must rank, "
                f"e.g. {missing[:3]}"
            )
        if not uris:
            return np.zeros((0, len(self.classes)))
        return np.stack([self.table[u] for u in uris])


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
        check_known(uris, known, f"predictions file {config.predictions!r}")
        return Posteriors(
            classes=list(range(probs.shape[1])), source="predictions", table=dict(zip(uris, probs)),
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
    for uris, vectors in iter_rows(store, embeddings=True):
        for row, uri in enumerate(uris):
            if uri in wanted:
                if features is None:
                    features = np.zeros((len(wanted), vectors.shape[1]), dtype=np.float32)
                if vectors.shape[1] != features.shape[1]:
                    raise InconsistentVectorsError(f"{store.uri}: embeddings of different dimensions")
                features[wanted[uri]] = vectors[row]
    if features is None or not np.isfinite(features).all():
        raise InconsistentVectorsError(f"{store.uri}: the labeled images' embeddings are missing or not finite")
    from raysel.select.supervision.probe import fit_linear_probe

    probe = fit_linear_probe(features, targets, len(classes))
    return Posteriors(classes=classes, source="linear head", probe=probe, labeled=labeled.uris)
