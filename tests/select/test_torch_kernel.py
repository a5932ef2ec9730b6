"""The torch shard kernel (device-held vectors, fixed-shape blocks) picks what the numpy path picks."""
from __future__ import annotations

import numpy as np
import pytest

from raysel.select import kcenter_greedy_batched, kcenter_greedy_reference
from raysel.select.distances import pairwise_distances, prepare_vectors
from raysel.select.kcenter.torch_kernel import TorchMinDistance

pytestmark = pytest.mark.torch


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_torch_kernel_picks_what_the_numpy_path_picks(synth, distance, dtype):
    vectors = synth.vectors(500, 3, 12, seed=4)
    uris = synth.uris(500, seed=4)
    labeled = uris[::61]

    def same(picks, expected):  # same images in the same order; scores to the documented tolerance
        assert [p.uri for p in picks] == [p.uri for p in expected]
        assert np.allclose([p.score or 0 for p in picks], [p.score or 0 for p in expected], rtol=1e-12, atol=1e-13)

    reference = kcenter_greedy_reference(vectors, uris, 50, distance, labeled=labeled, dtype=dtype)
    for shards in (1, 3):
        picks, stats = kcenter_greedy_batched(
            vectors, uris, 50, distance, labeled=labeled, dtype=dtype, shards=shards, candidates=8, kernel="torch", device="cpu"
        )
        same(picks, reference)
        assert all(shard["kernel"] == "torch:cpu" for shard in stats.shards)
    prob = kcenter_greedy_reference(vectors, uris, 20, distance, "prob", seed=3, dtype=dtype)
    same(kcenter_greedy_batched(vectors, uris, 20, distance, "prob", seed=3, dtype=dtype, shards=2, kernel="torch")[0], prob)


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_torch_min_distances_are_deterministic_and_match_numpy_closely(distance):
    rng = np.random.default_rng(1)
    stored, factors = prepare_vectors(rng.standard_normal((9000, 1, 24)).astype(np.float32), [str(i) for i in range(9000)], distance)
    points, point_factors = stored[:, 0], factors[:, 0]
    chosen = rng.choice(9000, 40, replace=False)
    centers, center_factors = points[chosen], point_factors[chosen]
    expected = pairwise_distances(points, point_factors, centers, center_factors, distance).min(axis=1)
    runs = []
    for split in (40, 7):  # all centers at once, or a few at a time: the same bits
        kernel = TorchMinDistance(points, point_factors, distance, device="cpu")
        out = np.empty(9000)
        for start in range(0, 40, split):
            kernel.update(centers[start : start + split], center_factors[start : start + split], out)
        runs.append(out)
    assert np.array_equal(runs[0], runs[1])
    assert np.allclose(runs[0], expected, rtol=0, atol=1e-12)
    duplicate = np.concatenate([points[:5], points[:5]])
    kernel = TorchMinDistance(duplicate, np.concatenate([point_factors[:5]] * 2), distance, device="cpu")
    out = np.empty(10)
    kernel.update(centers, center_factors, out)
    assert np.array_equal(out[:5], out[5:])  # equal vectors, equal bits: ties still go to the smallest uri
