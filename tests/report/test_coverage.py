"""Coverage curve: the chunked kernel against a few-line numpy reference, and against the selector's own scores."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from raysel import schema
from raysel.report import coverage
from raysel.report.inputs import read_selection
from raysel.store import FeatureStore


def reference_radii(pool: np.ndarray, picks: np.ndarray, distance: str) -> np.ndarray:
    """For t = 1..B: max over images of max over their vectors of min over the first t picks' vectors."""
    def d(x, c):
        if distance == "cosine":
            return max(1.0 - float(x @ c) / (np.linalg.norm(x) * np.linalg.norm(c)), 0.0)
        return float(np.linalg.norm(x - c))

    radii = []
    for t in range(1, len(picks) + 1):
        centers = picks[:t].reshape(-1, picks.shape[-1]).astype(np.float64)
        radii.append(max(max(min(d(x, c) for c in centers) for x in image.astype(np.float64)) for image in pool))
    return np.array(radii)


@pytest.mark.pure
@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
@pytest.mark.parametrize("k", [1, 3])
def test_coverage_radii_match_the_reference_across_blocks(distance, k, monkeypatch):
    rng = np.random.default_rng(k)
    pool = rng.standard_normal((23, k, 5)).astype(np.float32)
    picks = pool[rng.permutation(23)[:9]]
    # Blocks smaller than the data, so carrying the running minimum across pick blocks is exercised.
    monkeypatch.setattr(coverage, "ROW_BLOCK", 4)
    monkeypatch.setattr(coverage, "PICK_BLOCK", 2)
    radii = coverage.coverage_radii(pool, picks, distance)
    np.testing.assert_allclose(radii, reference_radii(pool, picks, distance), rtol=1e-10, atol=1e-12)
    assert (np.diff(radii) <= 1e-12).all()  # more picks never cover less


@pytest.mark.pure
def test_coverage_of_a_single_vector_pool_is_zero_once_it_is_picked():
    pool = np.array([[[1.0, 0.0]], [[0.0, 1.0]]], dtype=np.float32)
    radii = coverage.coverage_radii(pool, pool[[1, 0]], "euclidean")
    np.testing.assert_allclose(radii, [np.sqrt(2.0), 0.0])


@pytest.mark.ray
@pytest.mark.torch
def test_greedy_geal_picks_are_the_coverage_radius_before_them(report_run):
    """Greedy K-Center picks the farthest image: its score is the radius after the picks before it."""
    selection = read_selection(report_run.selection)
    store = FeatureStore(report_run.store)
    column, distance = coverage.choose_vectors("auto", None, selection, coverage.store_columns(store))
    assert (column, distance) == (schema.CLUSTERS, "cosine")
    radii, pool_size = coverage.store_coverage(store, selection, column, distance)
    assert pool_size == len(report_run.pool)
    scores = pq.read_table(report_run.selection).sort_by("rank").column("score").to_numpy(zero_copy_only=False)
    np.testing.assert_allclose(radii[:-1], scores[1:].astype(np.float64), rtol=1e-9)


@pytest.mark.ray
@pytest.mark.torch
def test_coverage_with_embeddings_and_euclidean_when_asked(report_run):
    selection = read_selection(report_run.selection)
    store = FeatureStore(report_run.store)
    section = coverage.coverage_section(store, selection, "embedding", "euclidean")
    assert "distance: euclidean" in section.body and "Vectors: embeddings" in section.body
    radii, _ = coverage.store_coverage(store, selection, "embedding", "euclidean")
    assert radii[-1] >= 0 and (np.diff(radii) <= 1e-12).all()


@pytest.mark.ray
@pytest.mark.torch
def test_coverage_on_a_sample_is_a_seeded_lower_bound_of_the_full_pool(report_run):
    selection = read_selection(report_run.selection)
    store = FeatureStore(report_run.store)
    full, pool_size = coverage.store_coverage(store, selection, schema.CLUSTERS, "cosine")
    half, measured = coverage.store_coverage(store, selection, schema.CLUSTERS, "cosine", sample=pool_size // 2)
    assert 0 < measured < pool_size
    assert (half <= full + 1e-12).all()  # a max over fewer images
    again, _ = coverage.store_coverage(store, selection, schema.CLUSTERS, "cosine", sample=pool_size // 2)
    np.testing.assert_array_equal(half, again)  # the same sample every time
    everything, _ = coverage.store_coverage(store, selection, schema.CLUSTERS, "cosine", sample=10 * pool_size)
    np.testing.assert_array_equal(everything, full)
    section = coverage.coverage_section(store, selection, "auto", None, sample=pool_size // 2)
    assert f"a sample of {measured} of {pool_size} images" in section.body
