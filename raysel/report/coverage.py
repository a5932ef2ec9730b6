"""Section 2: the coverage curve, how far the pool is from the selection after each pick.

After t picks the coverage radius is max over the pool's images I of
d(I, S_t) = max over I's vectors x of min over the vectors c of the first t
picks of d(x, c): the K-Center objective. For `geal` the vectors are the K
knowledge clusters of each image, so d(I, S_t) is exactly GEAL's score of I; for
other methods one embedding per image. The distance is the selection's own
(cosine 1 - x.c / (|x| |c|) for geal, Euclidean |x - c| for coreset), computed in
float64. For a greedy K-Center selection, the radius after t picks is the score
of pick t (the farthest image is what greedy picks next).

Chunked numpy: the store is read twice, shard by shard (first the picks'
vectors, then the pool), and every product is at most ROW_BLOCK images x
PICK_BLOCK picks, so memory stays bounded whatever the pool and budget; time is
O(N x B x K^2 x D).
"""
from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raysel import schema, storage
from raysel.report.inputs import ReportInputError, Selection
from raysel.report.page import Section, escape, figure_png, img, new_figure
from raysel.store import FeatureStore, vectors_of

ROW_BLOCK = 256  # pool images per product
PICK_BLOCK = 256  # picks per product

VECTOR_NDIM = {schema.CLUSTERS: 3, schema.EMBEDDING: 2}


def coverage_radii(pool: np.ndarray, picks: np.ndarray, distance: str, picks_prepared: bool = False) -> np.ndarray:
    """Coverage radius after each pick, for one block of the pool.

    Args:
        pool: [N, K, D] vectors of N images (K = 1 for embeddings).
        picks: [B, K, D] vectors of the picks, in pick order.
        distance: "cosine" or "euclidean".
        picks_prepared: `picks` are already float64 (and unit length under cosine): the
            store pass prepares them once, not once per store shard.

    Returns:
        [B] float64: entry t is max over the N images of their distance to the first t + 1 picks.
    """
    points = _prepared(pool, distance)
    centers = picks if picks_prepared else _prepared(picks, distance)
    n, k, _ = points.shape
    radii = np.full(len(centers), -np.inf)
    for row_start in range(0, n, ROW_BLOCK):
        block = points[row_start : row_start + ROW_BLOCK]
        flat = block.reshape(-1, block.shape[-1])
        nearest = np.full((len(block), k), np.inf)  # per vector: distance to the nearest pick so far
        for pick_start in range(0, len(centers), PICK_BLOCK):
            pick_block = centers[pick_start : pick_start + PICK_BLOCK]
            pairwise = _distances(flat, pick_block.reshape(-1, pick_block.shape[-1]), distance)
            # [vectors, picks, pick's vectors] -> min over a pick's vectors -> [images, K, picks]
            per_pick = pairwise.reshape(len(block), k, len(pick_block), pick_block.shape[1]).min(axis=3)
            per_pick[:, :, 0] = np.minimum(per_pick[:, :, 0], nearest)
            np.minimum.accumulate(per_pick, axis=2, out=per_pick)
            nearest = per_pick[:, :, -1]
            block_radii = per_pick.max(axis=(0, 1))
            np.maximum(radii[pick_start : pick_start + len(pick_block)], block_radii, out=radii[pick_start : pick_start + len(pick_block)])
    return radii


def _prepared(vectors: np.ndarray, distance: str) -> np.ndarray:
    vectors = vectors.astype(np.float64)
    if distance == "cosine":
        norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
        if (norms == 0).any():
            raise ReportInputError("a zero vector in the store: cosine distance is undefined for it")
        vectors = vectors / norms
    return vectors


def _distances(points: np.ndarray, centers: np.ndarray, distance: str) -> np.ndarray:
    dots = points @ centers.T
    if distance == "cosine":
        return np.maximum(1.0 - dots, 0.0)
    squared = (points * points).sum(1)[:, None] + (centers * centers).sum(1)[None, :] - 2.0 * dots
    return np.sqrt(np.maximum(squared, 0.0))


def choose_vectors(requested: str, requested_distance: str | None, selection: Selection, columns: list[str]) -> tuple[str, str]:
    """(vector column, distance) for the curve: clusters for geal, embeddings otherwise; the selection's distance."""
    if requested == "auto":
        column = schema.CLUSTERS if selection.method in ("geal", None) and schema.CLUSTERS in columns else schema.EMBEDDING
    else:
        column = requested
    if column not in columns:
        raise ReportInputError(f"the feature store has no '{column}' column for the coverage curve (columns: {columns})")
    distance = requested_distance or selection.config.get("distance") or ("cosine" if column == schema.CLUSTERS else "euclidean")
    return column, distance


def in_sample(uris: list[str], fraction: float) -> np.ndarray:
    """[N] bool: a uniform, seeded-by-content sample of about `fraction` of the uris (the same on every run)."""
    if fraction >= 1.0:
        return np.ones(len(uris), dtype=bool)
    keys = np.array([int.from_bytes(hashlib.blake2b(uri.encode(), digest_size=8).digest(), "big") for uri in uris], dtype=np.uint64)
    return keys < np.uint64(int(fraction * 2**64))


def store_coverage(
    store: FeatureStore, selection: Selection, column: str, distance: str, sample: int = 0
) -> tuple[np.ndarray, int]:
    """([B] coverage radius after each pick, images measured) over the store, or a sample of about `sample` images.

    On a sample the radius is the max over the sampled images: a lower bound of the pool's, exact at pick t
    whenever the farthest image is in the sample.
    """
    wanted = pa.array(selection.uris, pa.string())
    picks: np.ndarray | None = None
    found = 0
    for table in store.iter_tables(columns=[schema.URI, column]):
        position = pc.index_in(wanted, value_set=table.column(schema.URI).combine_chunks().cast(pa.string()))
        hit = position.is_valid().to_numpy(zero_copy_only=False)
        if not hit.any():
            continue
        rows = position.to_numpy(zero_copy_only=False)[hit].astype(np.int64)
        vectors = _as_3d(vectors_of(table.column(column).take(pa.array(rows)), VECTOR_NDIM[column]))  # only the picks' rows
        if picks is None:
            picks = np.empty((len(selection.uris),) + vectors.shape[1:], dtype=np.float32)
        picks[hit] = vectors
        found += int(hit.sum())
    if found < len(selection.uris):
        known = set()
        for table in store.iter_tables(columns=[schema.URI]):
            known.update(table.column(schema.URI).to_pylist())
        missing = [u for u in selection.uris if u not in known]
        raise ReportInputError(
            f"the selection names {len(missing)} image(s) the feature store {store.uri} does not have, e.g. {missing[0]!r}: "
            "was it selected from another store?"
        )
    radii = np.full(len(selection.uris), -np.inf)
    prepared = _prepared(picks, distance)  # once, not once per store shard
    fraction = sample / store.num_rows() if sample else 1.0
    pool_size = 0
    for table in store.iter_tables(columns=[schema.URI, column]):
        values = table.column(column)
        if fraction < 1.0:  # only the sampled rows become float32 vectors
            keep = in_sample(table.column(schema.URI).to_pylist(), fraction)
            if not keep.any():
                continue
            values = values.filter(pa.array(keep))
        vectors = _as_3d(vectors_of(values, VECTOR_NDIM[column]))
        if vectors.shape[1:] != picks.shape[1:]:
            raise ReportInputError(f"the store's '{column}' vectors change shape between shards: {vectors.shape[1:]} vs {picks.shape[1:]}")
        np.maximum(radii, coverage_radii(vectors, prepared, distance, picks_prepared=True), out=radii)
        pool_size += len(vectors)
    if pool_size == 0:
        raise ReportInputError(f"--coverage-sample {sample} drew no image of the pool: raise it (0 measures every image)")
    return radii, pool_size


def store_columns(store: FeatureStore) -> list[str]:
    """Column names of the store's first shard (its footer only)."""
    shard_uris = store.shard_uris()
    if not shard_uris:
        raise ReportInputError(f"the feature store {store.uri} has no shards")
    fs, path = storage.filesystem(shard_uris[0], store.options)
    with fs.open(path, "rb") as handle:
        return pq.read_schema(handle).names


def _as_3d(vectors: np.ndarray) -> np.ndarray:
    return vectors[:, None, :] if vectors.ndim == 2 else vectors


def coverage_section(
    store: FeatureStore, selection: Selection, vectors: str, distance: str | None, sample: int = 0
) -> Section:
    columns = store_columns(store)
    column, distance = choose_vectors(vectors, distance, selection, columns)
    radii, pool_size = store_coverage(store, selection, column, distance, sample)
    total = store.num_rows()
    picks = np.arange(1, len(radii) + 1)
    figure, axes = new_figure()
    axes.plot(picks, radii, marker="." if len(radii) <= 100 else None)
    axes.set_xlabel("images picked")
    axes.set_ylabel(f"coverage radius ({distance})")
    measured = f"{pool_size} images" if pool_size == total else f"a sample of {pool_size} of {total} images"
    axes.set_title(f"max over {measured} of the distance to the nearest pick")
    axes.grid(alpha=0.3)
    what = "knowledge clusters (an image's distance: the max over its clusters)" if column == schema.CLUSTERS else "embeddings"
    shown = [0, len(radii) // 4, len(radii) // 2, len(radii) - 1]
    values = ", ".join(f"{t + 1}: {radii[t]:.4g}" for t in sorted(set(shown)))
    body = (
        f'<p class="note">Vectors: {escape(what)}; distance: {escape(distance)}, computed in float64. '
        f"The radius after t picks is the largest distance from any image of the pool to its nearest picked image; "
        f"lower is better covered. Measured over {escape(measured)}"
        + (" (a uniform sample: a lower bound of the pool's radius; --coverage-sample 0 measures all)" if pool_size != total else "")
        + f". Radius after picks {escape(values)}.</p>\n"
        + img(figure_png(figure), "image/png", "coverage curve", id="coverage-plot", data_radii=_json_list(radii))
    )
    return Section("coverage", "Coverage curve", body)


def _json_list(values: np.ndarray) -> str:
    return "[" + ",".join(repr(float(v)) for v in values) + "]"
