"""`raysel dedup`: the kernel against a brute-force reference, the distributed run against the
single-process one, planted duplicates found, bad input refused, `select --exclude` for every method."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from planted_duplicates import planted_pool
from raysel.cli import main
from raysel.config import DedupConfig, SelectConfig
from raysel.dedup import DedupError, run_dedup
from raysel.dedup.kernel import cluster_duplicates, normalized
from raysel.dedup.reference import dedup_reference
from raysel.select import run_selection
from raysel.store import write_store


def brute_force(uris: list[str], vectors: np.ndarray, centroid: np.ndarray, threshold: float) -> dict[str, str]:
    """{removed uri: kept uri}: float64 pairwise cosine, groups by search, keep the closest to centroid."""
    unit = vectors.astype(np.float64) / np.linalg.norm(vectors.astype(np.float64), axis=1, keepdims=True)
    similar = unit @ unit.T >= threshold - 1e-6
    to_centroid = unit @ (centroid / np.linalg.norm(centroid))
    seen, removed = set(), {}
    for start in range(len(uris)):
        if start in seen:
            continue
        group, frontier = {start}, [start]
        while frontier:
            node = frontier.pop()
            for other in np.nonzero(similar[node])[0].tolist():
                if other not in group:
                    group.add(other)
                    frontier.append(other)
        seen |= group
        keep = min(group, key=lambda i: (-to_centroid[i], uris[i]))
        removed.update({uris[i]: uris[keep] for i in group if i != keep})
    return removed


@pytest.mark.pure
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kernel_groups_equal_a_brute_force_search(seed):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((40, 16))
    copies = base[rng.integers(40, size=30)] + 0.05 * rng.standard_normal((30, 16))
    chained = base[:1] + 0.25 * rng.standard_normal((3, 16))  # linked only through each other: tests the groups
    vectors = np.concatenate([base, copies, chained]).astype(np.float32)
    uris = sorted(f"img-{i:03d}-{rng.integers(1000)}" for i in range(len(vectors)))
    unit = normalized(vectors, uris)
    centroid = unit.astype(np.float64).mean(axis=0)
    to_centroid = (unit @ (centroid / np.linalg.norm(centroid)).astype(np.float32)).astype(np.float32)
    for threshold in (0.9, 0.97, 1.0):
        sims = unit.astype(np.float64) @ unit.T.astype(np.float64)
        np.fill_diagonal(sims, 0.0)
        assert not (np.abs(sims - threshold) < 1e-5).any()  # no pair on the edge: float32 and float64 agree
        removed, kept = cluster_duplicates(uris, unit, to_centroid, threshold)
        got = {uris[r]: uris[k] for r, k in zip(removed, kept)}
        assert got == brute_force(uris, vectors, centroid, threshold)
    assert len(got) == 0  # threshold 1: no two of these vectors are the same
    twins = np.concatenate([unit[:3], unit[:1]])
    removed, kept = cluster_duplicates(["a", "b", "c", "d"], twins, np.array([0.1, 0.2, 0.3, 0.1], np.float32), 1.0)
    assert (removed.tolist(), kept.tolist()) == ([3], [0])  # identical vectors at threshold 1; tie -> smaller uri kept


@pytest.fixture(scope="module")
def planted_store(tmp_path_factory):
    table, planted = planted_pool(3000, 32, groups=60, copies=3, seed=3)
    store = str(tmp_path_factory.mktemp("dedup") / "store")
    write_store(store, table, rows_per_shard=700)  # 5 files, the last one short
    return store, table, planted


@pytest.mark.ray
@pytest.mark.parametrize("shards", [3])
def test_distributed_equals_reference_and_finds_every_planted_copy(ray_session, planted_store, tmp_path, shards):
    store, table, planted = planted_store
    config = DedupConfig(store=store, out=str(tmp_path / "dups.parquet"), threshold=0.95, shards=shards, clusters=20)
    result = run_dedup(config)
    assert result.equals(dedup_reference(config))
    assert pq.read_table(config.out).equals(result)
    rows = result.to_pylist()
    # each planted group keeps one of its 4 images; a copy K-Means put in another cluster than its
    # group is missed (SemDeDup compares within clusters only): recall near, not at, 1
    assert 0.97 * 60 * 3 <= len(rows) <= 60 * 3
    for row in rows:  # precision: every removed image duplicates one of its own group
        assert planted[row["uri"]] == planted[row["duplicate_of"]] and row["similarity"] >= 0.95 - 1e-6
    kept = {row["duplicate_of"] for row in rows}
    assert not kept & {row["uri"] for row in rows}
    record = json.load(open(config.out + ".config.json"))
    assert record["removed"] == len(rows) and record["groups"] == len(kept) and record["images"] == 3000


@pytest.mark.ray
def test_one_cluster_equals_brute_force_over_the_whole_pool(ray_session, tmp_path):
    table, _ = planted_pool(400, 16, groups=20, copies=2, seed=5, copy_noise=0.1)
    store = str(tmp_path / "store")
    write_store(store, table, rows_per_shard=150)
    config = DedupConfig(store=store, out=str(tmp_path / "dups.parquet"), threshold=0.9, shards=2, clusters=1)
    result = run_dedup(config)
    vectors = np.asarray(table.column("embedding").combine_chunks().flatten()).reshape(400, 16)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    expected = brute_force(table.column("uri").to_pylist(), vectors, unit.mean(axis=0), 0.9)
    assert dict(zip(result.column("uri").to_pylist(), result.column("duplicate_of").to_pylist())) == expected
    assert len(expected) >= 40


@pytest.mark.ray
def test_bad_threshold_and_store_without_embeddings_are_errors(ray_session, tmp_path, capsys):
    store = str(tmp_path / "no-embeddings")
    write_store(store, pa.table({"uri": ["a", "b"], "clusters": [[[1.0, 0.0]], [[0.0, 1.0]]]}))
    out = str(tmp_path / "dups.parquet")
    for threshold in ("0", "-0.1", "1.5"):
        assert main(["dedup", store, "--threshold", threshold, "--out", out]) == 2
        assert capsys.readouterr().err.startswith("raysel: error:")
    with pytest.raises(DedupError, match="no 'embedding' column"):
        run_dedup(DedupConfig(store=store, out=out, threshold=0.9))
    zero = str(tmp_path / "zero")
    write_store(zero, pa.table({"uri": ["a", "b"], "embedding": [[1.0, 0.0], [0.0, 0.0]]}))
    with pytest.raises(DedupError, match="embedding of b is all zeros"):
        run_dedup(DedupConfig(store=zero, out=out, threshold=0.9))
    assert not os.path.exists(out)


@pytest.mark.ray
@pytest.mark.parametrize("method", ["coreset", "random"])
def test_select_exclude_equals_selecting_from_a_store_without_them(ray_session, planted_store, tmp_path, method):
    store, table, _ = planted_store
    duplicates = str(tmp_path / "dups.parquet")
    pq.write_table(dedup_reference(DedupConfig(store=store, out=duplicates, threshold=0.95, clusters=20)), duplicates)
    removed = set(pq.read_table(duplicates).column("uri").to_pylist())
    without = str(tmp_path / "without")
    mask = pa.array([u not in removed for u in table.column("uri").to_pylist()])
    write_store(without, table.filter(mask), rows_per_shard=700)
    common = dict(budget=12, method=method, seed=4)
    excluded = run_selection(SelectConfig(store=store, out=str(tmp_path / "ex.parquet"), exclude=duplicates, **common))
    reference = run_selection(SelectConfig(store=without, out=str(tmp_path / "ref.parquet"), **common))
    assert not removed & set(excluded.column("uri").to_pylist())
    if method != "random":  # random draws by row position, and the view keeps the store's files
        assert excluded.column("uri").to_pylist() == reference.column("uri").to_pylist()
    record = json.load(open(str(tmp_path / "ex.parquet") + ".config.json"))
    assert record["excluded_images"] == len(removed) and record["config"]["exclude"] == duplicates
    assert not os.path.exists(str(tmp_path / "ex.parquet") + ".excluded-store")
    again = run_selection(SelectConfig(store=store, out=str(tmp_path / "ex.parquet"), exclude=duplicates, **common))
    assert again.equals(excluded)


@pytest.mark.ray
def test_cli_dedup_runs_end_to_end_on_the_machines_own_resources(tmp_path):
    table, _ = planted_pool(600, 32, groups=10, copies=2, seed=6)
    store = str(tmp_path / "store")
    write_store(store, table, rows_per_shard=250)
    out = str(tmp_path / "dups.parquet")
    env = {**os.environ, "RAY_ADDRESS": ""}
    done = subprocess.run([sys.executable, "-m", "raysel.cli", "dedup", store, "--threshold", "0.95", "--out", out],
                          capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    expected = dedup_reference(DedupConfig(store=store, out=out, threshold=0.95))
    assert pq.read_table(out).equals(expected) and expected.num_rows >= 20
    assert f"{expected.num_rows} near-duplicates" in done.stdout
