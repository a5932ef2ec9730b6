"""What COCO and CVAT need to know of each image: width, height (read from the header) and md5."""
from __future__ import annotations

import hashlib
import io
import os
import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from PIL import Image

from raysel import storage
from raysel.export.errors import ExportError
from raysel.storage import StorageOptions

READ_THREADS = 16  # concurrent object reads (S3 GETs wait on the network, not the CPU)


@dataclass(frozen=True)
class ImageInfo:
    uri: str
    width: int
    height: int
    md5: str


def _info(uri: str, options: StorageOptions) -> ImageInfo | str:
    try:
        data = storage.read_bytes(uri, options)
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
        return ImageInfo(uri, int(width), int(height), hashlib.md5(data).hexdigest())  # noqa: S324 - CVAT's checksum
    except Exception as exc:  # noqa: BLE001 - every reason is reported, per image
        return f"{uri}: {type(exc).__name__}: {exc}"


def image_infos(uris: list[str], options: StorageOptions | None = None) -> list[ImageInfo]:
    """[B] ImageInfo in the order of `uris`; ExportError naming every image that cannot be read."""
    options = options or StorageOptions()
    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        results = list(pool.map(lambda uri: _info(uri, options), uris))
    failed = [r for r in results if isinstance(r, str)]
    if failed:
        shown = "; ".join(failed[:5]) + (f"; ... ({len(failed)} in all)" if len(failed) > 5 else "")
        raise ExportError(f"cannot read the size of {len(failed)} image(s), which this format needs: {shown}")
    return results  # type: ignore[return-value]


def common_root(uris: list[str]) -> str:
    """The deepest folder (or s3:// prefix ending in '/') holding every uri."""
    if all(storage.is_s3(u) for u in uris):
        parents = [u.rsplit("/", 1)[0] for u in uris]
        root = posixpath.commonpath([p[len("s3://"):] for p in parents])
        return "s3://" + root.rstrip("/") + "/"
    if any(storage.is_s3(u) for u in uris):
        raise ExportError("the selection mixes s3:// and local images: give --image-root, or export them separately")
    return os.path.commonpath([os.path.dirname(os.path.abspath(u)) for u in uris]).rstrip("/") + "/"


def relative_names(uris: list[str], root: str | None) -> tuple[str, list[str]]:
    """(root, each uri's path relative to root); ExportError naming a uri outside root."""
    root = common_root(uris) if root is None else root
    if not storage.is_s3(root):
        root = os.path.abspath(root)
    root = root.rstrip("/") + "/"
    names = []
    for uri in uris:
        full = uri if storage.is_s3(uri) else os.path.abspath(uri)
        if not full.startswith(root):
            raise ExportError(f"image {uri} is not under --image-root {root}: names relative to it cannot express it")
        names.append(full[len(root):])
    return root, names
