"""Column names, file names and Arrow schemas of everything raysel reads or writes.

One place to look when another tool wants to write a feature store we can read,
or read a selection we wrote. `docs/feature-store.md` explains the same layout.
"""
from __future__ import annotations

import pyarrow as pa

# 2: the manifest has a chunk_id column (chunks can be appended by a refresh). Version 1 stores
# (uri only; chunk = row // chunk_size) are read and migrated by `raysel featurize`.
STORE_FORMAT_VERSION = 2

# --- feature store layout (directory, local or s3://) ---
STORE_METADATA_FILE = "_raysel_store.json"  # model, tau, K, image size, dims, status
STORE_MANIFEST_FILE = "_manifest.parquet"  # every input uri and its work chunk (chunk_id), in chunk order
STORE_REMOVED_FILE = "_removed.parquet"  # uris in the store whose source object was gone at the last refresh
STORE_SUCCESS_FILE = "_SUCCESS"  # written last: the store is complete
SHARDS_DIR = "shards"  # part-XXXXXX.parquet, one per finished work chunk
ERRORS_DIR = "errors"  # part-XXXXXX.parquet, images that could not be used
RESOLVED_CONFIG_FILE = "_config.json"  # the resolved config of the run that wrote the store

# --- columns ---
URI = "uri"
EMBEDDING = "embedding"  # list<float32> [D]: the global (class-token) embedding
CLUSTERS = "clusters"  # list<list<float32>> [K][D]: knowledge clusters (fixed-size lists accepted)
NUM_KEPT_PATCHES = "num_kept_patches"  # int32: patches kept by the attention threshold
PRETEXT_LOSS = "pretext_loss"  # float32: PT4AL rotation loss (optional)
ERROR = "error"  # string: why an image could not be used
LABEL = "label"  # labels files: uri -> label

# --- selection output ---
RANK = "rank"  # int64, 0-based pick order
SCORE = "score"  # float64, distance that won the pick; null for a random first pick

ERRORS_SCHEMA = pa.schema([(URI, pa.string()), (ERROR, pa.string())])
SELECTION_SCHEMA = pa.schema([(URI, pa.string()), (RANK, pa.int64()), (SCORE, pa.float64())])


def feature_schema(with_pretext_loss: bool = False) -> pa.Schema:
    """Schema of the shards `raysel featurize` writes."""
    fields = [
        (URI, pa.string()),
        (EMBEDDING, pa.list_(pa.float32())),
        (CLUSTERS, pa.list_(pa.list_(pa.float32()))),
        (NUM_KEPT_PATCHES, pa.int32()),
    ]
    if with_pretext_loss:
        fields.append((PRETEXT_LOSS, pa.float32()))
    return pa.schema(fields)
