"""Part files and chunk commits: a chunk's shard holds exactly the chunk's URIs, once each."""
from __future__ import annotations

import numpy as np
import pytest

from raysel import schema
from raysel.shard_writer import PartWriter, commit_chunk, parts_dir
from raysel.store import FeatureStore

pytestmark = pytest.mark.pure


def batch(uris, chunk_id, errors=None):
    n = len(uris)
    return {
        "uri": np.array(uris, dtype=object),
        "chunk_id": np.full(n, chunk_id, dtype=np.int64),
        "error": np.array(errors or [""] * n, dtype=object),
        "embedding": np.arange(n * 4, dtype=np.float32).reshape(n, 4),
        "clusters": np.ones((n, 2, 4), dtype=np.float32),
        "num_kept_patches": np.full(n, 3, dtype=np.int32),
    }


def test_parts_then_commit_write_the_chunk_once_with_errors_apart(tmp_path):
    store = FeatureStore(str(tmp_path / "store"))
    writer = PartWriter(store)
    out = writer(batch(["/c", "/a"], 0, ["", "broken"]))
    assert out == {"chunk_id": [0], "rows": [2]} or (list(out["chunk_id"]), list(out["rows"])) == ([0], [2])
    writer(batch(["/b"], 0))
    writer(batch(["/b"], 0))  # a retried batch writes its part again
    assert commit_chunk(store, 0, ["/d", "/a", "/b", "/c"]) == ["/d"]  # incomplete: nothing written
    assert store.shard_uris() == []
    writer(batch(["/d"], 0))
    assert commit_chunk(store, 0, ["/d", "/a", "/b", "/c"]) == []
    rows = store.read_shard(store.shard_uris()[0])
    assert rows.column("uri").to_pylist() == ["/b", "/c", "/d"]  # sorted, the duplicate dropped, the failure apart
    assert rows.schema.equals(schema.feature_schema())
    assert store.read_errors().to_pylist() == [{"uri": "/a", "error": "broken"}]
    assert not (tmp_path / "store" / "_parts").exists() or not list((tmp_path / "store" / "_parts").iterdir())


def test_a_commit_refuses_rows_of_another_chunk(tmp_path):
    store = FeatureStore(str(tmp_path / "store"))
    PartWriter(store)(batch(["/a", "/x"], 1))
    with pytest.raises(ValueError, match="outside the chunk"):
        commit_chunk(store, 1, ["/a"])
    assert store.shard_uris() == [] and (tmp_path / "store" / "_parts").exists()
    assert parts_dir(store, 1).endswith("part-000001")
