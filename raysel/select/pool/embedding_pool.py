"""The whole pool's global embeddings in driver memory, for methods that cluster or build graphs on them.

Rows are sorted by uri, so results depend on the images and their vectors only,
not on how the store's files are laid out, and "lowest row index" means
"smallest uri" wherever ties are broken. Memory: N x D float32.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from raysel.config import SelectConfig
from raysel.select.errors import (
    BudgetError,
    DuplicateUriError,
    EmptyStoreError,
    InconsistentVectorsError,
    InvalidVectorError,
)
from raysel.select.supervision.labels import check_known
from raysel.select.supervision.posteriors import iter_rows
from raysel.store import FeatureStore


@dataclass
class EmbeddingPool:
    """uris [N] sorted, vectors [N, D] float32 in that order, labeled [N] bool."""

    uris: list[str]
    vectors: np.ndarray
    labeled: np.ndarray


def make_pool(vectors: np.ndarray, uris: Sequence[str], labeled: Sequence[str], budget: int, what: str = "labeled uris") -> EmbeddingPool:
    """Sort rows by uri and check them: unique uris, finite vectors, known labeled uris, budget <= unlabeled."""
    uris = [str(uri) for uri in uris]
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(uris):
        raise ValueError(f"vectors must be [N, D] with N = {len(uris)} uris, got shape {vectors.shape}")
    if not uris:
        raise EmptyStoreError("the pool has no images")
    if len(set(uris)) != len(uris):
        seen: set[str] = set()
        duplicates = [u for u in uris if u in seen or seen.add(u)]
        raise DuplicateUriError(f"{len(duplicates)} uri(s) appear on more than one row, e.g. {duplicates[:3]}")
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        raise InvalidVectorError(f"the embedding of {uris[int(np.argmax(bad))]} has NaN or infinite values")
    labeled_set = set(labeled)
    check_known(sorted(labeled_set), set(uris), what)
    unlabeled = len(uris) - len(labeled_set)
    if budget < 1 or budget > unlabeled:
        raise BudgetError(
            f"--budget {budget} must be in 1 .. {unlabeled}: {len(uris)} images in the pool, {len(labeled_set)} labeled"
        )
    order = sorted(range(len(uris)), key=uris.__getitem__)
    sorted_uris = [uris[i] for i in order]
    return EmbeddingPool(
        uris=sorted_uris,
        vectors=np.ascontiguousarray(vectors[order]),
        labeled=np.array([uri in labeled_set for uri in sorted_uris], dtype=bool),
    )


def read_pool(store: FeatureStore, labeled: Sequence[str], config: SelectConfig) -> EmbeddingPool:
    """Every row's `embedding` from the store, checked as in `make_pool`."""
    store.metadata()  # a clear error when `store` is not a feature store
    uris: list[str] = []
    parts: list[np.ndarray] = []
    for part_uris, part_vectors in iter_rows(store, embeddings=True):
        uris.extend(part_uris)
        parts.append(part_vectors)
    if not uris:
        raise EmptyStoreError(f"the feature store {store.uri} has no rows")
    dims = {part.shape[1] for part in parts if len(part)}
    if len(dims) > 1:
        raise InconsistentVectorsError(f"{store.uri}: embeddings of different dimensions {sorted(dims)} across shards")
    vectors = np.concatenate([part for part in parts if len(part)])
    return make_pool(vectors, uris, labeled, config.budget, f"labeled file {config.labeled!r}")
