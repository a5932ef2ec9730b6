"""`raysel select --exclude FILE`: leave images out of every selection method.

The methods read the store through many paths (row slices, footers, whole files), so rather than
teach each one to skip rows, the runner hands them a view of the store without the excluded
rows: `<out>.excluded-store/`, the store's files filtered one at a time (same file names, same
metadata; files left empty are dropped), deleted once the selection is written. Already-labeled
images (`--labeled`) are never excluded: they seed the pool as before.
"""
from __future__ import annotations

import hashlib
import shutil

import pyarrow as pa
import pyarrow.compute as pc

from raysel import schema, storage
from raysel.select.errors import SelectionError
from raysel.storage import StorageOptions
from raysel.store import FeatureStore

VIEW_SUFFIX = ".excluded-store"


class ExcludeError(SelectionError):
    """An --exclude file that cannot be read, or that leaves nothing to select from."""


def read_excluded(uri: str, options: StorageOptions | None = None) -> list[str]:
    """Distinct uris of an exclude file (.parquet/.csv with 'uri', e.g. `raysel dedup`'s output), sorted."""
    table = storage.read_uri_table(uri, "--exclude file", ExcludeError, options)
    return sorted({u for u in table.column(schema.URI).to_pylist() if u})


def view_uri(out: str) -> str:
    return out + VIEW_SUFFIX


def exclusion_view(store: FeatureStore, exclude: str, out: str, labeled: list[str],
                   options: StorageOptions) -> tuple[FeatureStore, str, int]:
    """(the store without the excluded rows, a digest of what was excluded, rows left out)."""
    excluded = sorted(set(read_excluded(exclude, options)) - set(labeled))
    digest = hashlib.sha256("\n".join(excluded).encode()).hexdigest()
    view = FeatureStore(view_uri(out), options)
    remove_view(out, options)
    view.write_metadata(store.metadata())
    wanted = pa.array(excluded, pa.string())
    kept_rows = left_out = 0
    for shard in store.shard_uris():
        table = store.read_shard(shard)
        mask = pc.invert(pc.is_in(table.column(schema.URI), value_set=wanted))
        kept = table.filter(mask)
        left_out += table.num_rows - kept.num_rows
        if kept.num_rows:
            storage.write_parquet_atomic(kept, view.path(schema.SHARDS_DIR, shard.rstrip("/").rsplit("/", 1)[-1]), options)
            kept_rows += kept.num_rows
    if kept_rows == 0:
        remove_view(out, options)
        raise ExcludeError(f"--exclude {exclude!r} leaves out every image of the store {store.uri}")
    view.mark_complete({"rows": kept_rows, "excluded": left_out, "source_store": store.uri})
    return view, digest, left_out


def remove_view(out: str, options: StorageOptions) -> None:
    uri = view_uri(out)
    fs, path = storage.filesystem(uri, options)
    if not fs.exists(path):
        return
    if storage.is_s3(uri):
        fs.rm(path, recursive=True)
    else:
        shutil.rmtree(path, ignore_errors=True)
