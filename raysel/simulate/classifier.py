"""The downstream model of the simulation: a linear probe on the frozen `embedding`s.

The probe is `raysel.select.probe.fit_linear_probe` (multinomial logistic
regression, L-BFGS from a zero init, deterministic), the same linear head the
label-aware methods train; it is fitted on all images labeled so far and scored
on the test split.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raysel.select.errors import DuplicateUriError, InconsistentVectorsError
from raysel.select.supervision.posteriors import iter_rows
from raysel.select.supervision.probe import fit_linear_probe
from raysel.simulate.errors import EmptyTestSplitError
from raysel.store import FeatureStore


def read_embeddings(store: FeatureStore, what: str) -> tuple[list[str], np.ndarray]:
    """(uris [N], embeddings [N, D] float32) of a whole store, in store order.

    Raises:
        EmptyTestSplitError: a store without rows (named by `what`: "pool" or "test split").
        DuplicateUriError / InconsistentVectorsError: a store the probe cannot use.
    """
    store.metadata()  # a clear error when `store` is not a feature store
    uris: list[str] = []
    parts: list[np.ndarray] = []
    for part_uris, vectors in iter_rows(store, embeddings=True):
        if len(part_uris):
            uris.extend(part_uris)
            parts.append(vectors)
    if not uris:
        raise EmptyTestSplitError(f"the {what} feature store {store.uri} has no images")
    if len({p.shape[1] for p in parts}) > 1:
        raise InconsistentVectorsError(f"the {what} feature store {store.uri} holds embeddings of different dimensions")
    if len(set(uris)) != len(uris):
        raise DuplicateUriError(f"the {what} feature store {store.uri} lists an image on more than one row")
    embeddings = np.concatenate(parts)
    if not np.isfinite(embeddings).all():
        raise InconsistentVectorsError(f"the {what} feature store {store.uri} has NaN or infinite embeddings")
    return uris, embeddings


def scan_embeddings(store: FeatureStore, what: str) -> tuple[list[str], int]:
    """(uris [N] in store order, D) of a store, with `read_embeddings`' checks, one shard in memory at a time."""
    store.metadata()
    uris: list[str] = []
    dims: set[int] = set()
    for part_uris, vectors in iter_rows(store, embeddings=True):
        if len(part_uris):
            uris.extend(part_uris)
            dims.add(vectors.shape[1])
            if not np.isfinite(vectors).all():
                raise InconsistentVectorsError(f"the {what} feature store {store.uri} has NaN or infinite embeddings")
    if not uris:
        raise EmptyTestSplitError(f"the {what} feature store {store.uri} has no images")
    if len(dims) > 1:
        raise InconsistentVectorsError(f"the {what} feature store {store.uri} holds embeddings of different dimensions")
    if len(set(uris)) != len(uris):
        raise DuplicateUriError(f"the {what} feature store {store.uri} lists an image on more than one row")
    return uris, dims.pop()


def embeddings_of(store: FeatureStore, uris: list[str]) -> np.ndarray:
    """[len(uris), D] float32 embeddings of the given images, in that order, streamed shard by shard."""
    wanted = pa.array(uris, pa.string())
    out: np.ndarray | None = None
    for part_uris, vectors in iter_rows(store, embeddings=True):
        position = pc.index_in(wanted, value_set=pa.array(part_uris, pa.string()))
        hit = position.is_valid().to_numpy(zero_copy_only=False)
        if not hit.any():
            continue
        if out is None:
            out = np.zeros((len(uris), vectors.shape[1]), dtype=np.float32)
        out[hit] = vectors[position.to_numpy(zero_copy_only=False)[hit].astype(np.int64)]
    if out is None:
        raise EmptyTestSplitError(f"the feature store {store.uri} holds none of the {len(uris)} labeled images")
    return out


def probe_accuracy(
    train_features: np.ndarray, train_targets: np.ndarray, test_features: np.ndarray, test_targets: np.ndarray, num_classes: int
) -> float:
    """Test accuracy in [0, 1] of a linear probe fitted on the labeled images.

    Args:
        train_features: [n, D] embeddings of the labeled images; train_targets: [n] class indices.
        test_features: [m, D]; test_targets: [m] class indices in [0, num_classes).
    """
    probe = fit_linear_probe(train_features, train_targets, num_classes)
    predicted = probe.predict_proba(test_features).argmax(axis=1)
    return float((predicted == test_targets).mean())


@contextlib.contextmanager
def single_threaded_torch() -> Iterator[None]:
    """Run the tiny probe fits (here and in the label-aware methods) on one torch thread, then restore.

    A fit is hundreds of small L-BFGS steps; intra-op threads only add synchronisation. On 2 busy
    cores a 160 x 64, 10-class fit took 6.2 s with 2 threads and 0.14 s with 1.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
