"""nearest_center: the per-point assignment K-Means makes, for the report's overlays."""
from __future__ import annotations

import pytest
import torch

from raysel.cluster.kmeans import kmeans_single, nearest_center

pytestmark = pytest.mark.torch


def test_matches_brute_force_distances():
    generator = torch.Generator().manual_seed(0)
    points, centers = torch.randn(50, 8, generator=generator), torch.randn(4, 8, generator=generator)
    expected = torch.cdist(points.double(), centers.double()).argmin(1)
    assert torch.equal(nearest_center(points, centers), expected)


def test_ties_go_to_the_lowest_center_index():
    centers = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0]])
    assert nearest_center(torch.tensor([[0.0, 3.0], [2.0, 0.0]]), centers).tolist() == [0, 0]


def test_converged_kmeans_centers_are_the_means_of_their_points():
    generator = torch.Generator().manual_seed(1)
    blobs = torch.cat([torch.randn(20, 3, generator=generator) * 0.1 + offset for offset in (0.0, 5.0, -5.0)])
    points = blobs.to(torch.float16)
    centers = kmeans_single(points, 3, max_iters=100, tol=0.0)
    assignment = nearest_center(points, centers)
    assert sorted(torch.bincount(assignment).tolist()) == [20, 20, 20]
    means = torch.stack([points.float()[assignment == j].mean(0) for j in range(3)])
    torch.testing.assert_close(means, centers, rtol=0, atol=1e-5)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match=r"\[n, D\]"):
        nearest_center(torch.zeros(3, 2), torch.zeros(2, 3))
