"""The featurize stage: image URIs -> decode (CPU tasks) -> ViT (actor pool) -> K-Means (actor pool) -> shards.

Work is cut into chunks of `chunk_size` URIs, in the order of the store's
manifest. A chunk becomes one shard, written atomically once all its rows are
back, so a rerun after a kill skips the chunks whose shard exists and never
duplicates a row. Ray Data streams the rest with bounded memory.
"""
from __future__ import annotations

import logging
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from raysel import __version__, schema, storage
from raysel.config import FeaturizeConfig, RayConfig
from raysel.images import DecodeBatch, list_images
from raysel.store import FeatureStore, FeatureStoreError, chunk_id_of, shard_name

log = logging.getLogger(__name__)

CHUNK_ID = "chunk_id"
# Settings that define what a store's vectors mean: a resumed run must match them.
IDENTITY_KEYS = ("model", "weights", "random_init", "tau", "clusters", "image_size", "source", "pretext", "seed")


@dataclass
class FeaturizeSummary:
    store: str
    images: int  # every input image
    featurized: int  # rows in the store
    failed: int  # rows in the errors table
    processed_this_run: int
    seconds: float
    images_per_second: float

    def lines(self) -> str:
        return (
            f"feature store: {self.store}\n"
            f"  images: {self.images}  featurized: {self.featurized}  failed: {self.failed} "
            f"(see {schema.ERRORS_DIR}/)\n"
            f"  this run: {self.processed_this_run} images in {self.seconds:.1f} s "
            f"({self.images_per_second:.1f} images/s)"
        )


def model_input_spec(config: FeaturizeConfig):
    """Image size and normalisation of the model, without loading weights."""
    import timm
    import torch

    from raysel.embed.backbone import BackboneError, input_spec

    if not timm.is_model(config.model):
        raise BackboneError(f"unknown timm model {config.model!r}; see timm.list_models('vit*')")
    with torch.device("meta"):
        model = timm.create_model(config.model, pretrained=False)
    return input_spec(model)


def featurize(config: FeaturizeConfig, ray_config: RayConfig | None = None, progress: bool = True) -> FeaturizeSummary:
    """Run (or resume) `raysel featurize`. Returns counts and throughput.

    Raises StorageError / ManifestError / FeatureStoreError / BackboneError with a
    message naming the problem for bad sources, stores or models.
    """
    from raysel.runtime import ensure_ray

    config.validate()
    started = time.time()
    store = FeatureStore(config.out, config.storage())
    spec = model_input_spec(config)
    identity = {
        "model": config.model,
        "weights": config.weights,
        "random_init": config.random_init,
        "tau": config.tau,
        "clusters": config.clusters,
        "image_size": spec.image_size,
        "source": config.source,
        "pretext": config.pretext,
        "seed": config.seed,
        **config.fidelity_identity(),  # K-Means rule, precision: only when not the defaults (older stores match)
    }
    uris, chunk_size = _open_or_create(store, config, identity)
    chunks = {i: uris[start : start + chunk_size] for i, start in enumerate(range(0, len(uris), chunk_size))}
    done = {chunk_id_of(u) for u in store.shard_uris()}
    pending = {i: c for i, c in chunks.items() if i not in done}
    processed = sum(len(c) for c in pending.values())
    if pending:
        log.info("featurizing %d images in %d chunks (%d chunks already done)", processed, len(pending), len(done))
        ensure_ray(ray_config)
        _run_chunks(store, config, spec, pending, progress)
    featurized, failed = store.num_rows(), store.read_errors().num_rows
    if featurized + failed != len(uris):
        raise FeatureStoreError(
            f"{store.uri}: {featurized} rows + {failed} errors != {len(uris)} images in the manifest"
        )
    seconds = time.time() - started
    summary = FeaturizeSummary(
        store=store.uri,
        images=len(uris),
        featurized=featurized,
        failed=failed,
        processed_this_run=processed,
        seconds=seconds,
        images_per_second=processed / seconds if seconds > 0 else 0.0,
    )
    storage.write_json_atomic(store.path(schema.RESOLVED_CONFIG_FILE), asdict(config), store.options)
    store.mark_complete({"summary": asdict(summary), "raysel_version": __version__})
    return summary


_FIDELITY_KEYS = {"kmeans_init", "kmeans_stop", "kmeans_empty", "precision"}  # FeaturizeConfig.fidelity_identity


def _open_or_create(store: FeatureStore, config: FeaturizeConfig, identity: dict[str, Any]) -> tuple[list[str], int]:
    """The store's manifest of URIs and chunk size; lists the source only on the first run."""
    manifest_uri = store.path(schema.STORE_MANIFEST_FILE)
    if store.exists():
        metadata = store.metadata()
        mismatched = {k: (metadata.get(k), v) for k, v in identity.items() if metadata.get(k) != v}
        for k in _FIDELITY_KEYS:  # a store written with a non-default rule, a run asking for the default
            if k in metadata and k not in identity:
                mismatched[k] = (metadata[k], "the default")
        if mismatched:
            details = ", ".join(f"{k}: store has {old!r}, run asks {new!r}" for k, (old, new) in mismatched.items())
            raise FeatureStoreError(f"{store.uri} was written with other settings ({details}); use a new --out")
        try:
            uris = storage.read_parquet(manifest_uri, store.options, columns=[schema.URI]).column(schema.URI).to_pylist()
        except FileNotFoundError as exc:
            raise FeatureStoreError(f"{store.uri}: {schema.STORE_MANIFEST_FILE} is missing; the store is damaged") from exc
        return uris, int(metadata["chunk_size"])
    uris = list_images(config.source, config.storage())
    storage.write_parquet_atomic(pa.table({schema.URI: pa.array(uris, pa.string())}), manifest_uri, store.options)
    store.write_metadata(
        {
            "format_version": schema.STORE_FORMAT_VERSION,
            "created": time.time(),
            "raysel_version": __version__,
            "chunk_size": config.chunk_size,
            "images": len(uris),
            **identity,
        }
    )
    return uris, config.chunk_size


def _run_chunks(store: FeatureStore, config: FeaturizeConfig, spec, pending: dict[int, list[str]], progress: bool) -> None:
    import ray
    from ray.data import ActorPoolStrategy

    from raysel.cluster.knowledge_clusters import KnowledgeClusterer
    from raysel.embed.featurizer import Featurizer
    from raysel.runtime import cluster_gpus

    blocks = [
        pa.table({schema.URI: pa.array(uris, pa.string()), CHUNK_ID: pa.array([chunk_id] * len(uris), pa.int64())})
        for chunk_id, uris in sorted(pending.items())
    ]
    gpus = cluster_gpus()
    model_actors = config.model_actors or max(gpus, 1)
    # With --pretext, a GPU hosts one Featurizer and one PretextScorer actor.
    model_resources = {"num_gpus": 0.5 if config.pretext else 1, "num_cpus": 1} if gpus else {"num_cpus": 1}
    dataset = (
        ray.data.from_arrow(blocks)
        .map_batches(
            DecodeBatch(spec.image_size, config.max_image_pixels, config.storage(), config.decode_threads),
            batch_size=config.batch_size,
            num_cpus=0.5,
        )
    )
    if config.pretext:  # PT4AL: the rotation loss needs `image`, which the Featurizer drops
        from raysel.pretext.checkpoints import absolute_uri, load_model
        from raysel.pretext.scorer import PretextScorer

        load_model(config.pretext, config.storage())  # fail here, with the reason, not in an actor
        dataset = dataset.map_batches(
            PretextScorer,
            fn_constructor_kwargs={"model_uri": absolute_uri(config.pretext), "storage_options": config.storage()},
            batch_size=config.batch_size,
            compute=ActorPoolStrategy(size=model_actors),
            **model_resources,
        )
    dataset = (
        dataset.map_batches(
            Featurizer,
            fn_constructor_kwargs={
                "model_name": config.model,
                "weights": config.weights,
                "random_init": config.random_init,
                "tau": config.tau,
                "storage_options": config.storage(),
                "seed": config.seed,
                "precision": config.precision,
            },
            batch_size=config.batch_size,
            compute=ActorPoolStrategy(size=model_actors),
            **model_resources,
        )
        .map_batches(
            KnowledgeClusterer,
            fn_constructor_kwargs={
                "clusters": config.clusters, "max_iters": config.kmeans_iters, "tol": config.kmeans_tol,
                "init": config.kmeans_init, "stop": config.kmeans_stop, "empty": config.kmeans_empty, "seed": config.seed,
            },
            batch_size=max(config.batch_size, 128),
            compute=ActorPoolStrategy(size=config.kmeans_actors),
            num_cpus=0.25,
        )
    )
    writer = _ChunkWriter(store, {chunk_id: len(uris) for chunk_id, uris in pending.items()})
    bar = _progress_bar(sum(len(u) for u in pending.values()), progress)
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        bar.update(writer.add(batch))
    bar.close()
    if writer.open_chunks():
        raise FeatureStoreError(f"chunks {writer.open_chunks()[:10]} did not come back complete")


class _ChunkWriter:
    """Collects rows per chunk and writes a chunk's shard (and errors) the moment it is complete."""

    def __init__(self, store: FeatureStore, expected_rows: dict[int, int]):
        self.store = store
        self.expected_rows = dict(expected_rows)
        self.parts: dict[int, list[dict[str, np.ndarray]]] = defaultdict(list)
        self.received: dict[int, int] = defaultdict(int)

    def add(self, batch: dict[str, np.ndarray]) -> int:
        chunk_ids = batch[CHUNK_ID]
        for chunk_id in np.unique(chunk_ids):
            rows = chunk_ids == chunk_id
            self.parts[int(chunk_id)].append({k: v[rows] for k, v in batch.items()})
            self.received[int(chunk_id)] += int(rows.sum())
            if self.received[int(chunk_id)] == self.expected_rows[int(chunk_id)]:
                self._write(int(chunk_id))
        return len(chunk_ids)

    def open_chunks(self) -> list[int]:
        return sorted(self.parts)

    def _write(self, chunk_id: int) -> None:
        parts = self.parts.pop(chunk_id)
        columns = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
        order = np.argsort(columns[schema.URI].astype(str), kind="stable")  # deterministic row order
        columns = {key: value[order] for key, value in columns.items()}
        failed = columns[schema.ERROR].astype(str) != ""
        if failed.any():
            errors = pa.table(
                {
                    schema.URI: pa.array(columns[schema.URI][failed].astype(str).tolist(), pa.string()),
                    schema.ERROR: pa.array(columns[schema.ERROR][failed].astype(str).tolist(), pa.string()),
                },
                schema=schema.ERRORS_SCHEMA,
            )
            storage.write_parquet_atomic(errors, self.store.path(schema.ERRORS_DIR, shard_name(chunk_id)), self.store.options)
        good = ~failed
        table = features_table(
            uris=columns[schema.URI][good].astype(str).tolist(),
            embedding=np.asarray(columns[schema.EMBEDDING][good], dtype=np.float32),
            clusters=np.asarray(columns[schema.CLUSTERS][good], dtype=np.float32),
            num_kept_patches=np.asarray(columns[schema.NUM_KEPT_PATCHES][good], dtype=np.int32),
            pretext_loss=np.asarray(columns[schema.PRETEXT_LOSS][good], dtype=np.float32)
            if schema.PRETEXT_LOSS in columns
            else None,
        )
        # The shard is the chunk's commit marker, so it is written last.
        storage.write_parquet_atomic(table, self.store.path(schema.SHARDS_DIR, shard_name(chunk_id)), self.store.options)


def features_table(
    uris: list[str],
    embedding: np.ndarray,
    clusters: np.ndarray,
    num_kept_patches: np.ndarray,
    pretext_loss: np.ndarray | None = None,
) -> pa.Table:
    """Rows in the store's schema from dense arrays: embedding [N, D], clusters [N, K, D]."""
    n, dim = embedding.shape if embedding.ndim == 2 else (len(uris), 0)
    k = clusters.shape[1] if clusters.ndim == 3 else 0
    cluster_dim = clusters.shape[2] if clusters.ndim == 3 else 0

    def nested(values: np.ndarray, *widths: int) -> pa.Array:
        array: pa.Array = pa.array(values.reshape(-1), pa.float32())
        for width in reversed(widths):
            count = len(array) // width if width else 0
            array = pa.ListArray.from_arrays(pa.array(np.arange(count + 1, dtype=np.int32) * width), array)
        return array

    columns = {
        schema.URI: pa.array(uris, pa.string()),
        schema.EMBEDDING: nested(embedding, dim) if n else pa.array([], pa.list_(pa.float32())),
        schema.CLUSTERS: nested(clusters, k, cluster_dim) if n else pa.array([], pa.list_(pa.list_(pa.float32()))),
        schema.NUM_KEPT_PATCHES: pa.array(num_kept_patches, pa.int32()),
    }
    if pretext_loss is not None:
        columns[schema.PRETEXT_LOSS] = pa.array(pretext_loss, pa.float32())
    return pa.table(columns, schema=schema.feature_schema(with_pretext_loss=pretext_loss is not None))


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc="featurize", disable=not enabled, file=sys.stderr, smoothing=0.1)
