"""Seeded random draws that do not depend on how the rows are split over shards.

Every image gets its random numbers from (seed, stream, index, hash of its uri,
slot) through a counter-based hash, never from a generator walking the rows in
order. So a shard computes the numbers of its own rows alone, and the winner of
"smallest key" is the same whether there is one shard or twenty.

- First pick (no labeled images): the image with the smallest uniform key, i.e. a
  uniform draw.
- `prob` sampling (k-means++ style): cluster j of image i gets the key
  E_ij / w_ij with E_ij ~ Exp(1) and w_ij = its squared min-distance; the
  smallest key wins with probability w_ij / sum(w) (the exponential race), and
  the draw for pick t uses index t, so every pick has its own random numbers.
- Only distinct clusters take part in a `prob` draw. An image that kept n < K
  patches has n knowledge clusters, stored as K rows that repeat them cyclically
  (raysel/cluster/kmeans.py); the released FreeSel code keeps n rows, so each
  cluster is one ticket. Weighting all K rows would give a one-patch image K times
  its chance. `distinct_clusters` finds the repeats (exact copies of an earlier
  row of the same image; for raysel's stores: the rows past `num_kept_patches`)
  and `prob_weights` gives them weight 0.
- `random` method: the `budget` images with the smallest uniform keys, i.e. a
  uniform sample without replacement.
"""
from __future__ import annotations

import hashlib

import numpy as np

FIRST_PICK_STREAM = 1
PROB_SAMPLING_STREAM = 2
RANDOM_METHOD_STREAM = 3

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def uri_hashes(uris: list[str]) -> np.ndarray:
    """64-bit hashes of uris. [N] uint64."""
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(uri.encode(), digest_size=8).digest(), "little") for uri in uris),
        dtype=np.uint64,
        count=len(uris),
    )


def _mix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser, elementwise on uint64 (wraps modulo 2^64)."""
    values = values.copy()
    values ^= values >> np.uint64(30)
    values *= np.uint64(0xBF58476D1CE4E5B9)
    values ^= values >> np.uint64(27)
    values *= np.uint64(0x94D049BB133111EB)
    values ^= values >> np.uint64(31)
    return values


def _stream_base(seed: int, stream: int, index: int) -> np.uint64:
    mixed = np.array([(seed * _GOLDEN + stream) & _MASK64], dtype=np.uint64)
    mixed = _mix64(mixed)
    mixed = _mix64(mixed ^ np.uint64(index & _MASK64))
    return mixed[0]


def uniform_keys(hashes: np.ndarray, seed: int, stream: int, index: int = 0, slots: int = 1) -> np.ndarray:
    """Uniform numbers in (0, 1), one per (image, slot).

    Args:
        hashes: [N] uint64 from `uri_hashes`.
        seed, stream, index: which draw (e.g. stream PROB_SAMPLING_STREAM, index = pick number).
        slots: numbers per image (K for one per knowledge cluster).

    Returns:
        [N, slots] float64.
    """
    base = _stream_base(seed, stream, index)
    slot_codes = _mix64((np.arange(slots, dtype=np.uint64) + np.uint64(1)) * np.uint64(_GOLDEN))
    # two rounds: one SplitMix64 round on inputs that differ by a fixed xor (two uris
    # under the same base) leaves measurable correlation; two leave none we can see
    mixed = _mix64(_mix64(hashes ^ base)[:, None] + slot_codes[None, :])
    return ((mixed >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / (1 << 53))


def exponential_race_keys(weights: np.ndarray, hashes: np.ndarray, seed: int, index: int) -> np.ndarray:
    """Keys E / w of the exponential race for pick `index`; w = 0 gives +inf.

    Args:
        weights: [N, K] float64 >= 0. hashes: [N] uint64.

    Returns:
        [N, K] float64.
    """
    exponential = -np.log(uniform_keys(hashes, seed, PROB_SAMPLING_STREAM, index, weights.shape[1]))
    with np.errstate(divide="ignore"):
        return np.where(weights > 0, exponential / np.where(weights > 0, weights, 1.0), np.inf)


def distinct_clusters(vectors: np.ndarray) -> np.ndarray:
    """Which cluster rows are not an exact copy of an earlier row of the same image.

    Args:
        vectors: [N, K, D] the images' knowledge clusters as stored.

    Returns:
        [N, K] bool; row 0 is always True. For a raysel store this is
        `arange(K) < num_kept_patches`: K-Means repeats the n < K patches cyclically.
    """
    count, clusters = vectors.shape[:2]
    distinct = np.ones((count, clusters), dtype=bool)
    for start in range(0, count, 65536):  # row blocks: the comparisons' [rows, D] temporaries stay small
        block = vectors[start:start + 65536]
        for later in range(1, clusters):
            for earlier in range(later):
                distinct[start:start + 65536, later] &= ~np.all(block[:, later] == block[:, earlier], axis=-1)
    return distinct


def prob_weights(min_distance: np.ndarray, eligible: np.ndarray, distinct: np.ndarray | None = None) -> np.ndarray:
    """Weights of a `prob` draw: squared min-distance of every distinct cluster of an eligible image, else 0.

    Args:
        min_distance: [N, K] float64. eligible: [N] bool. distinct: [N, K] bool (None: all distinct).

    Returns:
        [N, K] float64.
    """
    keep = eligible[:, None] if distinct is None else eligible[:, None] & distinct
    return np.where(keep, min_distance**2, 0.0)
