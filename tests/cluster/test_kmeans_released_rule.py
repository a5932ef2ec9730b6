"""The released FreeSel K-Means rule (kmeans_pytorch) and k-means++ seeding, next to the default farthest point.

The reference is kmeans_pytorch's loop (subhadarship/kmeans_pytorch, kmeans_pytorch/__init__.py
lines 87-125, the version FreeSel calls with iter_limit=100) re-typed here, with its two
random draws (the initial indices, the point an empty cluster moves to) handed in, so that
the only randomness is ours and is seeded per image.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from raysel.cluster.kmeans import _reseed_index, _uniforms, batched_kmeans, image_seed, kmeans_single
from raysel.cluster.knowledge_clusters import KEPT_FEATURES, KnowledgeClusterer

pytestmark = pytest.mark.torch

RELEASED = {"init": "random", "stop": "sum-shift-squared", "empty": "reseed"}


def kmeans_pytorch_rule(x: torch.Tensor, k: int, initial: list[int], reseed, tol: float = 1e-4, iter_limit: int = 100):
    """kmeans_pytorch.kmeans(X, k, distance='euclidean', tol, iter_limit), its draws given."""
    state = x[initial].clone()
    iteration = 0
    while True:
        dis = ((x[:, None, :] - state[None, :, :]) ** 2.0).sum(dim=-1)
        choice_cluster = torch.argmin(dis, dim=1)
        state_pre = state.clone()
        for index in range(k):
            selected = x[torch.nonzero(choice_cluster == index).flatten()]
            if selected.shape[0] == 0:
                selected = x[reseed(iteration, index)][None]
            state[index] = selected.mean(dim=0)
        center_shift = torch.sum(torch.sqrt(torch.sum((state - state_pre) ** 2, dim=1)))
        iteration += 1
        if center_shift**2 < tol:
            break
        if iter_limit != 0 and iteration >= iter_limit:
            break
    return state


def blobs(n: int, dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(6, dim, generator=g) * 2
    return centers[torch.randint(0, 6, (n,), generator=g)] + 0.7 * torch.randn(n, dim, generator=g)


def released_reference(points: torch.Tensor, k: int, seed: int, tol: float = 1e-4, iter_limit: int = 100):
    initial = np.argsort(_uniforms(seed, 1, len(points)), kind="stable")[:k].tolist()
    assert len(set(initial)) == k  # distinct points, as np.random.choice(n, k, replace=False)
    return kmeans_pytorch_rule(
        points.float(), k, initial, lambda it, j: _reseed_index(seed, it, j, len(points)), tol, iter_limit
    )


@pytest.mark.parametrize("image", range(6))
def test_released_rule_matches_kmeans_pytorch(image):
    points = blobs(40 + 9 * image, 12, seed=image)
    seed = image_seed(f"s3://pool/img-{image}.jpg")
    expected = released_reference(points, 5, seed)
    torch.testing.assert_close(kmeans_single(points, 5, **RELEASED, seed=seed), expected, atol=1e-5, rtol=1e-5)
    batched = batched_kmeans(points[None], torch.ones(1, len(points), dtype=torch.bool), 5, **RELEASED, seeds=[seed])
    torch.testing.assert_close(batched[0], expected, atol=1e-5, rtol=1e-5)


def test_empty_clusters_are_reseeded_as_kmeans_pytorch_does():
    # Three distinct values among 20 points: any 5 initial points hold duplicates, so clusters go empty.
    a, b, c = torch.eye(3) * 4
    points = torch.stack([a, b, c, a, b] * 4)
    seed = image_seed("s3://pool/dup.jpg")
    expected = released_reference(points, 5, seed, iter_limit=7)
    got = kmeans_single(points, 5, max_iters=7, **RELEASED, seed=seed)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
    batched = batched_kmeans(points[None], torch.ones(1, 20, dtype=torch.bool), 5, max_iters=7, **RELEASED, seeds=[seed])
    torch.testing.assert_close(batched[0], expected, atol=1e-6, rtol=1e-6)


def test_the_stop_rules_differ_as_documented():
    points = blobs(60, 4, seed=3)
    # tol = 0.25: the max rule stops once every shift is <= 0.25, the released one once their sum is < 0.5.
    runs = {}
    for stop in ("max-shift", "sum-shift-squared"):
        steps = [kmeans_single(points, 5, max_iters=m, init="random", stop=stop, seed=11, tol=0.25) for m in range(1, 30)]
        runs[stop] = next(m for m in range(1, 29) if torch.equal(steps[m - 1], steps[m]) and torch.equal(steps[m - 1], steps[-1]))
    assert runs["sum-shift-squared"] >= runs["max-shift"]


@pytest.mark.parametrize("init", ["random", "kmeans++"])
@pytest.mark.parametrize("group_size", [None, 2])
def test_seeded_inits_batched_equal_single_and_depend_on_the_image_only(init, group_size):
    counts = [30, 3, 44, 0, 17, 25]
    g = torch.Generator().manual_seed(5)
    points = torch.full((len(counts), 48, 6), float("nan"))
    mask = torch.zeros(len(counts), 48, dtype=torch.bool)
    for i, count in enumerate(counts):
        points[i, :count] = blobs(count, 6, seed=100 + i) if count else 0
        mask[i, :count] = True
    seeds = [image_seed(f"u{i}") for i in range(len(counts))]
    rule = {"init": init, "stop": "sum-shift-squared", "empty": "reseed"}
    centers = batched_kmeans(points, mask, 5, group_size=group_size, **rule, seeds=seeds)
    assert torch.isfinite(centers).all()
    for i, count in enumerate(counts):
        if count:
            single = kmeans_single(points[i, :count], 5, **rule, seed=seeds[i])
            torch.testing.assert_close(centers[i], single, atol=1e-5, rtol=1e-5)
    permutation = [4, 2, 0, 5, 1, 3]
    again = batched_kmeans(points[permutation], mask[permutation], 5, **rule, seeds=[seeds[p] for p in permutation])
    torch.testing.assert_close(again, centers[permutation], atol=1e-5, rtol=1e-5)
    other = batched_kmeans(points, mask, 5, **rule, seeds=[image_seed(f"u{i}", seed=1) for i in range(len(counts))])
    assert not torch.allclose(other[0], centers[0])  # another --seed, other draws


def test_kmeans_plus_plus_draws_in_proportion_to_squared_distance():
    # One point at distance 10 from nine coincident ones: after a first center in the crowd, the
    # second is the far point with probability 100 / 100 = 1; after the far one, a crowd point.
    points = torch.zeros(10, 2)
    points[9] = torch.tensor([10.0, 0.0])
    for seed in range(20):
        centers = kmeans_single(points, 2, max_iters=1, init="kmeans++", seed=seed)
        assert {tuple(c.tolist()) for c in centers} == {(0.0, 0.0), (10.0, 0.0)}


def test_seeds_are_required_for_random_draws():
    with pytest.raises(ValueError, match="seed"):
        kmeans_single(torch.zeros(6, 2), 2, init="random")
    with pytest.raises(ValueError, match="one seed per image"):
        batched_kmeans(torch.zeros(2, 6, 2), torch.ones(2, 6, dtype=torch.bool), 2, init="kmeans++", seeds=[1])
    with pytest.raises(ValueError, match="init must be one of"):
        kmeans_single(torch.zeros(6, 2), 2, init="best")


def test_knowledge_clusterer_seeds_each_image_from_its_uri():
    counts = [20, 33]
    kept = np.zeros((2, 40, 5), np.float32)
    for i, count in enumerate(counts):
        kept[i, :count] = blobs(count, 5, seed=i).numpy()
    uris = np.array(["s3://b/a.jpg", "s3://b/b.jpg"], dtype=object)
    batch = {"uri": uris, KEPT_FEATURES: kept, "num_kept_patches": np.array(counts, np.int32)}
    out = KnowledgeClusterer(clusters=4, max_iters=100, tol=1e-4, **RELEASED, seed=3)(batch)
    for i, count in enumerate(counts):
        expected = released_reference(torch.from_numpy(kept[i, :count]), 4, image_seed(str(uris[i]), 3))
        np.testing.assert_allclose(out["clusters"][i], expected.numpy(), atol=1e-5, rtol=1e-5)
