from __future__ import annotations

import numpy as np
import pytest
import torch

from raysel.cluster.kmeans import batched_kmeans, image_seed, kmeans_single
from raysel.cluster.knowledge_clusters import KEPT_FEATURES, KnowledgeClusterer

pytestmark = pytest.mark.torch


def blob_points(num_points: int, dim: int, num_blobs: int, seed: int, spread: float = 0.5) -> torch.Tensor:
    """[num_points, dim] points around a few random centers, like the patch features of one image."""
    generator = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_blobs, dim, generator=generator) * 3
    labels = torch.randint(0, num_blobs, (num_points,), generator=generator)
    return centers[labels] + spread * torch.randn(num_points, dim, generator=generator)


def padded_batch(counts: list[int], width: int, dim: int, scatter: bool, seed: int = 0):
    """[B, width, dim] points with each image's points at random rows (scatter) or first, NaN padding."""
    generator = torch.Generator().manual_seed(seed)
    points = torch.full((len(counts), width, dim), float("nan"))
    mask = torch.zeros(len(counts), width, dtype=torch.bool)
    per_image = []
    for image, count in enumerate(counts):
        num_blobs = int(torch.randint(1, 7, (), generator=generator))
        own = blob_points(count, dim, num_blobs, seed=seed * 1000 + image)
        rows = torch.randperm(width, generator=generator)[:count].sort().values if scatter else torch.arange(count)
        points[image, rows] = own
        mask[image, rows] = True
        per_image.append(own)
    return points, mask, per_image


@pytest.mark.parametrize("scatter", [False, True])
@pytest.mark.parametrize("group_size", [None, 3])
def test_batched_equals_single_per_image(scatter, group_size):
    counts = [40, 7, 3, 0, 23, 5, 1, 60, 12, 31]  # fewer than K, exactly K, none at all
    points, mask, per_image = padded_batch(counts, width=64, dim=16, scatter=scatter)
    centers = batched_kmeans(points, mask, k=5, group_size=group_size)
    assert centers.shape == (len(counts), 5, 16) and centers.dtype == torch.float32
    assert torch.isfinite(centers).all()  # NaN padding never leaks in
    for image, own in enumerate(per_image):
        torch.testing.assert_close(centers[image], kmeans_single(own, k=5), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("max_iters,tol", [(1, 1e-4), (2, 0.0), (100, 0.0), (100, 1.0)])
def test_batched_equals_single_for_any_stopping_rule(max_iters, tol):
    counts = [30, 50, 17, 44]
    points, mask, per_image = padded_batch(counts, width=50, dim=8, scatter=False, seed=3)
    centers = batched_kmeans(points, mask, k=4, max_iters=max_iters, tol=tol)
    for image, own in enumerate(per_image):
        torch.testing.assert_close(centers[image], kmeans_single(own, 4, max_iters, tol), atol=1e-5, rtol=1e-5)


def test_fewer_points_than_k_repeat_cyclically():
    own = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    expected = own[[0, 1, 2, 0, 1]]
    assert torch.equal(kmeans_single(own, 5), expected)
    points = torch.zeros(2, 4, 2)
    points[0, :3] = own
    mask = torch.tensor([[True, True, True, False], [False, False, False, False]])
    centers = batched_kmeans(points, mask, 5)
    assert torch.equal(centers[0], expected)
    assert torch.equal(centers[1], torch.zeros(5, 2))  # no points: zero rows
    assert torch.equal(kmeans_single(torch.zeros(0, 2), 3), torch.zeros(3, 2))


def test_deterministic_and_independent_of_the_rest_of_the_batch():
    counts = [25, 40, 9, 33, 50, 18]
    points, mask, _ = padded_batch(counts, width=50, dim=12, scatter=True, seed=5)
    first = batched_kmeans(points, mask, 5)
    assert torch.equal(first, batched_kmeans(points, mask, 5))
    permutation = torch.tensor([3, 0, 5, 1, 4, 2])
    permuted = batched_kmeans(points[permutation], mask[permutation], 5)
    torch.testing.assert_close(permuted, first[permutation], atol=1e-6, rtol=1e-6)
    alone = batched_kmeans(points[2:3], mask[2:3], 5)
    torch.testing.assert_close(alone[0], first[2], atol=1e-6, rtol=1e-6)


def test_well_separated_blobs_are_recovered_exactly():
    generator = torch.Generator().manual_seed(7)
    corners = [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]]
    blob_centers = 50 * torch.tensor(corners)
    labels = torch.arange(60) % 5
    own = blob_centers[labels] + torch.randn(60, 3, generator=generator)
    expected = torch.stack([own[labels == j].mean(0) for j in range(5)])
    for centers in (kmeans_single(own, 5), batched_kmeans(own[None], torch.ones(1, 60, dtype=torch.bool), 5)[0]):
        matched = torch.cdist(centers.reshape(5, 3), expected).argmin(1)
        assert sorted(matched.tolist()) == [0, 1, 2, 3, 4]
        torch.testing.assert_close(centers.reshape(5, 3), expected[matched], atol=1e-5, rtol=1e-5)


def test_empty_clusters_keep_their_previous_center():
    # Four distinct points, three of them repeated: the 5th seed duplicates the 1st,
    # loses every tie to it, and must stay where it is instead of turning into NaN.
    a, b, c, d = torch.eye(4)
    own = torch.stack([a, a, b, a, c, d, b])
    centers = kmeans_single(own, 5)
    assert torch.isfinite(centers).all()
    assert torch.equal(centers[4], a) and torch.equal(centers[0], a)
    assert {tuple(row.tolist()) for row in centers[:4]} == {tuple(p.tolist()) for p in (a, b, c, d)}
    batched = batched_kmeans(own[None], torch.ones(1, 7, dtype=torch.bool), 5)
    torch.testing.assert_close(batched[0], centers)


def test_k_equals_one_is_the_mean():
    own = blob_points(30, 6, 3, seed=1)
    torch.testing.assert_close(kmeans_single(own, 1)[0], own.mean(0), atol=1e-5, rtol=1e-5)
    batched = batched_kmeans(own[None], torch.ones(1, 30, dtype=torch.bool), 1)
    torch.testing.assert_close(batched[0, 0], own.mean(0), atol=1e-5, rtol=1e-5)


def test_float16_points_are_averaged_in_float32():
    points, mask, per_image = padded_batch([20, 35], width=40, dim=8, scatter=False, seed=9)
    points = torch.nan_to_num(points).half()
    centers = batched_kmeans(points, mask, 3)
    assert centers.dtype == torch.float32
    for image, own in enumerate(per_image):
        torch.testing.assert_close(centers[image], kmeans_single(own.half(), 3), atol=1e-5, rtol=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="k must be"):
        kmeans_single(torch.zeros(3, 2), 0)
    with pytest.raises(ValueError, match="mask"):
        batched_kmeans(torch.zeros(2, 3, 4), torch.ones(2, 4, dtype=torch.bool), 2)
    with pytest.raises(ValueError, match="group_size"):
        batched_kmeans(torch.zeros(2, 3, 4), torch.ones(2, 3, dtype=torch.bool), 2, group_size=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    points, mask, _ = padded_batch([30, 12, 4, 55], width=60, dim=32, scatter=True, seed=11)
    cpu = batched_kmeans(points, mask, 5)
    cuda = batched_kmeans(points.cuda(), mask.cuda(), 5)
    torch.testing.assert_close(cuda.cpu(), cpu, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_knowledge_clusterer_on_a_numpy_batch(dtype):
    counts = [12, 3, 40]
    points, mask, _ = padded_batch(counts, width=48, dim=10, scatter=False, seed=13)
    kept_features = torch.nan_to_num(points).numpy().astype(dtype)
    batch = {
        "uri": np.array(["s3://b/a.jpg", "s3://b/b.jpg", "s3://b/c.jpg"], dtype=object),
        "embedding": np.random.default_rng(0).normal(size=(3, 10)).astype(np.float32),
        KEPT_FEATURES: kept_features,
        "num_kept_patches": np.array(counts, dtype=np.int32),
        "pretext_loss": np.array([0.5, 1.5, 2.5], dtype=np.float32),
        "error": np.array(["", "", ""], dtype=object),
    }
    out = KnowledgeClusterer(clusters=4, max_iters=100, tol=1e-4)(batch)
    assert set(out) == {"uri", "embedding", "clusters", "num_kept_patches", "pretext_loss", "error"}
    for column in ("uri", "embedding", "num_kept_patches", "pretext_loss", "error"):
        assert out[column] is batch[column]
    assert out["clusters"].shape == (3, 4, 10) and out["clusters"].dtype == np.float32
    for image, count in enumerate(counts):
        # featurize's default rule: k-means++ seeded by the image's uri (and --seed 0)
        own = torch.from_numpy(kept_features[image, :count])
        expected = kmeans_single(own, 4, init="kmeans++", seed=image_seed(str(batch["uri"][image]), 0))
        np.testing.assert_allclose(out["clusters"][image], expected.numpy(), atol=1e-5, rtol=1e-5)
    farthest = KnowledgeClusterer(clusters=4, max_iters=100, tol=1e-4, init="farthest")(batch)
    np.testing.assert_allclose(
        farthest["clusters"][0], kmeans_single(torch.from_numpy(kept_features[0, :12]), 4).numpy(), atol=1e-5, rtol=1e-5
    )


def test_knowledge_clusterer_rejects_inconsistent_counts():
    batch = {KEPT_FEATURES: np.zeros((2, 4, 3), np.float16), "num_kept_patches": np.array([2, 9], np.int32)}
    with pytest.raises(ValueError, match="num_kept_patches"):
        KnowledgeClusterer(clusters=2, max_iters=10, tol=1e-4)(batch)
