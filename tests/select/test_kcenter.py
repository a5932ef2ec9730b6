"""K-Center-Greedy math without Ray: the reference, the batched passes, prob sampling."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raysel.select import kcenter_greedy_batched, kcenter_greedy_reference
from raysel.select.errors import BudgetError, DuplicateUriError, LabeledError

pytestmark = pytest.mark.pure


def numpy_kcenter_greedy(vectors, uris, budget, distance, labeled=(), first=None):
    """A few-line K-Center-Greedy in the style of lightly / the Core-Set code, kept independent.

    vectors [N, K, D]; seeds = labeled images, else `first`. Distances use
    elementwise numpy (no BLAS), ties go to the smallest uri. Returns picked uris.
    """
    x = np.asarray(vectors, dtype=np.float64)
    if distance == "cosine":
        x = x / np.linalg.norm(x, axis=-1, keepdims=True)
    n, k, _ = x.shape
    points = x.reshape(n * k, -1)
    nearest = np.full(n * k, np.inf)
    index = {uri: i for i, uri in enumerate(uris)}
    new = [index[u] for u in labeled] or [index[first]]
    taken = set(new)
    picks = [] if labeled else [first]
    while len(picks) < budget:
        centers = x[new].reshape(len(new) * k, -1)
        if distance == "cosine":
            d = 1.0 - (points[:, None, :] * centers[None, :, :]).sum(-1)
        else:
            d = np.sqrt(((points[:, None, :] - centers[None, :, :]) ** 2).sum(-1))
        nearest = np.minimum(nearest, np.maximum(d, 0).min(axis=1))
        score = nearest.reshape(n, k).max(axis=1)
        best = min((i for i in range(n) if i not in taken), key=lambda i: (-score[i], uris[i]))
        picks.append(uris[best])
        taken.add(best)
        new = [best]
    return picks


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
@pytest.mark.parametrize("clusters", [1, 4])  # 1: coreset over one embedding; 4: geal knowledge clusters
@pytest.mark.parametrize("with_labeled", [False, True])
def test_reference_and_batched_match_independent_numpy(synth, distance, clusters, with_labeled):
    vectors = synth.vectors(400, clusters, 12, seed=clusters)
    uris = synth.uris(400)
    labeled = uris[::37] if with_labeled else []
    reference = kcenter_greedy_reference(vectors, uris, 60, distance, labeled=labeled, seed=7)
    if not with_labeled:
        assert reference[0].score is None and all(p.score is not None for p in reference[1:])
    expected = numpy_kcenter_greedy(vectors, uris, 60, distance, labeled, first=reference[0].uri)
    assert [p.uri for p in reference] == expected
    assert all(a.score >= b.score for a, b in zip(reference[1:], reference[2:]))  # greedy radii only shrink
    for shards, candidates in ((1, 64), (3, 5)):
        batched, stats = kcenter_greedy_batched(
            vectors, uris, 60, distance, labeled=labeled, seed=7, shards=shards, candidates=candidates
        )
        assert batched == reference
        assert stats.round_trips < 60


def test_ties_go_to_the_smallest_uri(synth):
    distinct = synth.vectors(50, 3, 6, seed=3)
    vectors = np.concatenate([distinct, distinct, distinct])  # every image three times
    uris = synth.uris(150, seed=5)
    picks = kcenter_greedy_reference(vectors, uris, 40, "euclidean", seed=1)
    twins = {uri: [uris[j] for j in range(150) if j % 50 == i % 50] for i, uri in enumerate(uris)}
    for pick in picks[1:]:
        if pick.score > 0:
            assert pick.uri == min(twins[pick.uri]), "a duplicate was picked before its smaller-uri twin"
    assert [p.uri for p in picks] == numpy_kcenter_greedy(vectors, uris, 40, "euclidean", first=picks[0].uri)
    # past the distinct images every score is 0 and picks walk the remaining uris in order
    picks = kcenter_greedy_reference(vectors, uris, 120, "euclidean", seed=1)
    zero = [p.uri for p in picks if p.score == 0]
    assert zero == sorted(zero) and len(zero) >= 120 - 50
    for shards in (1, 4):
        assert kcenter_greedy_batched(vectors, uris, 120, "euclidean", seed=1, shards=shards, candidates=3)[0] == picks


small_inputs = st.fixed_dictionaries(
    {
        "count": st.integers(2, 40),
        "clusters": st.integers(1, 3),
        "dims": st.integers(1, 5),
        "grid": st.booleans(),  # small integer coordinates: many exact ties and duplicates
        "seed": st.integers(0, 2**31),
        "distance": st.sampled_from(["cosine", "euclidean"]),
        "sampling": st.sampled_from(["greedy", "greedy", "prob"]),
        "shards": st.integers(1, 5),
        "candidates": st.integers(1, 9),
        "labeled_fraction": st.sampled_from([0.0, 0.0, 0.2]),
        "budget_fraction": st.floats(0.0, 1.0),
    }
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(small_inputs)
def test_batched_passes_equal_one_pass_per_pick(case):
    rng = np.random.default_rng(case["seed"])
    shape = (case["count"], case["clusters"], case["dims"])
    if case["grid"]:
        vectors = rng.integers(-2, 3, shape).astype(np.float32)
        if case["distance"] == "cosine":
            vectors[np.abs(vectors).sum(-1) == 0] = 1.0  # cosine needs non-zero vectors
    else:
        vectors = rng.standard_normal(shape).astype(np.float32)
    uris = [f"u{value:03d}" for value in rng.permutation(case["count"])]
    labeled = list(rng.choice(uris, int(case["labeled_fraction"] * case["count"]), replace=False))
    budget = 1 + int(case["budget_fraction"] * (case["count"] - len(labeled) - 1))
    reference = kcenter_greedy_reference(
        vectors, uris, budget, case["distance"], case["sampling"], labeled, seed=case["seed"]
    )
    batched, stats = kcenter_greedy_batched(
        vectors,
        uris,
        budget,
        case["distance"],
        case["sampling"],
        labeled,
        seed=case["seed"],
        shards=case["shards"],
        candidates=case["candidates"],
    )
    assert batched == reference
    assert len({p.uri for p in batched}) == budget and not set(labeled) & {p.uri for p in batched}


def test_candidate_passes_need_far_fewer_round_trips(synth):
    vectors = synth.vectors(2000, 3, 16, seed=11, groups=20)
    uris = synth.uris(2000)
    picks, stats = kcenter_greedy_batched(vectors, uris, 300, "cosine", candidates=64)
    assert picks == kcenter_greedy_reference(vectors, uris, 300, "cosine")
    assert stats.picks_per_round_trip >= 10, stats.as_dict()


def test_prob_picks_a_point_twice_as_far_four_times_as_often():
    # one labeled image at 0; "near" at distance 1 and "far" at distance 2: weights 1 : 4
    vectors = np.array([[[0.0, 0.0]], [[1.0, 0.0]], [[0.0, 2.0]]], dtype=np.float32)
    uris = ["labeled", "near", "far"]
    counts = Counter(
        kcenter_greedy_reference(vectors, uris, 1, "euclidean", "prob", labeled=["labeled"], seed=seed)[0].uri
        for seed in range(4000)
    )
    assert counts["near"] + counts["far"] == 4000
    assert counts["far"] / counts["near"] == pytest.approx(4.0, abs=0.5)


def test_prob_is_reproducible_and_independent_of_shards(synth):
    vectors = synth.vectors(300, 3, 8, seed=2)
    uris = synth.uris(300)
    first = kcenter_greedy_reference(vectors, uris, 40, "cosine", "prob", seed=11)
    assert first == kcenter_greedy_reference(vectors, uris, 40, "cosine", "prob", seed=11)
    assert first != kcenter_greedy_reference(vectors, uris, 40, "cosine", "prob", seed=12)
    for shards in (1, 2, 7):
        assert kcenter_greedy_batched(vectors, uris, 40, "cosine", "prob", seed=11, shards=shards)[0] == first
    # the order of rows does not matter either (draws hash uris, not row numbers)
    order = np.random.default_rng(0).permutation(300)
    assert kcenter_greedy_reference(vectors[order], [uris[i] for i in order], 40, "cosine", "prob", seed=11) == first


def test_first_pick_is_a_seeded_uniform_draw(synth):
    vectors = synth.vectors(30, 2, 4)
    uris = synth.uris(30)
    firsts = Counter(kcenter_greedy_reference(vectors, uris, 1, seed=seed)[0].uri for seed in range(3000))
    assert len(firsts) == 30 and max(firsts.values()) < 3 * 100  # about 100 each
    assert kcenter_greedy_reference(vectors, uris, 1, seed=5) == kcenter_greedy_reference(vectors, uris, 1, seed=5)


def test_reference_rejects_bad_inputs(synth):
    vectors = synth.vectors(10, 2, 4)
    uris = synth.uris(10)
    with pytest.raises(BudgetError):
        kcenter_greedy_reference(vectors, uris, 0)
    with pytest.raises(BudgetError):
        kcenter_greedy_reference(vectors, uris, 9, labeled=uris[:2])
    with pytest.raises(LabeledError, match="not among"):
        kcenter_greedy_reference(vectors, uris, 2, labeled=["nope"])
    with pytest.raises(DuplicateUriError):
        kcenter_greedy_reference(vectors, uris[:9] + uris[:1], 2)
