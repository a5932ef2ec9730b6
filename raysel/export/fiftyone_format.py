"""`--format fiftyone`: a dataset directory that FiftyOne loads (its LegacyFiftyOneDataset format).

    OUT/metadata.json   {"media_type": "image", "info": {"raysel_selection": ..., "method": ...}}
    OUT/samples.json    {"samples": [{"filepath": "/abs/or/s3/uri.jpg", "tags": ["raysel"], "uri": ...,
                                      "rank": 0, "score": 0.71, "method": "geal", "embedding": [...]}, ...]}

Load it with

    import fiftyone as fo
    dataset = fo.Dataset.from_dir("OUT", dataset_type=fo.types.LegacyFiftyOneDataset, name="picks")

With `--embeddings` each sample carries its store embedding (field `embedding`, [D] floats) for
FiftyOne Brain: `fob.compute_similarity(dataset, embeddings="embedding")`,
`fob.compute_visualization(dataset, embeddings="embedding")`. `filepath` is the store's uri
(open-source FiftyOne opens local paths; s3:// media needs FiftyOne's cloud media support).
"""
from __future__ import annotations

import json

import numpy as np

from raysel import schema, storage
from raysel.config import ExportConfig
from raysel.export.errors import ExportError
from raysel.export.picks import Picks
from raysel.store import FeatureStore, FeatureStoreError, vectors_of

SAMPLES_FILE = "samples.json"
METADATA_FILE = "metadata.json"


def store_embeddings(store_uri: str, uris: list[str], config: ExportConfig) -> dict[str, list[float]]:
    """{uri: embedding [D]} for `uris`, read shard by shard from the store; ExportError for missing ones."""
    store = FeatureStore(store_uri, config.storage())
    store.metadata()  # a clear error when it is not a store
    wanted = set(uris)
    found: dict[str, list[float]] = {}
    for table in store.iter_tables(columns=[schema.URI, schema.EMBEDDING]):
        rows = [i for i, uri in enumerate(table.column(schema.URI).to_pylist()) if uri in wanted]
        if rows:
            part = table.take(rows)
            vectors = vectors_of(part.column(schema.EMBEDDING), 2)
            for uri, vector in zip(part.column(schema.URI).to_pylist(), vectors):
                found[uri] = np.asarray(vector, dtype=np.float64).round(7).tolist()
    missing = [u for u in uris if u not in found]
    if missing:
        raise ExportError(f"--embeddings: the store {store_uri} has no row for {len(missing)} pick(s), e.g. {missing[0]}")
    return found


def build_fiftyone(picks: Picks, config: ExportConfig) -> dict[str, bytes]:
    embeddings: dict[str, list[float]] = {}
    if config.embeddings:
        store_uri = config.store or picks.store
        if not store_uri:
            raise ExportError("--embeddings needs --store STORE (the selection does not record its store)")
        try:
            embeddings = store_embeddings(store_uri, picks.uris, config)
        except FeatureStoreError as exc:
            raise ExportError(f"--embeddings: {exc}") from exc
    samples = []
    for uri, rank, score in zip(picks.uris, picks.ranks, picks.scores):
        sample = {"filepath": uri, "tags": ["raysel"], "uri": uri, "rank": rank, "score": score}
        if picks.method:
            sample["method"] = picks.method
        if embeddings:
            sample["embedding"] = embeddings[uri]
        samples.append(sample)
    metadata = {
        "media_type": "image",
        "info": {"raysel_selection": picks.source, "method": picks.method, "store": config.store or picks.store},
    }
    return {
        storage.join(config.out, METADATA_FILE): json.dumps(metadata, indent=1).encode("utf-8"),
        storage.join(config.out, SAMPLES_FILE): json.dumps({"samples": samples}).encode("utf-8"),
    }
