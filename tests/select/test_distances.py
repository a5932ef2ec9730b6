"""The shared distance kernel: same bits for a (point, center) pair whatever the batch around it."""
from __future__ import annotations

import numpy as np
import pytest

from raysel.select import distances
from raysel.select.distances import pairwise_distances, prepare_vectors, update_min_distance
from raysel.select.errors import InvalidVectorError, SelectionConfigError

pytestmark = pytest.mark.pure


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
@pytest.mark.parametrize("dims", [3, 24, 100])
def test_pair_bits_do_not_depend_on_batch_shape_position_or_threads(distance, dims):
    rng = np.random.default_rng(dims)
    raw = rng.standard_normal((700, 1, dims)).astype(np.float32)
    uris = [str(i) for i in range(700)]
    stored, factors = prepare_vectors(raw, uris, distance)
    points, point_factors = stored[:, 0], factors[:, 0]
    centers, center_factors = points[:150], point_factors[:150]
    full = pairwise_distances(points, point_factors, centers, center_factors, distance)
    for trial in range(8):
        rows = rng.choice(700, int(rng.integers(1, 700)), replace=False)
        cols = rng.choice(150, int(rng.integers(1, 150)), replace=False)
        distances.set_threads(1 + trial % 2)
        part = pairwise_distances(points[rows], point_factors[rows], centers[cols], center_factors[cols], distance)
        assert np.array_equal(part, full[np.ix_(rows, cols)])
        running = np.full(len(rows), np.inf)
        for start in range(0, len(cols), 7):  # centers arriving a few at a time
            chunk = cols[start : start + 7]
            update_min_distance(points[rows], point_factors[rows], centers[chunk], center_factors[chunk], distance, running)
        assert np.array_equal(running, full[np.ix_(rows, cols)].min(axis=1))
    distances.set_threads(2)


def test_distances_match_their_definitions():
    rng = np.random.default_rng(0)
    raw = rng.standard_normal((40, 2, 5)).astype(np.float32)
    x = raw.reshape(-1, 5).astype(np.float64)
    stored, factors = prepare_vectors(raw, [str(i) for i in range(40)], "cosine")
    got = pairwise_distances(stored.reshape(-1, 5), factors.reshape(-1), stored.reshape(-1, 5), factors.reshape(-1), "cosine")
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert np.allclose(got, np.maximum(1 - unit @ unit.T, 0), atol=1e-12)
    stored, factors = prepare_vectors(raw, [str(i) for i in range(40)], "euclidean")
    got = pairwise_distances(stored.reshape(-1, 5), factors.reshape(-1), stored.reshape(-1, 5), factors.reshape(-1), "euclidean")
    assert np.allclose(got, np.linalg.norm(x[:, None] - x[None], axis=-1), atol=1e-6)


def test_float16_storage_is_normalised_before_rounding():
    raw = np.full((2, 1, 4), 1e5, dtype=np.float32)  # beyond float16, fine once normalised
    stored, factors = prepare_vectors(raw, ["a", "b"], "cosine", "float16")
    assert stored.dtype == np.float16 and np.allclose(stored, 0.5)
    assert np.allclose(factors, 1.0)
    with pytest.raises(InvalidVectorError, match="'a'.*float16"):
        prepare_vectors(raw, ["a", "b"], "euclidean", "float16")


def test_bad_vectors_name_a_uri():
    raw = np.ones((3, 2, 4), dtype=np.float32)
    raw[1, 1, 2] = np.nan
    with pytest.raises(InvalidVectorError, match="'b'"):
        prepare_vectors(raw, ["a", "b", "c"], "euclidean")
    raw[1, 1, 2] = np.inf
    with pytest.raises(InvalidVectorError, match="'b'"):
        prepare_vectors(raw, ["a", "b", "c"], "cosine")
    raw = np.ones((3, 2, 4), dtype=np.float32)
    raw[2, 0] = 0
    with pytest.raises(InvalidVectorError, match="zero vector in 'c'"):
        prepare_vectors(raw, ["a", "b", "c"], "cosine")
    with pytest.raises(SelectionConfigError, match="dtype"):
        prepare_vectors(raw, ["a", "b", "c"], "cosine", "bfloat16")
