"""Where images come from (folders, s3:// prefixes, manifests) and how bytes become pixels.

Decoding never raises for a bad file: it returns the reason, so one corrupt
image cannot take good images of the same batch down with it. Storage that does
not answer (after every retry) raises StorageUnavailableError instead: an
outage is not the image's fault, and the run stops, resumable, rather than
record good images as bad.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image, ImageOps

from raysel import schema, storage
from raysel.storage import StorageError, StorageOptions

MANIFEST_SUFFIXES = (".parquet", ".csv")

log = logging.getLogger(__name__)


class ManifestError(ValueError):
    """A manifest that cannot be used, with the reason."""


class ImageDecodeError(ValueError):
    """One image that cannot be used, with the reason."""


def is_manifest(source: str) -> bool:
    return source.lower().endswith(MANIFEST_SUFFIXES)


def list_images(source: str, options: StorageOptions | None = None) -> list[str]:
    """Every image URI of `source` as a Python list (small pools: pretext training, tests); see `list_image_uris`."""
    return list_image_uris(source, options).to_pylist()


LIST_THREADS = 16  # concurrent prefix listings on S3 (each a paginated ListObjectsV2 of its own)
LISTING_BATCH = 65_536  # keys turned into one Arrow array at a time while listing


def list_image_uris(source: str, options: StorageOptions | None = None) -> pa.ChunkedArray:
    """Every image URI of `source` as an Arrow string column, sorted (a manifest keeps its own order).

    `source` is a local folder (recursive), an s3://bucket/prefix, or a manifest
    file (.parquet / .csv with a `uri` column). Hidden files and files whose name
    starts with '_' are skipped; every other file is an input (non-images are
    reported as errors by the run, not silently dropped).

    The listing streams: keys become Arrow arrays `LISTING_BATCH` at a time (on S3
    each first-level prefix is listed concurrently, `LIST_THREADS` at once), so
    10M URIs take about 10M x (URI length + 4) bytes, not one Python string each.

    Returns:
        [N] string ChunkedArray, N >= 1.
    """
    if is_manifest(source):
        return read_manifest_uris(source, options)
    fs, path = storage.filesystem(source, options)
    try:
        if not fs.exists(path):
            raise StorageError(f"source {source!r} does not exist (no such folder, bucket or prefix)")
        if not fs.isdir(path):
            raise StorageError(f"source {source!r} is a file; give a folder, an s3:// prefix or a .parquet/.csv manifest")
        arrays = _list_s3(fs, path) if storage.is_s3(source) else list(_list_local(path))
    except StorageError:
        raise
    except PermissionError as exc:
        raise StorageError(f"access denied listing {source!r}: {exc}") from exc
    except Exception as exc:  # botocore's connection errors are no OSError
        if storage.is_unavailable(exc):
            raise storage.unavailable_error("listing", source, exc, options) from exc
        if isinstance(exc, OSError):
            raise StorageError(f"cannot list {source!r}: {exc}") from exc
        raise
    uris = pa.chunked_array(arrays, pa.string())
    if not len(uris):
        raise StorageError(f"no files under {source!r}")
    # Byte order of UTF-8 = code point order = Python's sorted(). S3 lists each prefix in that order
    # already, so a listing is often sorted as it comes: checked in one vectorized pass.
    if len(uris) > 1 and pc.all(pc.less_equal(uris.slice(0, len(uris) - 1), uris.slice(1))).as_py():
        return uris
    return uris.take(pc.sort_indices(uris))


def _hidden(relative: str) -> bool:
    """Whether a path relative to the listed root has a part starting with '.' or '_'."""
    return any(part.startswith((".", "_")) for part in relative.split("/") if part)


def _list_local(path: str) -> Iterator[pa.Array]:
    """Files under local folder `path` (symlinks followed, as fsspec's find), LISTING_BATCH per array."""
    batch: list[str] = []

    def fail(exc: OSError) -> None:
        raise exc

    for root, dirs, files in os.walk(path, followlinks=True, onerror=fail):
        dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]  # a hidden folder hides all below it
        for name in files:
            if not name.startswith((".", "_")):
                batch.append(os.path.join(root, name))
        if len(batch) >= LISTING_BATCH:
            yield pa.array(batch, pa.string())
            batch = []
    if batch:
        yield pa.array(batch, pa.string())


def _list_s3(fs, path: str) -> list[pa.Array]:
    """Every visible object under `path` as s3:// URIs, listing its first-level prefixes concurrently.

    One delimiter listing gives the first level (its files are kept, its
    sub-prefixes queued); each sub-prefix is then one paginated listing of its
    own, LIST_THREADS at a time on s3fs's event loop, so a bucket of millions of
    keys spread over prefixes is listed at up to LIST_THREADS times the rate of
    a single `find`. Every page's keys are turned into Arrow arrays at once; no
    per-object detail dict outlives its page.
    """
    import asyncio

    from fsspec.asyn import sync

    bucket, key, _ = fs.split_path(path)
    root = f"{key}/" if key else ""

    async def listing(prefix: str, delimiter: str, prefixes: list[str] | None) -> list[pa.Array]:
        arrays, batch = [], []
        async for entry in fs._iterdir(bucket, delimiter=delimiter, prefix=prefix):
            name = entry["name"]  # bucket/key
            if entry.get("type") == "directory":
                if prefixes is not None and not _hidden(name[len(path):]):
                    prefixes.append(name[len(bucket) + 1:].rstrip("/") + "/")
                continue
            if name.endswith("/") or _hidden(name[len(path):]):  # a folder marker, or hidden
                continue
            batch.append(f"s3://{name}")
            if len(batch) >= LISTING_BATCH:
                arrays.append(pa.array(batch, pa.string()))
                batch = []
        if batch:
            arrays.append(pa.array(batch, pa.string()))
        return arrays

    async def everything() -> list[pa.Array]:
        prefixes: list[str] = []
        arrays = await listing(root, "/", prefixes)
        slots = asyncio.Semaphore(LIST_THREADS)

        async def one(prefix: str) -> list[pa.Array]:
            async with slots:
                return await listing(prefix, "", None)

        for found in await asyncio.gather(*(one(p) for p in prefixes)):
            arrays.extend(found)
        return arrays

    return sync(fs.loop, everything)


def read_manifest(source: str, options: StorageOptions | None = None) -> list[str]:
    """URIs listed in a .parquet/.csv manifest's `uri` column, validated, as a Python list (see `read_manifest_uris`)."""
    return read_manifest_uris(source, options).to_pylist()


def read_manifest_uris(source: str, options: StorageOptions | None = None) -> pa.ChunkedArray:
    """URIs listed in a .parquet/.csv manifest's `uri` column, validated with Arrow compute (no Python list).

    Returns:
        [N] string ChunkedArray in the manifest's order, a repeated URI kept at its first row (with a warning).
    """
    try:
        table = storage.read_table_file(source, options, string_columns=(schema.URI,))
    except FileNotFoundError as exc:
        raise ManifestError(f"manifest {source!r} does not exist") from exc
    except (pa.ArrowInvalid, OSError) as exc:
        raise ManifestError(f"manifest {source!r} is not a readable {source.rsplit('.', 1)[-1]} file: {exc}") from exc
    if schema.URI not in table.column_names:
        raise ManifestError(f"manifest {source!r} has no '{schema.URI}' column (columns: {table.column_names})")
    column = table.column(schema.URI)
    del table
    if pa.types.is_large_string(column.type):
        column = column.cast(pa.string())
    if not pa.types.is_string(column.type):
        raise ManifestError(f"manifest {source!r}: column '{schema.URI}' must hold strings, not {column.type}")
    empty = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(column), ""), True)
    row = pc.index(empty, True).as_py()
    if row >= 0:
        raise ManifestError(f"manifest {source!r}: row {row} has an empty '{schema.URI}'")
    other_scheme = pc.and_(
        pc.match_substring(column, "://"),
        pc.invert(pc.or_(pc.starts_with(column, "s3://"), pc.starts_with(column, "file://"))),
    )
    row = pc.index(other_scheme, True).as_py()
    if row >= 0:
        raise ManifestError(
            f"manifest {source!r}: row {row} has unsupported URI {column[row].as_py()!r} (local paths and s3:// only)"
        )
    if not len(column):
        raise ManifestError(f"manifest {source!r} is empty")
    return _first_occurrences(column, source)


def _first_occurrences(column: pa.ChunkedArray, source: str) -> pa.ChunkedArray:
    """`column` with every repeated value kept only at its first row (order kept), warning when any repeated."""
    if pc.count_distinct(column).as_py() == len(column):
        return column
    # A repeated URI is one image: featurizing it twice would put it twice in the store.
    order = pc.sort_indices(column)  # stable: equal URIs stay in row order, the first occurrence first
    ordered = column.take(order)
    later = pc.equal(ordered.slice(1), ordered.slice(0, len(ordered) - 1))  # [n - 1]: same as the one before
    repeat = pa.chunked_array([pa.array([False]), *later.chunks], pa.bool_())
    kept_rows = np.sort(order.filter(pc.invert(repeat)).to_numpy())
    repeated = pc.unique(ordered.filter(repeat))
    unique = column.take(pa.array(kept_rows))
    log.warning(
        "manifest %r lists %d URI(s) more than once (e.g. %r); each is featurized once (%d rows -> %d images)",
        source, len(repeated), repeated[0].as_py(), len(column), len(unique),
    )
    return unique


def decode_image(data: bytes, image_size: int, max_pixels: int) -> np.ndarray:
    """Bytes -> [image_size, image_size, 3] uint8 RGB, resized with bicubic (as GEAL does).

    Handles grayscale, palette, CMYK, 16-bit and alpha images and EXIF rotation.
    Raises ImageDecodeError (empty, not an image, corrupt, truncated, too large).
    """
    return decode_image_sizes(data, (image_size,), max_pixels)[0]


def decode_image_sizes(data: bytes, sizes: tuple[int, ...], max_pixels: int) -> list[np.ndarray]:
    """Bytes -> one [S, S, 3] uint8 RGB array per size in `sizes`, each resized from the decoded original.

    Decoding once for several models (the ViT and the pretext model of `featurize --pretext`)
    gives each exactly what `decode_image(data, S, ...)` gives, e.g. what pretext training saw.
    """
    if not data:
        raise ImageDecodeError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageDecodeError(f"image too large: {width}x{height} pixels exceeds the limit of {max_pixels}")
            image.load()
            image = ImageOps.exif_transpose(image)
            rgb = _to_rgb(image)
            return [np.asarray(rgb.resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8) for size in sizes]
    except ImageDecodeError:
        raise
    except Image.UnidentifiedImageError:
        raise ImageDecodeError("not an image (unrecognised format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"image too large: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"corrupt or truncated image: {exc}") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit / 32-bit grayscale: scale to 8 bits by the image's own range, not by clipping.
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        return Image.fromarray(scaled.astype(np.uint8), mode="L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        # Composite on white: transparent pixels are background, not whatever colour they stored.
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def read_and_decode(uri: str, image_size: int, max_pixels: int, options: StorageOptions) -> tuple[np.ndarray | None, str]:
    """(pixels, "") for a usable image, (None, reason) otherwise; never raises."""
    images, reason = read_and_decode_sizes(uri, (image_size,), max_pixels, options)
    return (images[0] if images is not None else None), reason


def read_and_decode_sizes(
    uri: str, sizes: tuple[int, ...], max_pixels: int, options: StorageOptions,
    decode_slots: threading.Semaphore | None = None,
) -> tuple[list[np.ndarray] | None, str]:
    """([pixels per size], "") for a usable image, (None, reason) otherwise.

    Raises StorageUnavailableError (only) when object storage does not answer after every retry:
    an outage is not the image's fault, so it is not returned as a reason to record it as bad.
    With `decode_slots`, the decode (CPU work: PIL releases the GIL, so threads decode in parallel) waits
    for a slot; the read (I/O) does not.
    """
    try:
        data = storage.read_bytes(uri, options)
    except FileNotFoundError:
        return None, "missing object: not found (deleted after listing?)"
    except PermissionError as exc:
        return None, f"access denied: {exc}"
    except IsADirectoryError:
        return None, "is a directory, not a file"
    except Exception as exc:  # botocore's connection errors are no OSError
        if storage.is_unavailable(exc):
            raise storage.unavailable_error("reading", uri, exc, options) from exc
        if isinstance(exc, OSError):
            return None, f"read failed: {exc}"
        raise
    try:
        with decode_slots if decode_slots is not None else contextlib.nullcontext():
            return decode_image_sizes(data, sizes, max_pixels), ""
    except ImageDecodeError as exc:
        return None, str(exc)


class DecodeBatch:
    """Ray Data batch function: `uri` column -> `uri`, `image` [B, S, S, 3] uint8, `error` (empty when fine).

    Reads run in a thread pool of `threads` (object-store latency dominates); decodes,
    which PIL runs outside the GIL, at most `cpus` at a time (rounded, at least 1), so
    a task uses the CPUs it reserves. A failed image gets a zero image and its reason,
    and travels on so it is recorded. Storage that does not answer raises
    StorageUnavailableError: the batch, and the run, fail.
    `extra_sizes` ({column: size}) adds more columns of the same images decoded
    at other sizes, from the same bytes (e.g. `pretext_image` at the pretext model's size).
    """

    def __init__(
        self,
        image_size: int,
        max_pixels: int,
        options: StorageOptions,
        threads: int = 8,
        extra_sizes: dict[str, int] | None = None,
        cpus: float = 1.0,
    ):
        self.image_size = image_size
        self.max_pixels = max_pixels
        self.options = options
        self.threads = threads
        self.extra_sizes = dict(extra_sizes or {})
        self.decode_slots = max(1, round(cpus))  # decodes at once: the CPUs the task reserves

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        uris = [str(u) for u in batch[schema.URI]]
        columns = ["image", *self.extra_sizes]
        sizes = (self.image_size, *self.extra_sizes.values())
        with ThreadPoolExecutor(max_workers=min(self.threads, max(1, len(uris)))) as pool:
            slots = threading.Semaphore(self.decode_slots)
            results = list(pool.map(lambda u: read_and_decode_sizes(u, sizes, self.max_pixels, self.options, slots), uris))
        out = {key: value for key, value in batch.items()}
        for index, (column, size) in enumerate(zip(columns, sizes)):
            blank = np.zeros((size, size, 3), dtype=np.uint8)
            out[column] = np.stack([images[index] if images is not None else blank for images, _ in results]) if results else np.zeros((0, size, size, 3), np.uint8)
        out[schema.ERROR] = np.array([reason for _, reason in results], dtype=object)
        return out
