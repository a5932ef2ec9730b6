"""`--random-start N` (the released FreeSel `--random_num`): N seeded uniform picks that count toward the budget."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raysel.config import SelectConfig
from raysel.select import run_selection, select_reference
from raysel.select.errors import SelectionConfigError


@pytest.mark.parametrize("method,sampling", [("geal", "greedy"), ("coreset", "prob")])
def test_random_start_counts_toward_the_budget(ray_session, tmp_path, make_store, synth, method, sampling):
    vectors = synth.vectors(120, 3, 8, seed=2)
    uris = synth.uris(120, seed=2)
    embedding = vectors.mean(axis=1)
    store = make_store(synth.table(uris, vectors, embedding), rows_per_shard=50)
    labeled = uris[:4]
    labeled_file = str(tmp_path / "labeled.parquet")
    pq.write_table(pa.table({"uri": labeled}), labeled_file)
    common = dict(store=store, method=method, sampling=sampling, seed=5, labeled=labeled_file, shards=2)

    picks = run_selection(SelectConfig(out=str(tmp_path / "rs.parquet"), budget=12, random_start=4, **common))
    assert picks.num_rows == 12  # the random picks count toward --budget
    first = picks.column("uri").to_pylist()[:4]
    # The first four are the `random` method's sample with the same seed, scores null; never a labeled image.
    random_picks = run_selection(SelectConfig(out=str(tmp_path / "r.parquet"), **{**common, "method": "random"}, budget=4))
    assert first == random_picks.column("uri").to_pylist()
    assert picks.column("score").to_pylist()[:4] == [None] * 4 and not set(first) & set(labeled)
    # The rest continue K-Center from labeled + random picks, as the reference does with them in the pool.
    source = vectors if method == "geal" else embedding
    distance = "cosine" if method == "geal" else "euclidean"
    reference = select_reference(source, uris, 8, distance, sampling=sampling, labeled=labeled + first, seed=5)
    if sampling == "greedy":
        assert picks.column("uri").to_pylist()[4:] == reference.column("uri").to_pylist()
    assert len(set(picks.column("uri").to_pylist())) == 12

    with pytest.raises(SelectionConfigError, match="--random-start"):
        run_selection(SelectConfig(out=str(tmp_path / "bad.parquet"), budget=3, random_start=4, **common))
