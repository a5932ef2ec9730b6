"""Selection: pick the images to label from a feature store.

    from raysel.select import run_selection, select_reference, list_methods
    from raysel.config import SelectConfig

    table = run_selection(SelectConfig(store="store/", out="selection.parquet", budget=1000))

Methods (`list_methods()`): geal (default; K-Center-Greedy over knowledge
clusters), coreset (over one embedding per image), random, pt4al, uncertainty,
typiclust and probcover (low budgets, on the embedding). See docs/selection.md.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa

from raysel.select import methods  # noqa: F401  (importing the method modules registers them)
from raysel.select.base import Pick, SelectionContext, SelectionMethod, selection_table
from raysel.select.errors import (
    BudgetError,
    CheckpointError,
    DuplicateUriError,
    EmptyStoreError,
    InconsistentVectorsError,
    InvalidVectorError,
    LabeledError,
    SelectionConfigError,
    SelectionError,
    UnknownMethodError,
)
from raysel.select.kcenter.kernel import kcenter_greedy_reference
from raysel.select.kcenter.driver import kcenter_greedy_batched
from raysel.select.methods.probcover import probcover_reference
from raysel.select.registry import create_method, get_method, list_methods, register_method
from raysel.select.runner import resolve_config, run_selection
from raysel.select.methods.typiclust import typiclust_reference


def select_reference(
    vectors: np.ndarray,
    uris: Sequence[str],
    budget: int,
    distance: str = "cosine",
    sampling: str = "greedy",
    labeled: Iterable[str] = (),
    seed: int = 0,
    dtype: str = "float32",
) -> pa.Table:
    """Single-process K-Center-Greedy on in-memory vectors, one pass per pick (the oracle).

    Args:
        vectors: [N, K, D] knowledge clusters or [N, D] embeddings, float.
        uris: [N] unique uris. Other arguments as in `SelectConfig`.

    Returns:
        The selection table (uri, rank, score) `run_selection` would return for the same rows.
    """
    picks = kcenter_greedy_reference(vectors, uris, budget, distance, sampling, labeled, seed, dtype)
    return selection_table(picks)


__all__ = [
    "BudgetError",
    "CheckpointError",
    "DuplicateUriError",
    "EmptyStoreError",
    "InconsistentVectorsError",
    "InvalidVectorError",
    "LabeledError",
    "Pick",
    "SelectionConfigError",
    "SelectionContext",
    "SelectionError",
    "SelectionMethod",
    "UnknownMethodError",
    "create_method",
    "get_method",
    "kcenter_greedy_batched",
    "kcenter_greedy_reference",
    "list_methods",
    "probcover_reference",
    "register_method",
    "resolve_config",
    "run_selection",
    "select_reference",
    "selection_table",
    "typiclust_reference",
]
