"""The store's manifest as Arrow columns: chunk spans and slices, refresh diffs, and 10M rows in bounded memory."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raysel.manifest import Manifest, diff_listing, from_table

pytestmark = pytest.mark.pure


def test_chunks_are_contiguous_slices_in_chunk_order():
    manifest = Manifest.of(pa.array([f"/{i}.jpg" for i in range(10)]), chunk_size=4)
    assert manifest.spans() == {0: (0, 4), 1: (4, 4), 2: (8, 2)}
    assert [(i, uris.to_pylist()) for i, uris in manifest.iter_chunks({0, 2})] == [
        (0, ["/0.jpg", "/1.jpg", "/2.jpg", "/3.jpg"]), (2, ["/8.jpg", "/9.jpg"])
    ]
    grown = manifest.appended(pa.array(["/new-a.jpg", "/new-b.jpg", "/new-c.jpg"]), chunk_size=2)
    assert grown.spans() == {0: (0, 4), 1: (4, 4), 2: (8, 2), 3: (10, 2), 4: (12, 1)}
    assert grown.chunk_uris(grown.spans()[4]).to_pylist() == ["/new-c.jpg"]
    # a chunk's URIs travel alone: its buffers are its own, not the manifest's
    assert grown.chunk_uris(grown.spans()[1]).buffers()[2].size < grown.uris.chunks[0].buffers()[2].size


def test_format_1_manifest_gets_chunk_ids_from_the_chunk_size():
    manifest = from_table(pa.table({"uri": ["/a", "/b", "/c"]}), chunk_size=2)
    assert manifest.table.column("chunk_id").to_pylist() == [0, 0, 1]


def test_diff_listing_gives_new_in_listing_order_and_gone_in_stored_order():
    stored = pa.chunked_array([["/c", "/a"], ["/b", "/d"]])
    new, gone = diff_listing(stored, pa.array(["/a", "/b", "/e", "/f"]))
    assert new.to_pylist() == ["/e", "/f"] and gone.to_pylist() == ["/c", "/d"]


SCALE_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    import numpy as np, pyarrow as pa, pyarrow.compute as pc, pyarrow.parquet as pq
    from raysel.manifest import Manifest, diff_listing, from_table
    from raysel.process_memory import peak_rss_bytes

    def uris(prefix, ids):
        digits = pc.utf8_lpad(pc.cast(pa.array(ids), pa.string()), 8, "0")
        return pc.binary_join_element_wise(prefix, digits, ".jpg", "")

    folder, rows, chunk_size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if sys.argv[4] == "make":  # the stored manifest and a refreshed listing: every 1000th gone, 10k new
        pq.write_table(Manifest.of(uris("s3://b/", np.arange(rows)), chunk_size).table, f"{folder}/manifest.parquet")
        kept = uris("s3://b/", np.flatnonzero(np.arange(rows) % 1000 != 7))
        listed = pa.concat_arrays([kept, uris("s3://b/n", np.arange(10_000))])
        pq.write_table(pa.table({"uri": listed.take(pc.sort_indices(listed))}), f"{folder}/listed.parquet")
        sys.exit(0)

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()

    baseline = rss()
    manifest = from_table(pq.read_table(f"{folder}/manifest.parquet"), None)
    spans = manifest.spans()
    rows_seen = sum(len(manifest.chunk_uris(span)) for span in spans.values())  # every chunk, as a slice
    listed = pq.read_table(f"{folder}/listed.parquet").column("uri")
    new, gone = diff_listing(manifest.uris, listed)
    del listed
    grown = manifest.appended(new, chunk_size)
    pq.write_table(grown.table, f"{folder}/refreshed.parquet")
    peak = peak_rss_bytes()  # not ru_maxrss: a vfork-started child inherits its parent's (pytest's) peak there
    print(json.dumps({"rows": rows_seen, "chunks": len(spans), "new": len(new), "gone": len(gone),
                      "grown": grown.num_rows, "growth": peak - baseline,
                      "first_gone": gone[0].as_py(), "last_new": new[len(new) - 1].as_py()}))
    """
)


def test_ten_million_row_manifest_is_read_chunked_and_refreshed_in_bounded_memory(tmp_path):
    rows, chunk_size = 10_000_000, 4096
    run = [sys.executable, "-c", SCALE_SCRIPT, str(tmp_path), str(rows), str(chunk_size)]
    subprocess.run([*run, "make"], check=True, timeout=120)
    done = subprocess.run([*run, "measure"], check=True, timeout=120, capture_output=True, text=True)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    gone = len(range(7, rows, 1000))
    assert figures["rows"] == rows and figures["chunks"] == -(-rows // chunk_size)
    assert figures["gone"] == gone and figures["new"] == 10_000
    assert figures["first_gone"] == "s3://b/00000007.jpg" and figures["last_new"] == "s3://b/n00009999.jpg"
    assert figures["grown"] == rows + 10_000
    # 10M Python strings alone take ~0.8 GB and a set of them as much again; the Arrow path stays well below.
    assert figures["growth"] < 1.5 * 2**30, f"peak RSS grew by {figures['growth'] / 2**30:.2f} GiB"
    refreshed = pq.read_table(tmp_path / "refreshed.parquet")
    chunk_ids = refreshed.column("chunk_id").to_numpy()
    assert np.all(np.diff(chunk_ids) >= 0) and chunk_ids[-1] == -(-rows // chunk_size) + -(-10_000 // chunk_size) - 1
