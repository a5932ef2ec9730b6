"""`prob` sampling weights each image's distinct knowledge clusters once, as the released FreeSel code does.

Released rule (yichen928/FreeSel): an image that kept n <= K patches has n cluster rows (not K),
and a cluster row is drawn with probability d^2 / sum of d^2 over all cluster rows of the pool.
raysel stores K rows per image (the n patches repeated cyclically), so repeats must not count.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chisquare

import torch

from raysel.cluster.kmeans import kmeans_single
from raysel.select import draws
from raysel.select.kcenter.kernel import KCenterShard

pytestmark = pytest.mark.torch  # the repeats come from raysel's own K-Means

K, D, DRAWS = 5, 6, 4000


def pool_with_one_patch_images():
    """Images 0-5 kept a single patch (K identical rows), images 6-11 five distinct ones; image 12 is labeled."""
    rng = np.random.default_rng(0)
    vectors, kept = [], []
    for image in range(12):
        patches = 1 if image < 6 else K
        points = rng.standard_normal((patches, D)).astype(np.float32) + 3.0
        vectors.append(kmeans_single(torch.from_numpy(points), K).numpy() if patches < K else points)
        kept.append(patches)
    vectors.append(np.zeros((K, D), np.float32) + 3.0)
    uris = [f"img-{i:02d}" for i in range(13)]
    return np.stack(vectors), uris, np.array(kept + [1])  # the labeled image: one patch too


def released_probabilities(vectors, kept, labeled_row):
    """The released code's rule, written out: n rows per image, p(row) = d^2 / sum d^2, summed per image."""
    centers = vectors[labeled_row][: kept[labeled_row]]
    weights = np.zeros(len(vectors) - 1)
    for image in range(len(vectors) - 1):
        rows = vectors[image][: kept[image]].astype(np.float64)
        d = np.sqrt(((rows[:, None, :] - centers[None].astype(np.float64)) ** 2).sum(-1)).min(axis=1)
        weights[image] = (d**2).sum()
    return weights / weights.sum()


def test_repeated_rows_are_found():
    vectors, _, kept = pool_with_one_patch_images()
    distinct = draws.distinct_clusters(vectors)
    assert (distinct.sum(axis=1) == kept).all()
    assert (distinct == (np.arange(K)[None, :] < kept[:, None])).all()


def test_prob_draws_follow_the_released_rule():
    vectors, uris, kept = pool_with_one_patch_images()
    expected = released_probabilities(vectors, kept, labeled_row=12)
    shard = KCenterShard(uris, vectors, "euclidean", seeds=[uris[12]])
    shard.apply([shard.seed_batch()])
    counts = np.zeros(12)
    for seed in range(DRAWS):
        counts[shard.draw(seed, index=1).row] += 1
    _, p_value = chisquare(counts, expected * DRAWS)
    assert p_value > 1e-3, (counts / DRAWS, expected)
    one_patch = counts[:6].sum() / DRAWS
    assert abs(one_patch - expected[:6].sum()) < 0.04  # K times the weight would put it near 5x this share
