"""The one distance kernel every K-Center path shares: exact to the bit, whatever the batch.

Picks must not depend on how rows are split over shards, nor on how many
centers arrive at once. Two things make that hold:

1. Every distance is computed in float64 from the stored vectors (float32 or
   float16), so rounding is ~1e-16, far below any gap between real scores.
2. Every BLAS call has the same shape: rows go in blocks of `ROW_BLOCK`, centers
   in blocks of `CENTER_BLOCK`, both zero-padded. BLAS picks its kernel and its
   summation order from the shape, so `x @ c` differs in the last bit between a
   [5, D] and a [300, D] center matrix; with one shape, each (point, center) pair
   gets the same bits in the reference, in the driver and on every shard
   (tests/select/test_distances.py checks this).

Distances (vectors are stored raw; `factors` carry the per-vector norm term):
    cosine     1 - (x . c) / (|x| |c|)      factors = 1 / |x|      clamped at 0
    euclidean  sqrt(|x|^2 + |c|^2 - 2 x . c) factors = |x|^2        clamped at 0
Cosine normalises once, at load (the inverse norms). For float16 storage the
vectors are normalised before rounding, so their values stay in [-1, 1].

Every per-pair formula is monotone in the dot product, so the min over a block
of centers can be taken on dot products first: same bits, less work.
"""
from __future__ import annotations

import os
import numpy as np

from raysel.select.blas import over_row_chunks
from raysel.select.errors import InvalidVectorError, SelectionConfigError

ROW_BLOCK = 512  # points per BLAS call (fixed: see module docstring)
CENTER_BLOCK = 16  # centers per BLAS call (fixed; small, so pruned passes compute few centers per row)

DISTANCES = ("cosine", "euclidean")
DTYPES = {"float32": np.float32, "float16": np.float16}
FLOAT16_MAX = float(np.finfo(np.float16).max)


def storage_dtype(name: str) -> np.dtype:
    if name not in DTYPES:
        raise SelectionConfigError(f"--dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return np.dtype(DTYPES[name])


def check_distance(name: str) -> str:
    if name not in DISTANCES:
        raise SelectionConfigError(f"--distance must be one of {list(DISTANCES)}, got {name!r}")
    return name


def squared_norms(vectors64: np.ndarray) -> np.ndarray:
    """Row-wise sum of squares over the last axis. [..., D] float64 -> [...] float64."""
    return np.add.reduce(vectors64 * vectors64, axis=-1)


PREPARE_CHUNK = 1024  # rows converted to float64 at a time while preparing (bounds the temporary memory)


def store_vectors(raw: np.ndarray, uris: list[str], distance: str, dtype: str = "float32") -> np.ndarray:
    """Raw vectors checked and converted to the storage dtype (one read batch at a time is fine).

    Rejects NaN / inf, zero vectors under cosine and, for float16 euclidean, values
    beyond the float16 range, naming the uri. float16 cosine vectors are normalised
    before rounding (so they fit the range).

    Args:
        raw: [n, K, D] float32. uris: [n] (only to name a bad row).

    Returns:
        [n, K, D] in the storage dtype (float32 input is returned as is).
    """
    check_distance(distance)
    target = storage_dtype(dtype)
    stored = raw if raw.dtype == target else np.empty(raw.shape, dtype=target)
    for start in range(0, len(raw), PREPARE_CHUNK):
        chunk = slice(start, start + PREPARE_CHUNK)
        part = raw[chunk]
        finite_rows = np.isfinite(part).reshape(len(part), -1).all(axis=1)
        if not finite_rows.all():
            bad = start + int(np.flatnonzero(~finite_rows)[0])
            raise InvalidVectorError(f"non-finite values (NaN or inf) in the vectors of {uris[bad]!r}")
        part64 = part.astype(np.float64)
        if distance == "cosine":
            norms = np.sqrt(squared_norms(part64))
            if (norms == 0).any():
                bad = start + int(np.flatnonzero((norms == 0).any(axis=-1))[0])
                raise InvalidVectorError(f"a zero vector in {uris[bad]!r}: cosine distance is undefined for it")
            if target == np.float16:
                stored[chunk] = part64 / norms[..., None]  # normalise before rounding to float16
            elif stored is not raw:
                stored[chunk] = part
        else:
            if target == np.float16 and (np.abs(part64) > FLOAT16_MAX).any():
                bad = start + int(np.flatnonzero((np.abs(part64) > FLOAT16_MAX).reshape(len(part), -1).any(axis=1))[0])
                raise InvalidVectorError(f"values of {uris[bad]!r} exceed the float16 range; use --dtype float32")
            if stored is not raw:
                stored[chunk] = part
    return stored


def norm_factors(stored: np.ndarray, distance: str) -> np.ndarray:
    """Per-vector factors of stored vectors: cosine 1 / |x|, euclidean |x|^2. [..., D] -> [...] float64."""
    factors = np.empty(stored.shape[:-1])
    for start in range(0, len(stored), PREPARE_CHUNK):
        chunk = slice(start, start + PREPARE_CHUNK)
        squares = squared_norms(stored[chunk].astype(np.float64))
        factors[chunk] = 1.0 / np.sqrt(squares) if distance == "cosine" else squares
    return factors


def prepare_vectors(
    vectors: np.ndarray, uris: list[str], distance: str, dtype: str = "float32"
) -> tuple[np.ndarray, np.ndarray]:
    """Stored vectors and their norm factors, checked for NaN / inf.

    Args:
        vectors: [N, K, D] float32, as read from the store.
        uris: [N] image uris (only to name a bad row).
        distance: "cosine" or "euclidean".
        dtype: "float32" or "float16" storage.

    Returns:
        stored [N, K, D] float32 or float16 (float32 input is kept, not copied),
        factors [N, K] float64 (cosine: inverse norms of the stored vectors;
        euclidean: their squared norms).
    """
    stored = store_vectors(vectors, uris, distance, dtype)
    return np.ascontiguousarray(stored), norm_factors(stored, distance)


def _center_blocks(centers: np.ndarray, center_factors: np.ndarray, distance: str) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Centers as zero-padded [CENTER_BLOCK, D] float64 blocks ready for the dot product.

    cosine: c / |c| (so a dot product is x . c / |c|); euclidean: -2 c (exact) and |c|^2.
    """
    centers64 = centers.astype(np.float64)
    if distance == "cosine":
        scaled = centers64 * center_factors[:, None]
    else:
        scaled = -2.0 * centers64
    blocks = []
    for start in range(0, len(centers64), CENTER_BLOCK):
        count = min(CENTER_BLOCK, len(centers64) - start)
        block = np.zeros((CENTER_BLOCK, centers64.shape[1]))
        block[:count] = scaled[start : start + count]
        blocks.append((block, center_factors[start : start + count], count))
    return blocks


def _row_blocks(points: np.ndarray, start: int, stop: int):
    """Yield (start, count, [ROW_BLOCK, D] float64 buffer) over zero-padded row blocks of points[start:stop]."""
    buffer = np.zeros((ROW_BLOCK, points.shape[1]))
    for block_start in range(start, stop, ROW_BLOCK):
        count = min(ROW_BLOCK, stop - block_start)
        buffer[:count] = points[block_start : block_start + count]
        if count < ROW_BLOCK:
            buffer[count:] = 0.0
        yield block_start, count, buffer


_threads = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def set_threads(count: int) -> None:
    """Threads the kernel splits row blocks over (BLAS itself runs single-threaded)."""
    global _threads
    _threads = max(1, int(count))


def get_threads() -> int:
    return _threads


def _over_row_chunks(rows: int, work) -> None:
    """Run work(start, stop) over contiguous chunks of whole row blocks, one per thread (`blas.over_row_chunks`)."""
    over_row_chunks(rows, ROW_BLOCK, _threads, work)


def update_min_distance(
    points: np.ndarray,
    point_factors: np.ndarray,
    centers: np.ndarray,
    center_factors: np.ndarray,
    distance: str,
    min_distance: np.ndarray,
) -> None:
    """min_distance = min(min_distance, distance to the nearest of `centers`), in place.

    Args:
        points: [n, D] stored vectors. point_factors: [n] float64.
        centers: [c, D] stored vectors. center_factors: [c] float64.
        distance: "cosine" or "euclidean".
        min_distance: [n] float64, updated in place.
    """
    if len(centers) == 0 or len(points) == 0:
        return
    blocks = _center_blocks(centers, center_factors, distance)

    def work(first: int, last: int) -> None:
        dots = np.empty((ROW_BLOCK, CENTER_BLOCK))
        for start, count, rows in _row_blocks(points, first, last):
            factors = point_factors[start : start + count]
            target = min_distance[start : start + count]
            for block, block_factors, real in blocks:
                np.matmul(rows, block.T, out=dots)
                if distance == "cosine":
                    nearest = 1.0 - factors * dots[:count, :real].max(axis=1)
                else:
                    nearest = factors + (dots[:count, :real] + block_factors).min(axis=1)
                    np.sqrt(np.maximum(nearest, 0.0), out=nearest)
                np.maximum(nearest, 0.0, out=nearest)
                np.minimum(target, nearest, out=target)

    _over_row_chunks(len(points), work)


def pairwise_distances(
    points: np.ndarray, point_factors: np.ndarray, centers: np.ndarray, center_factors: np.ndarray, distance: str
) -> np.ndarray:
    """Every (point, center) distance, bit-identical to what `update_min_distance` uses.

    Args:
        points: [n, D] stored vectors, point_factors [n] float64.
        centers: [c, D] stored vectors, center_factors [c] float64.

    Returns:
        [n, c] float64.
    """
    out = np.empty((len(points), len(centers)))
    if len(centers) == 0 or len(points) == 0:
        return out
    blocks = _center_blocks(centers, center_factors, distance)

    def work(first: int, last: int) -> None:
        dots = np.empty((ROW_BLOCK, CENTER_BLOCK))
        for start, count, rows in _row_blocks(points, first, last):
            factors = point_factors[start : start + count, None]
            for index, (block, block_factors, real) in enumerate(blocks):
                np.matmul(rows, block.T, out=dots)
                column = index * CENTER_BLOCK
                if distance == "cosine":
                    pair = 1.0 - factors * dots[:count, :real]
                else:
                    pair = np.sqrt(np.maximum(factors + (dots[:count, :real] + block_factors), 0.0))
                out[start : start + count, column : column + real] = np.maximum(pair, 0.0)

    _over_row_chunks(len(points), work)
    return out


def update_nearest(
    points: np.ndarray,
    point_factors: np.ndarray,
    rows: np.ndarray,
    centers: np.ndarray,
    center_factors: np.ndarray,
    distance: str,
    min_distance: np.ndarray,
    nearest: np.ndarray,
    first_center: int,
    wanted_blocks: np.ndarray | None = None,
) -> int:
    """For points[rows]: min_distance and nearest center, updated with `centers`, in place.

    The same bits per (point, center) pair as `pairwise_distances` and
    `update_min_distance` (rows are gathered into the same fixed-shape blocks). A
    center replaces the nearest one only when strictly closer, so `min_distance[r]`
    stays the distance to `nearest[r]`.

    Args:
        points: [n, D] stored vectors. point_factors: [n] float64.
        rows: [r] int64 distinct indices into points (order them so that rows needing
            the same centers are adjacent: a row block computes the union of its rows' needs).
        centers: [c, D] stored vectors. center_factors: [c] float64.
        min_distance: [n] float64. nearest: [n] integer center ids, both updated at `rows`.
        first_center: the id of centers[0] (ids are consecutive).
        wanted_blocks: [r, ceil(c / CENTER_BLOCK)] bool, the center blocks each row needs
            (None: all). A block no row of a row block needs is not computed for it.

    Returns:
        (row, center) distances computed (real rows x real centers of the computed blocks).
    """
    if len(centers) == 0 or len(rows) == 0:
        return 0
    blocks = _center_blocks(centers, center_factors, distance)
    computed = [0] * (len(rows) // ROW_BLOCK + 1)

    def work(first: int, last: int) -> None:
        dots = np.empty((ROW_BLOCK, CENTER_BLOCK))
        buffer = np.zeros((ROW_BLOCK, points.shape[1]))
        for block_start in range(first, last, ROW_BLOCK):
            count = min(ROW_BLOCK, last - block_start)
            if wanted_blocks is None:
                todo = range(len(blocks))
            else:
                todo = np.flatnonzero(wanted_blocks[block_start : block_start + count].any(axis=0))
                if not len(todo):
                    continue
            index = rows[block_start : block_start + count]
            buffer[:count] = points[index]
            if count < ROW_BLOCK:
                buffer[count:] = 0.0
            factors = point_factors[index]
            best = min_distance[index]
            owner = nearest[index]
            spots = np.arange(count)
            work_done = 0
            for number in todo:
                block, block_factors, real = blocks[number]
                np.matmul(buffer, block.T, out=dots)
                if distance == "cosine":
                    column = dots[:count, :real].argmax(axis=1)  # the nearest: 1 - f x.c is decreasing in x.c
                    value = 1.0 - factors * dots[spots, column]
                else:
                    shifted = dots[:count, :real] + block_factors
                    column = shifted.argmin(axis=1)
                    value = np.sqrt(np.maximum(factors + shifted[spots, column], 0.0))
                np.maximum(value, 0.0, out=value)
                closer = value < best
                best = np.where(closer, value, best)
                owner = np.where(closer, first_center + number * CENTER_BLOCK + column, owner)
                work_done += count * real
            min_distance[index] = best
            nearest[index] = owner
            computed[block_start // ROW_BLOCK] = work_done

    _over_row_chunks(len(rows), work)
    return int(sum(computed))


UNIT_ROUNDOFF = 2.0**-53


def metric_distances(values: np.ndarray, distance: str) -> np.ndarray:
    """Kernel distances as a metric: euclidean as is; cosine as |x/|x| - c/|c|| = sqrt(2 (1 - cos))."""
    return np.sqrt(2.0 * values) if distance == "cosine" else values


def metric_error_margin(distance: str, dims: int, max_squared_norm: float = 1.0) -> float:
    """A margin that makes the triangle-inequality skips exact for the kernel's rounded distances.

    With eps a bound on |computed - true| of one metric distance, skipping a (point x,
    new center c) pair when d(a, c) >= 2 d(x, a) + 6 eps (a: x's nearest center, all
    three computed) guarantees the computed d(x, c) > the computed d(x, a): the skip
    cannot change a min-distance bit. eps from the dot-product error bound
    |fl(x.c) - x.c| <= D u |x||c| (any summation order), a generous 4x over it:
    cosine: 1 - cos is off by at most delta = 4 (2D + 16) u, so its metric by sqrt(2 delta);
    euclidean: the squared distance by 4 (4D + 8) u M (M the largest squared norm), the
    distance by its square root.
    """
    if distance == "cosine":
        eps = np.sqrt(2.0 * 4 * (2 * dims + 16) * UNIT_ROUNDOFF) + 8 * UNIT_ROUNDOFF
    else:
        scale = max(float(max_squared_norm), np.finfo(np.float64).tiny)
        eps = np.sqrt(4 * (4 * dims + 8) * UNIT_ROUNDOFF * scale) + 8 * UNIT_ROUNDOFF * np.sqrt(scale)
    return float(6.0 * eps)
