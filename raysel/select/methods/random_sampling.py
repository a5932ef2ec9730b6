"""`random`: a seeded uniform sample of the unlabeled images (the baseline every paper reports).

Each image's key is a hash of (seed, uri); the `budget` smallest keys win. The
sample depends only on the seed and the set of uris, not on file order or
layout, and the store is streamed one file at a time (uris only, no vectors).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from raysel import schema
from raysel.config import SelectConfig
from raysel.select import draws
from raysel.select.base import Pick, SelectionContext, SelectionMethod, selection_table
from raysel.select.errors import BudgetError, DuplicateUriError, EmptyStoreError, LabeledError
from raysel.select.registry import register_method
from raysel.store import FeatureStore


@register_method("random")
class RandomMethod(SelectionMethod):
    """Uniform sample without replacement; ranks follow the keys, scores are null."""

    def select(self, config: SelectConfig, store: FeatureStore, context: SelectionContext) -> pa.Table:
        store.metadata()  # a clear error when `store` is not a feature store
        labeled = set(context.labeled)
        seen: set[str] = set()
        duplicates: list[str] = []
        best_keys = np.empty(0)
        best_uris = np.empty(0, dtype=object)
        for table in store.iter_tables(columns=[schema.URI]):
            uris = table.column(schema.URI).to_pylist()
            for uri in uris:
                if uri in seen:
                    duplicates.append(uri)
                seen.add(uri)
            candidates = [uri for uri in uris if uri not in labeled]
            keys = draws.uniform_keys(draws.uri_hashes(candidates), config.seed, draws.RANDOM_METHOD_STREAM)[:, 0]
            best_keys = np.concatenate([best_keys, keys])
            best_uris = np.concatenate([best_uris, np.array(candidates, dtype=object)])
            if len(best_keys) > config.budget:
                keep = np.argpartition(best_keys, config.budget - 1)[: config.budget]
                best_keys, best_uris = best_keys[keep], best_uris[keep]
        if not seen:
            raise EmptyStoreError(f"the feature store {store.uri} has no rows")
        if duplicates:
            raise DuplicateUriError(f"{len(duplicates)} uri(s) appear on more than one row of the store, e.g. {duplicates[:3]}")
        unknown = sorted(labeled - seen)
        if unknown:
            raise LabeledError(f"{len(unknown)} labeled uri(s) are not in the feature store, e.g. {unknown[:3]}")
        pool = len(seen) - len(labeled)
        if config.budget > pool:
            raise BudgetError(
                f"--budget {config.budget} exceeds the unlabeled pool: {len(seen)} images in the store, "
                f"{len(labeled)} labeled, {pool} left to pick from"
            )
        order = sorted(range(len(best_keys)), key=lambda i: (best_keys[i], best_uris[i]))
        picks = [Pick(str(best_uris[i]), None) for i in order]
        context.record(picks)
        context.stats.update(images=len(seen), picks=len(picks))
        return selection_table(picks)
