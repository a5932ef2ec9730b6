"""The driver's view of a sharded embedding pool: every uri in sorted order, and the checks.

Rows get a global id: their rank in uri order over the whole pool. Results then
depend on the images and their vectors only, not on how the store's files or the
shards are laid out, and "lowest id" means "smallest uri" wherever ties are broken.
The driver holds the sorted uris (Arrow, ~60 bytes an image), a labeled flag per
image and the per-dimension range; the vectors stay on the shards.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raysel.select.errors import BudgetError, DuplicateUriError, EmptyStoreError, InconsistentVectorsError, InvalidVectorError, SelectionError
from raysel.select.supervision.labels import UnknownUriError


class IdenticalVectorsError(SelectionError):
    """Every embedding of the pool is the same vector: clusters and balls say nothing."""


@dataclass
class PoolIndex:
    """uris [N] sorted (Arrow), labeled [N] bool, dims, low / high [D] per-dimension range."""

    uris: pa.Array
    labeled: np.ndarray
    dims: int
    low: np.ndarray
    high: np.ndarray

    @property
    def count(self) -> int:
        return len(self.uris)

    def uri(self, row: int) -> str:
        return self.uris[int(row)].as_py()


def check_budget(budget: int, images: int, labeled: int) -> None:
    unlabeled = images - labeled
    if budget < 1 or budget > unlabeled:
        raise BudgetError(f"--budget {budget} must be in 1 .. {unlabeled}: {images} images in the pool, {labeled} labeled")


def index_pool(summaries: Sequence[dict], labeled: Sequence[str], budget: int, what: str = "labeled uris", source: str = "the pool") -> tuple[PoolIndex, list[np.ndarray], np.ndarray]:
    """Check the shards' rows and number them.

    Args:
        summaries: `PoolShard.summary()` of every shard, in shard order.
        labeled: already-labeled uris; what: how to name them in errors.

    Returns:
        (the index, each shard's row ids in its store order, the labeled ids sorted).

    Raises:
        EmptyStoreError, InconsistentVectorsError, InvalidVectorError (naming a uri),
        DuplicateUriError, UnknownUriError, BudgetError, IdenticalVectorsError.
    """
    parts = [summary["uris"] for summary in summaries]
    uris = pa.concat_arrays([part.cast(pa.string()) for part in parts]) if parts else pa.array([], pa.string())
    if not len(uris):
        raise EmptyStoreError(f"{source} has no images")
    if uris.null_count:
        raise EmptyStoreError(f"{source} has rows without a uri")
    dims = {summary["dims"] for summary, part in zip(summaries, parts) if len(part)}
    if len(dims) > 1:
        raise InconsistentVectorsError(f"{source}: embeddings of different dimensions {sorted(dims)} across shards")
    bad = sorted(uri for summary in summaries for uri in summary["bad_uris"])
    if bad:
        raise InvalidVectorError(f"the embedding of {bad[0]} has NaN or infinite values")
    order = pc.sort_indices(uris).to_numpy()
    sorted_uris = uris.take(pa.array(order))
    if len(sorted_uris) > 1:
        same = pc.equal(sorted_uris.slice(1), sorted_uris.slice(0, len(sorted_uris) - 1)).to_numpy(zero_copy_only=False)
        if same.any():
            duplicates = sorted({sorted_uris[int(i) + 1].as_py() for i in np.flatnonzero(same)[:3]})
            raise DuplicateUriError(f"{int(same.sum())} uri(s) appear on more than one row, e.g. {duplicates}")
    labeled_array = pa.array(sorted(set(labeled)), pa.string())
    positions = pc.index_in(labeled_array, value_set=sorted_uris).to_numpy(zero_copy_only=False)
    if len(labeled_array) and np.isnan(positions.astype(np.float64)).any():
        unknown = [labeled_array[int(i)].as_py() for i in np.flatnonzero(np.isnan(positions.astype(np.float64)))]
        shown = ", ".join(unknown[:5]) + (f", ... ({len(unknown)} in all)" if len(unknown) > 5 else "")
        raise UnknownUriError(f"{what} names images the feature store does not have: {shown}")
    labeled_ids = np.sort(positions.astype(np.int64)) if len(labeled_array) else np.zeros(0, dtype=np.int64)
    check_budget(budget, len(uris), len(labeled_ids))
    low = np.min([s["low"] for s, part in zip(summaries, parts) if len(part)], axis=0)
    high = np.max([s["high"] for s, part in zip(summaries, parts) if len(part)], axis=0)
    if len(uris) > 1 and np.array_equal(low, high):
        raise IdenticalVectorsError(
            f"all {len(uris)} embeddings of {source} are the same vector: there is nothing to cluster or cover "
            "(was the store featurized with a broken model?)"
        )
    rank = np.empty(len(uris), dtype=np.int64)
    rank[order] = np.arange(len(uris), dtype=np.int64)
    bounds = np.cumsum([0] + [len(part) for part in parts])
    shard_ids = [rank[bounds[i] : bounds[i + 1]] for i in range(len(parts))]
    flags = np.zeros(len(uris), dtype=bool)
    flags[labeled_ids] = True
    return PoolIndex(sorted_uris, flags, dims.pop(), low, high), shard_ids, labeled_ids
