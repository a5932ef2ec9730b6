"""Write a bring-your-own feature store of synthetic embeddings, shard by shard (bounded memory).

    .venv/bin/python benchmarks/make_byo_store.py /tmp/byo-1m --rows 1280000 --dims 384 --dtype float16
    .venv/bin/python benchmarks/make_byo_store.py /tmp/byo-200k --rows 200000 --dims 64

Columns: `uri`, `embedding` (fixed-size list of float16 or float32), `clusters` (the
embedding as K = 1 knowledge cluster, so geal runs on it), `pretext_loss` (float32, for
pt4al). Rows: `--classes` Gaussian blobs (centers N(0, 1), noise 0.7 per dimension),
seeded per shard. Also writes `<store>/../<name>-labels.csv`: `--labeled` images with
their blob as `label` (the label-aware methods train their linear head on them), and with
`--oracle` `<name>-oracle.csv`: every image's blob (`raysel simulate`'s labels).
`--split test` draws other images of the same blobs (other seeds, `s3://byo/test-...` uris):
a test split for `raysel simulate`.

    .venv/bin/python benchmarks/make_byo_store.py /tmp/byo-test --rows 20000 --split test --oracle
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from raysel import schema, storage
from raysel.store import FeatureStore, shard_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store")
    parser.add_argument("--rows", type=int, default=1_280_000)
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--rows-per-shard", type=int, default=100_000)
    parser.add_argument("--labeled", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="", help="'' (the pool) or a name: other images of the same blobs")
    parser.add_argument("--oracle", action="store_true", help="also write <store>-oracle.csv: every image's blob")
    args = parser.parse_args()
    started = time.time()
    centers = np.random.default_rng(args.seed).standard_normal((args.classes, args.dims)).astype(np.float32)
    store = FeatureStore(args.store)
    store.write_metadata({"format_version": schema.STORE_FORMAT_VERSION, "created": time.time(), "synthetic": vars(args)})
    arrow_type = pa.float16() if args.dtype == "float16" else pa.float32()
    labeled_rows = set(np.random.default_rng(args.seed + 1).choice(args.rows, size=min(args.labeled, args.rows), replace=False).tolist())
    labels: list[tuple[str, int]] = []
    prefix = f"s3://byo/{args.split}-" if args.split else "s3://byo/img-"
    split_seed = [int.from_bytes(args.split.encode(), "little")] if args.split else []  # the pool keeps its seeds
    base = Path(args.store.rstrip("/"))
    oracle = open(base.with_name(base.name + "-oracle.csv"), "w") if args.oracle else None
    if oracle:
        oracle.write("uri,label\n")
    for chunk, start in enumerate(range(0, args.rows, args.rows_per_shard)):
        stop = min(start + args.rows_per_shard, args.rows)
        rng = np.random.default_rng([args.seed, chunk, *split_seed])
        blob = rng.integers(0, args.classes, stop - start)
        vectors = (centers[blob] + 0.7 * rng.standard_normal((stop - start, args.dims), dtype=np.float32)).astype(args.dtype)
        uris = [f"{prefix}{i:08d}.jpg" for i in range(start, stop)]
        flat = pa.array(vectors.reshape(-1), arrow_type)
        embedding = pa.FixedSizeListArray.from_arrays(flat, args.dims)
        table = pa.table({
            schema.URI: pa.array(uris, pa.string()),
            schema.EMBEDDING: embedding,
            schema.CLUSTERS: pa.FixedSizeListArray.from_arrays(embedding, 1),
            schema.PRETEXT_LOSS: pa.array(rng.gamma(2.0, 1.0, stop - start).astype(np.float32)),
        })
        storage.write_parquet_atomic(table, store.path(schema.SHARDS_DIR, shard_name(chunk)), store.options)
        labels.extend((uris[i - start], int(blob[i - start])) for i in range(start, stop) if i in labeled_rows)
        if oracle:
            oracle.write("".join(f"{uri},{label}\n" for uri, label in zip(uris, blob.tolist())))
        print(f"shard {chunk}: rows {start}..{stop} ({time.time() - started:.0f}s)", flush=True)
    store.mark_complete({"rows": args.rows})
    if oracle:
        oracle.close()
    path = base.with_name(base.name + "-labels.csv")
    path.write_text("uri,label\n" + "".join(f"{uri},{label}\n" for uri, label in labels))
    print(f"wrote {args.rows} rows to {args.store} and {len(labels)} labels to {path} in {time.time() - started:.0f}s")


if __name__ == "__main__":
    main()
