"""The feature store's work list (`_manifest.parquet`): every URI and its chunk, as Arrow columns.

At 10M images the manifest is two Arrow columns (about URI length + 12 bytes a
row), never a Python list: chunks are read as slices of it, and a refresh
compares it with a new listing by Arrow's hash-based `is_in`, not Python sets.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raysel import schema
from raysel.shard_writer import CHUNK_ID

MANIFEST_SCHEMA = pa.schema([(schema.URI, pa.string()), (CHUNK_ID, pa.int64())])


def _compact(uris: pa.Array | pa.ChunkedArray) -> pa.Array:
    """`uris` as one string array with buffers of its own (a slice pickled or sent to Ray carries only itself)."""
    array = uris.combine_chunks() if isinstance(uris, pa.ChunkedArray) else uris
    return pc.take(array, pa.array(np.arange(len(array), dtype=np.int64))).cast(pa.string())


@dataclass
class Manifest:
    """The store's work list: `table` has columns `uri` (string) and `chunk_id` (int64), in chunk order."""

    table: pa.Table

    @classmethod
    def of(cls, uris: pa.Array | pa.ChunkedArray, chunk_size: int, first_chunk: int = 0) -> "Manifest":
        """URIs cut into chunks of `chunk_size` in their order, numbered from `first_chunk`."""
        chunk_ids = first_chunk + np.arange(len(uris), dtype=np.int64) // chunk_size
        return cls(pa.table({schema.URI: uris, CHUNK_ID: chunk_ids}, schema=MANIFEST_SCHEMA))

    @property
    def num_rows(self) -> int:
        return self.table.num_rows

    @property
    def uris(self) -> pa.ChunkedArray:
        return self.table.column(schema.URI)

    def next_chunk_id(self) -> int:
        return int(pc.max(self.table.column(CHUNK_ID)).as_py()) + 1 if self.num_rows else 0

    def spans(self) -> dict[int, tuple[int, int]]:
        """{chunk_id: (first row, rows)} of every chunk; O(chunks) Python objects, not O(rows)."""
        ids = self.table.column(CHUNK_ID).to_numpy()
        if not len(ids):
            return {}
        starts = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1])))
        lengths = np.diff(np.append(starts, len(ids)))
        spans = {int(ids[s]): (int(s), int(n)) for s, n in zip(starts, lengths)}
        if len(spans) != len(starts):
            raise ValueError("manifest rows of a chunk are not contiguous (the manifest is not in chunk order)")
        return spans

    def chunk_uris(self, span: tuple[int, int]) -> pa.Array:
        """The URIs of one chunk (a `spans()` value), as a compact string array of its own."""
        start, length = span
        return _compact(self.uris.slice(start, length))

    def iter_chunks(self, chunk_ids: set[int] | None = None) -> Iterator[tuple[int, pa.Array]]:
        """(chunk_id, URIs) of every chunk (or of `chunk_ids`), in chunk order, one slice at a time."""
        for chunk_id, span in sorted(self.spans().items()):
            if chunk_ids is None or chunk_id in chunk_ids:
                yield chunk_id, self.chunk_uris(span)

    def appended(self, new_uris: pa.Array | pa.ChunkedArray, chunk_size: int) -> "Manifest":
        """This manifest with `new_uris` appended as new chunks of `chunk_size`."""
        added = Manifest.of(new_uris, chunk_size, self.next_chunk_id())
        return Manifest(pa.concat_tables([self.table.cast(MANIFEST_SCHEMA), added.table]))


def from_table(table: pa.Table, chunk_size: int | None) -> Manifest:
    """A stored manifest table; one without `chunk_id` (store format 1) gets row // chunk_size."""
    uris = table.column(schema.URI)
    if pa.types.is_large_string(uris.type):
        uris = uris.cast(pa.string())
    if CHUNK_ID in table.column_names:
        return Manifest(pa.table({schema.URI: uris, CHUNK_ID: table.column(CHUNK_ID).cast(pa.int64())}))
    if chunk_size is None:
        raise ValueError("a manifest without chunk ids needs the store's chunk_size")
    return Manifest.of(uris, chunk_size)


def diff_listing(stored: pa.ChunkedArray | pa.Array, listed: pa.ChunkedArray | pa.Array) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """(new, gone): URIs of `listed` not in `stored` (listing order), URIs of `stored` not in `listed` (stored order).

    Exact and in bounded memory: one dense rank (Arrow's sort-based `rank`) over
    both columns side by side gives equal URIs equal integers, and membership is
    then a lookup in a numpy table of those integers. About 17 bytes a row on top
    of the two columns: no string is copied, no hash table of strings is built
    (Arrow's `is_in` keeps ~100 bytes per distinct URI, a Python set ~150).
    """
    stored, listed = _as_chunked(stored), _as_chunked(listed)
    both = pa.chunked_array([*stored.chunks, *listed.chunks], pa.string())
    ranks = pc.rank(both, tiebreaker="dense").to_numpy()  # [S + L] uint64, equal strings -> equal rank
    del both
    stored_ranks, listed_ranks = ranks[: len(stored)], ranks[len(stored):]
    seen = np.zeros(int(ranks.max(initial=0)) + 1, dtype=bool)
    seen[stored_ranks] = True
    new = listed.filter(pa.array(~seen[listed_ranks]))
    seen[:] = False
    seen[listed_ranks] = True
    gone = stored.filter(pa.array(~seen[stored_ranks]))
    return new, gone


def _as_chunked(values: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray:
    return values if isinstance(values, pa.ChunkedArray) else pa.chunked_array([values], pa.string())
