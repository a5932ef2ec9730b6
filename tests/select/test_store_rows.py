"""Reading shard rows from the store: plans, list and fixed-size lists, mixed K or dims."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from raysel.select.errors import EmptyStoreError, InconsistentVectorsError
from raysel.select.pool.store_rows import load_rows, plan_shards
from raysel.store import FeatureStore, FeatureStoreError

pytestmark = pytest.mark.pure


def test_plan_cuts_files_into_equal_contiguous_ranges(make_store, synth):
    uris = synth.uris(103)
    store = FeatureStore(make_store(synth.table(uris, synth.vectors(103, 2, 3)), rows_per_shard=40))
    for shards in (1, 2, 3, 7, 150):
        plan = plan_shards(store, shards)
        sizes = [sum(s.stop - s.start for s in part) for part in plan]
        assert len(plan) == shards and sum(sizes) == 103 and max(sizes) - min(sizes) <= 1
        loaded = [load_rows(store, part, "clusters")[0] for part in plan]
        assert [uri for part in loaded for uri in part] == uris


@pytest.mark.parametrize("fixed_size", [False, True])
def test_clusters_and_embeddings_as_vectors(make_store, synth, fixed_size):
    vectors = synth.vectors(20, 3, 5)
    embedding = np.arange(20 * 5, dtype=np.float32).reshape(20, 5)
    store = FeatureStore(make_store(synth.table(synth.uris(20), vectors, embedding, fixed_size=fixed_size)))
    (part,) = plan_shards(store, 1)
    assert np.array_equal(load_rows(store, part, "clusters")[1], vectors)
    assert np.array_equal(load_rows(store, part, "embedding")[1], embedding[:, None, :])


def test_mixed_k_or_dims_within_a_shard(make_store, synth):
    uris = synth.uris(20)
    vectors = synth.vectors(20, 4, 6)
    mixed_k = pa.concat_tables([synth.table(uris[:10], vectors[:10]), synth.table(uris[10:], vectors[10:, :2])])
    store = FeatureStore(make_store(mixed_k, name="k", rows_per_shard=10))
    with pytest.raises(InconsistentVectorsError, match="K=2, D=6 but earlier rows.*K=4, D=6"):
        load_rows(store, plan_shards(store, 1)[0], "clusters")
    ragged = pa.table({"uri": ["a", "b"], "clusters": pa.array([[[1.0, 2.0]], [[1.0, 2.0, 3.0]]], pa.list_(pa.list_(pa.float32())))})
    store = FeatureStore(make_store(ragged, name="ragged"))
    with pytest.raises(InconsistentVectorsError, match="mixed K or dimensions"):
        load_rows(store, plan_shards(store, 1)[0], "clusters")


def test_empty_and_missing_stores(make_store, synth, tmp_path):
    empty = FeatureStore(make_store(synth.table([], np.zeros((0, 2, 3), np.float32)), name="empty"))
    with pytest.raises(EmptyStoreError, match="no rows"):
        plan_shards(empty, 2)
    with pytest.raises(FeatureStoreError, match="not a feature store"):
        plan_shards(FeatureStore(str(tmp_path / "missing")), 1)
