"""Euclidean K-Means for knowledge clusters: one image at a time, or a whole batch at once.

GEAL runs K-Means on the kept patch features of every image (K = 5, at most 100
iterations, tolerance 1e-4). The released code loops over images in Python;
`batched_kmeans` runs Lloyd's algorithm on every image of a batch together
(padded to one patch count, with a mask) and stops each image on its own, so it
returns what `kmeans_single` returns image by image.

Both follow one definition, with three choices (`init`, `stop`, `empty`; the
defaults first, then the released FreeSel code's, which calls kmeans_pytorch):

- init `farthest`: the image's first point, then farthest-point (maximin)
  seeding: each next center is the point farthest from the centers chosen so
  far (ties: the lowest point index). No randomness.
  init `random` (kmeans_pytorch's `initialize`: `np.random.choice(n, K,
  replace=False)`): K distinct points drawn uniformly.
  init `kmeans++`: the first center uniform, each next one drawn with
  probability proportional to its squared distance to the nearest center so far.
- step: assign each point to its nearest center (ties: the lowest center
  index), then move each center to the mean of its points.
  empty `keep`: a center left with no points keeps its previous position;
  `reseed` (kmeans_pytorch): it moves to a uniformly drawn point of the image.
- stop `max-shift`: after the first step in which no center moved more than
  `tol` (Euclidean distance); `sum-shift-squared` (kmeans_pytorch): after the
  first step in which (sum over centers of their shifts)^2 < tol. Either way at
  most `max_iters` steps.
- random numbers come from the image's own `seed` (the featurizer derives it
  from the image's uri and `--seed`, `image_seed`), never from a global
  generator: a result depends on the image's own points and seed only, never on
  which other images share the batch, and reruns are identical.
- fewer than K points (n < K): each point is its own cluster, and the K rows
  repeat the points cyclically (p0, p1, ..., p[n-1], p0, ...). Duplicate centers
  change nothing for K-Center-Greedy, which takes a min over the pool's clusters
  and a max over an image's clusters.
- no points at all: K zero rows.

Points are converted to float32 (float16 features are averaged in float32).
Everything is plain torch and runs on whatever device the points live on.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

INITS = ("farthest", "random", "kmeans++")
STOPS = ("max-shift", "sum-shift-squared")
EMPTIES = ("keep", "reseed")

# Streams of an image's random numbers: one per use, so the init draws never shift the re-seed draws.
_INIT_STREAM, _PLUS_PLUS_STREAM, _EMPTY_STREAM = 1, 2, 3


def image_seed(uri: str, seed: int = 0) -> int:
    """The 64-bit seed of one image's K-Means draws, from its uri and the run's `--seed`."""
    return int.from_bytes(hashlib.blake2b(f"{seed}\0{uri}".encode(), digest_size=8).digest(), "little")


def needs_seeds(init: str, empty: str) -> bool:
    """Whether these options draw random numbers (and so need per-image seeds)."""
    return init != "farthest" or empty == "reseed"


def _uniforms(seed: int, stream: int, count: int) -> np.ndarray:
    return np.random.default_rng([int(seed), stream]).random(count)


def _reseed_index(seed: int, iteration: int, cluster: int, count: int) -> int:
    """The point an empty cluster moves to in step `iteration` (the kmeans_pytorch rule: a uniform point)."""
    return int(np.random.default_rng([int(seed), _EMPTY_STREAM, iteration, cluster]).integers(count))


def kmeans_single(
    points: torch.Tensor,
    k: int,
    max_iters: int = 100,
    tol: float = 1e-4,
    init: str = "farthest",
    stop: str = "max-shift",
    empty: str = "keep",
    seed: int | None = None,
) -> torch.Tensor:
    """K-Means on one image's points, written plainly: the reference for `batched_kmeans`.

    Args:
        points: [n, D] the image's kept patch features (any float dtype).
        k: number of clusters K.
        max_iters: most Lloyd steps.
        tol: the stop rule's threshold.
        init, stop, empty: see the module docstring.
        seed: the image's seed (`image_seed`); needed by init random / kmeans++ and empty reseed.

    Returns:
        [K, D] float32 centers.
    """
    _check_kmeans_args(k, max_iters, tol)
    _check_rule(init, stop, empty, None if seed is None else [seed], 1)
    if points.ndim != 2:
        raise ValueError(f"points must be [n, D], got shape {tuple(points.shape)}")
    points = points.float()
    n, dim = points.shape
    if n == 0:
        return points.new_zeros(k, dim)
    if n < k:
        return points[torch.arange(k, device=points.device) % n].clone()

    point_sq_norms = _squared_norms(points)

    def squared_distances(centers: torch.Tensor) -> torch.Tensor:  # [K, n]
        return (centers.square().sum(1)[:, None] - 2 * centers @ points.T + point_sq_norms[None, :]).clamp_min(0)

    if init == "random":
        chosen = np.argsort(_uniforms(seed, _INIT_STREAM, n), kind="stable")[:k].tolist()
    else:
        chosen = [0 if init == "farthest" else int(np.argmin(_uniforms(seed, _INIT_STREAM, n)))]
        draws = _uniforms(seed, _PLUS_PLUS_STREAM, k) if init == "kmeans++" else None
        min_distance = squared_distances(points[chosen[0] : chosen[0] + 1])[0]
        for j in range(1, k):
            if draws is None:
                nxt = int(min_distance.argmax())
            else:
                cumulative = np.cumsum(min_distance.double().cpu().numpy())
                nxt = chosen[0] if cumulative[-1] <= 0 else min(int(np.searchsorted(cumulative, draws[j] * cumulative[-1], side="right")), n - 1)
            chosen.append(nxt)
            min_distance = torch.minimum(min_distance, squared_distances(points[nxt : nxt + 1])[0])
    centers = points[chosen]

    for iteration in range(max_iters):
        assignment = squared_distances(centers).argmin(0)
        membership = F.one_hot(assignment, k).T.to(points.dtype)  # [K, n]
        sizes = membership.sum(1)
        means = (membership @ points) / sizes.clamp_min(1)[:, None]
        new_centers = torch.where(sizes[:, None] > 0, means, centers)
        if empty == "reseed":
            for cluster in torch.nonzero(sizes == 0).flatten().tolist():
                new_centers[cluster] = points[_reseed_index(seed, iteration, cluster, n)]
        shifts = (new_centers - centers).norm(dim=1)
        centers = new_centers
        if _converged(shifts[None, :], stop, tol)[0]:
            break
    return centers


def _converged(shifts: torch.Tensor, stop: str, tol: float) -> torch.Tensor:
    """[b] bool from [b, K] center shifts of one step: the stop rule."""
    if stop == "max-shift":
        return shifts.amax(1) <= tol
    return shifts.sum(1).square() < tol  # kmeans_pytorch: center_shift ** 2 < tol


def batched_kmeans(
    points: torch.Tensor,
    mask: torch.Tensor,
    k: int,
    max_iters: int = 100,
    tol: float = 1e-4,
    group_size: int | None = None,
    init: str = "farthest",
    stop: str = "max-shift",
    empty: str = "keep",
    seeds: Sequence[int] | None = None,
) -> torch.Tensor:
    """K-Means on every image of a batch at once; image by image equal to `kmeans_single`.

    Args:
        points: [B, P, D] patch features of B images (any float dtype); rows where
            `mask` is False are padding and are never read as points.
        mask: [B, P] bool, True for the points of each image. Kept points need not
            come first; their order within an image is what the init sees.
        k: number of clusters K.
        max_iters: most Lloyd steps per image.
        tol: an image stops once none of its centers moves more than this.
        group_size: run K-Means on groups of this many images, sorted by point
            count so that each group pads little. The result is the same; only
            speed changes. Small groups (about 64) suit CPUs, whose caches then
            hold a group's points; None runs the whole batch as one group (GPUs).
        init, stop, empty: see the module docstring.
        seeds: [B] each image's seed (`image_seed`); needed by init random /
            kmeans++ and empty reseed.

    Returns:
        [B, K, D] float32 centers, in the order of the input images.
    """
    _check_kmeans_args(k, max_iters, tol)
    _check_rule(init, stop, empty, seeds, points.shape[0] if points.ndim == 3 else None)
    rule = _Rule(init, stop, empty, None if seeds is None else np.asarray([int(s) for s in seeds], dtype=np.uint64))
    if points.ndim != 3 or mask.shape != points.shape[:2]:
        raise ValueError(f"points must be [B, P, D] and mask [B, P]; got {tuple(points.shape)} and {tuple(mask.shape)}")
    mask = mask.to(device=points.device, dtype=torch.bool)
    if group_size is not None:
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1 or None, got {group_size}")
        if group_size < points.shape[0]:
            return _grouped_kmeans(points, mask, k, max_iters, tol, group_size, rule)
    return _kmeans_one_group(points, mask, k, max_iters, tol, rule)


class _Rule:
    """The init / stop / empty choices and the seeds of the images at hand ([b] uint64, or None)."""

    def __init__(self, init: str, stop: str, empty: str, seeds: np.ndarray | None):
        self.init, self.stop, self.empty, self.seeds = init, stop, empty, seeds

    def subset(self, images: torch.Tensor) -> "_Rule":
        if self.seeds is None:
            return self
        return _Rule(self.init, self.stop, self.empty, self.seeds[images.cpu().numpy()])


def _check_rule(init: str, stop: str, empty: str, seeds: Sequence[int] | None, num_images: int | None) -> None:
    if init not in INITS:
        raise ValueError(f"K-Means init must be one of {list(INITS)}, got {init!r}")
    if stop not in STOPS:
        raise ValueError(f"K-Means stop must be one of {list(STOPS)}, got {stop!r}")
    if empty not in EMPTIES:
        raise ValueError(f"K-Means empty must be one of {list(EMPTIES)}, got {empty!r}")
    if needs_seeds(init, empty):
        if seeds is None:
            raise ValueError(f"K-Means init {init!r} / empty {empty!r} draws random numbers: pass each image's seed")
        if num_images is not None and len(seeds) != num_images:
            raise ValueError(f"seeds must hold one seed per image: {len(seeds)} for {num_images} images")


def _grouped_kmeans(
    points: torch.Tensor, mask: torch.Tensor, k: int, max_iters: int, tol: float, group_size: int, rule: _Rule
) -> torch.Tensor:
    num_patches = points.shape[1]
    by_count = torch.argsort(mask.sum(1), stable=True)
    # 1 + the position of each image's last point: a group copies only the patch columns it uses.
    extent = (mask * torch.arange(1, num_patches + 1, device=mask.device)).amax(1)
    centers = torch.empty(points.shape[0], k, points.shape[2], dtype=torch.float32, device=points.device)
    for start in range(0, len(by_count), group_size):
        images = by_count[start : start + group_size]
        columns = torch.arange(max(int(extent[images].max()), 1), device=points.device)
        group_points = points[images[:, None], columns[None, :]]
        centers[images] = _kmeans_one_group(
            group_points, mask[images[:, None], columns[None, :]], k, max_iters, tol, rule.subset(images)
        )
    return centers


def _kmeans_one_group(
    points: torch.Tensor, mask: torch.Tensor, k: int, max_iters: int, tol: float, rule: _Rule
) -> torch.Tensor:
    num_images, _, dim = points.shape
    counts = mask.sum(1)
    centers = torch.zeros(num_images, k, dim, dtype=torch.float32, device=points.device)
    if num_images == 0 or int(counts.max()) == 0:
        return centers

    packed, packed_mask = _pack_points(points, mask, counts)

    few = counts < k
    if few.any():
        # Each point is its own cluster; repeat them cyclically to fill K rows.
        repeat_index = torch.arange(k, device=points.device)[None, :] % counts[few].clamp_min(1)[:, None]
        repeated = torch.gather(packed[few], 1, repeat_index[..., None].expand(-1, -1, dim))
        centers[few] = repeated * (counts[few] > 0)[:, None, None]
        many = ~few
        if many.any():
            many_images = torch.nonzero(many).flatten()
            centers[many] = _lloyd(packed[many], packed_mask[many], k, max_iters, tol, rule.subset(many_images))
    else:
        centers = _lloyd(packed, packed_mask, k, max_iters, tol, rule)  # the common case: no subset copy
    return centers


def _check_kmeans_args(k: int, max_iters: int, tol: float) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if max_iters < 1:
        raise ValueError(f"max_iters must be >= 1, got {max_iters}")
    if tol < 0:
        raise ValueError(f"tol must be >= 0, got {tol}")


def _pack_points(points: torch.Tensor, mask: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's points moved to the front in their given order, trimmed to the largest count.

    Returns a fresh [B, W, D] float32 tensor (W = max count) with zeroed padding,
    so that whatever the padding held (NaN included) cannot leak into a sum, and
    its [B, W] mask. Points that come packed already (the featurizer's layout)
    cost one copy; others a row gather first.
    """
    num_images, num_patches, dim = points.shape
    width = int(counts.max())
    packed_mask = torch.arange(width, device=points.device)[None, :] < counts[:, None]
    if bool((mask[:, :width] == packed_mask).all()) and not bool(mask[:, width:].any()):
        packed = points[:, :width].to(torch.float32, copy=True)
    else:
        # A stable sort on "is padding" puts the points first without reordering them.
        order = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)[:, :width]
        rows = (order + torch.arange(num_images, device=points.device)[:, None] * num_patches).reshape(-1)
        packed = points.reshape(-1, dim).index_select(0, rows).reshape(num_images, width, dim).float()
    packed.masked_fill_(~packed_mask[:, :, None], 0.0)
    return packed, packed_mask


def _squared_distances(points: torch.Tensor, point_sq_norms: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """[B, K, P] squared distances from [B, K, D] centers to [B, P, D] points.

    ||c||^2 - 2 c.x + ||x||^2 costs one batched matmul instead of a [B, K, P, D]
    difference tensor; clamped at 0 against rounding. Centers-by-points (not
    points-by-centers) because that matmul runs ~1.5x faster on CPU.
    """
    cross = torch.bmm(centers, points.transpose(1, 2))
    return (centers.square().sum(2)[:, :, None] - 2 * cross + point_sq_norms[:, None, :]).clamp_min_(0)


def _maximin_init(points: torch.Tensor, mask: torch.Tensor, point_sq_norms: torch.Tensor, k: int) -> torch.Tensor:
    """[B, K, D] initial centers: the first point, then the farthest point from those chosen, K - 1 times."""
    rows = torch.arange(points.shape[0], device=points.device)
    first = mask.to(torch.uint8).argmax(1)  # argmax returns the first maximum: the first kept point
    centers = [points[rows, first]]
    min_distance = _squared_distances(points, point_sq_norms, centers[0][:, None, :])[:, 0]
    for _ in range(1, k):
        farthest = min_distance.masked_fill(~mask, float("-inf")).argmax(1)
        centers.append(points[rows, farthest])
        distance = _squared_distances(points, point_sq_norms, centers[-1][:, None, :])[:, 0]
        min_distance = torch.minimum(min_distance, distance)
    return torch.stack(centers, 1)


def _random_init(points: torch.Tensor, mask: torch.Tensor, point_sq_norms: torch.Tensor, k: int, rule: _Rule) -> torch.Tensor:
    """[B, K, D] initial centers of init `random` or `kmeans++`, from each image's own seed (packed points)."""
    num_images, width, _ = points.shape
    counts = mask.sum(1).cpu().numpy()
    keys = np.full((num_images, width), np.inf)
    for image, (seed, count) in enumerate(zip(rule.seeds, counts)):
        keys[image, :count] = _uniforms(seed, _INIT_STREAM, int(count))
    order = torch.from_numpy(np.argsort(keys, axis=1, kind="stable")).to(points.device)
    rows = torch.arange(num_images, device=points.device)
    if rule.init == "random":
        return points[rows[:, None], order[:, :k]]
    draws = np.stack([_uniforms(seed, _PLUS_PLUS_STREAM, k) for seed in rule.seeds])
    chosen = order[:, 0]
    centers = [points[rows, chosen]]
    min_distance = _squared_distances(points, point_sq_norms, centers[0][:, None, :])[:, 0]
    last = torch.from_numpy(counts.astype(np.int64) - 1).to(points.device)
    for j in range(1, k):
        cumulative = torch.cumsum(min_distance.double().masked_fill(~mask, 0.0), dim=1)
        target = torch.from_numpy(draws[:, j]).to(points.device) * cumulative[:, -1]
        picked = torch.minimum((cumulative <= target[:, None]).sum(1), last)
        picked = torch.where(cumulative[:, -1] > 0, picked, chosen)
        centers.append(points[rows, picked])
        distance = _squared_distances(points, point_sq_norms, centers[-1][:, None, :])[:, 0]
        min_distance = torch.minimum(min_distance, distance)
    return torch.stack(centers, 1)


def _lloyd(points: torch.Tensor, mask: torch.Tensor, k: int, max_iters: int, tol: float, rule: _Rule) -> torch.Tensor:
    """Lloyd steps on [B, P, D] packed points (every image has >= K points); returns [B, K, D].

    A converged image's centers are frozen at once. The working tensors shrink
    to the still-moving images whenever at most half of them are still moving:
    copying costs about one step, so shrinking on every convergence would cost
    more than it saves, and never shrinking makes a few slow images pay for the
    whole batch.
    """
    point_sq_norms = _squared_norms(points)
    if rule.init == "farthest":
        centers = _maximin_init(points, mask, point_sq_norms, k)
    else:
        centers = _random_init(points, mask, point_sq_norms, k, rule)
    counts = mask.sum(1)
    result = centers.clone()
    rows = torch.arange(points.shape[0], device=points.device)  # batch row of each image in the working set
    moving = torch.ones_like(rows, dtype=torch.bool)
    cluster_ids = torch.arange(k, device=points.device)[None, :, None]
    for iteration in range(max_iters):
        distances = _squared_distances(points, point_sq_norms, centers)  # [b, K, P]
        # argmin over a contiguous last dim: ~5x faster on CPU than over K in place.
        assignment = distances.transpose(1, 2).contiguous().argmin(2)  # [b, P]
        membership = ((assignment[:, None, :] == cluster_ids) & mask[:, None, :]).to(points.dtype)  # [b, K, P]
        sizes = membership.sum(2)  # [b, K]; padding belongs to no cluster
        means = torch.bmm(membership, points) / sizes.clamp_min(1)[:, :, None]
        new_centers = torch.where((sizes[:, :, None] > 0) & moving[:, None, None], means, centers)
        if rule.empty == "reseed":
            for image, cluster in torch.nonzero((sizes == 0) & moving[:, None]).tolist():
                seed = rule.seeds[int(rows[image])]
                new_centers[image, cluster] = points[image, _reseed_index(seed, iteration, cluster, int(counts[image]))]
        shifts = (new_centers - centers).norm(dim=2)  # [b, K]; 0 for frozen images
        centers = new_centers
        moving &= ~_converged(shifts, rule.stop, tol)
        num_moving = int(moving.sum())
        if num_moving == 0:
            break
        if 2 * num_moving <= len(rows):
            result[rows] = centers
            rows, points, point_sq_norms, mask, centers, counts = (
                rows[moving],
                points[moving],
                point_sq_norms[moving],
                mask[moving],
                centers[moving],
                counts[moving],
            )
            moving = moving[moving]
    result[rows] = centers
    return result


def _squared_norms(points: torch.Tensor) -> torch.Tensor:
    """[..., n] squared Euclidean norms of [..., n, D] points, without a points-sized temporary."""
    return torch.linalg.vector_norm(points, dim=-1).square()


def nearest_center(points: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """[n] int64: the index of each point's nearest center (ties: the lowest index), as K-Means assigns it.

    Args:
        points: [n, D] points (any float dtype; compared in float32, like the kernels above).
        centers: [K, D] centers, e.g. what `kmeans_single` returns for these points.
    """
    if points.ndim != 2 or centers.ndim != 2 or points.shape[1] != centers.shape[1]:
        raise ValueError(f"points must be [n, D] and centers [K, D]; got {tuple(points.shape)} and {tuple(centers.shape)}")
    points, centers = points.float(), centers.float()
    squared = centers.square().sum(1)[None, :] - 2 * points @ centers.T + _squared_norms(points)[:, None]
    return squared.clamp_min(0).argmin(1)
