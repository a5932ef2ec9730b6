"""The featurize stage: image URIs -> decode (CPU tasks) -> ViT (actor pool) -> K-Means -> part writers -> shards.

Work is cut into chunks of `chunk_size` URIs, recorded in the store's manifest
(`uri`, `chunk_id`). The last Ray Data stage writes each batch's rows as part
files on the workers and sends the driver only (chunk_id, row count); once a
chunk's count is reached the run's committer actor runs `commit_chunk`, which turns its parts into the chunk's
shard, atomically, after checking its URIs against the manifest's
(`raysel.shard_writer`). So the driver holds no feature rows, a rerun after a
kill skips the chunks whose shard exists, and no row is ever duplicated.

Before anything starts, `runtime.plan_featurize` sizes every stage's
reservation to the cluster (or fails naming the flag to change), and a
watchdog ends a run that makes no progress for `stall_timeout` seconds.

A rerun on a source that gained images appends them as new chunks (refresh);
images gone from the source are reported and listed in `_removed.parquet`.
"""
from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from raysel import __version__, schema, storage
from raysel.config import AUTO_FEATURIZE_FIELDS, FeaturizeConfig, RayConfig, to_dict
from raysel.images import DecodeBatch, list_image_uris
from raysel.manifest import Manifest, diff_listing, from_table
from raysel.shard_writer import CHUNK_ID, PARTS_DIR, ROWS, PartWriter, commit_chunk
from raysel.store import FeatureStore, FeatureStoreError, chunk_id_of

log = logging.getLogger(__name__)

STORE_LEASE_FILE = "_lease.json"  # held by the run writing the store (raysel.storage.Lease)
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
    added_this_run: int = 0  # images new in the source since the store was last refreshed
    removed_from_source: int = 0  # images in the store whose source object is gone (see _removed.parquet)
    settings: str = ""  # this run's batch size, chunk size, actors and reservations ("(auto)": chosen from the cluster)

    def lines(self) -> str:
        text = (
            f"feature store: {self.store}\n"
            f"  images: {self.images}  featurized: {self.featurized}  failed: {self.failed} "
            f"(see {schema.ERRORS_DIR}/)\n"
            f"  this run: {self.processed_this_run} images in {self.seconds:.1f} s "
            f"({self.images_per_second:.1f} images/s)"
        )
        if self.settings:
            text += f"\n  settings: {self.settings}"
        if self.added_this_run:
            text += f"\n  refresh: {self.added_this_run} new images in the source, appended as new chunks"
        if self.removed_from_source:
            text += (
                f"\n  refresh: {self.removed_from_source} images of the store are gone from the source "
                f"(rows kept; listed in {schema.STORE_REMOVED_FILE})"
            )
        return text


def model_input_spec(config: FeaturizeConfig):
    """Image size and normalisation of the model, without loading weights."""
    from raysel.embed.backbone import input_spec

    return input_spec(_meta_model(config))


def _meta_model(config: FeaturizeConfig):
    """The timm model of `config.model` on the meta device: its shapes, no weights and no memory."""
    import timm
    import torch

    from raysel.embed.backbone import BackboneError

    if not timm.is_model(config.model):
        raise BackboneError(f"unknown timm model {config.model!r}; see timm.list_models('vit*')")
    with torch.device("meta"):
        return timm.create_model(config.model, pretrained=False)


def model_shape(config: FeaturizeConfig):
    """The model's image size, patch tokens per image and embedding dim, without loading weights (for the defaults)."""
    from raysel.embed.backbone import input_spec
    from raysel.runtime import ModelShape

    model = _meta_model(config)
    size = input_spec(model).image_size
    patches = getattr(getattr(model, "patch_embed", None), "num_patches", None) or (size // 16) ** 2
    return ModelShape(image_size=size, patches=int(patches), dim=int(getattr(model, "embed_dim", 384)),
                      clusters=config.clusters)


def resolve_resources(config: FeaturizeConfig, images: int | None):
    """The run's concrete batch size, chunk size, actors and reservations on the connected Ray cluster
    (`runtime.resolve_featurize`): the config's values where set, the cluster-sized defaults otherwise."""
    from raysel.runtime import ClusterShape, resolve_featurize

    return resolve_featurize(
        ClusterShape.of_ray(), model_shape(config), images,
        batch_size=config.batch_size, chunk_size=config.chunk_size, model_actors=config.model_actors,
        kmeans_actors=config.kmeans_actors, decode_threads=config.decode_threads, pretext=bool(config.pretext),
        remote_source=storage.is_s3(config.source),
    )


def featurize(config: FeaturizeConfig, ray_config: RayConfig | None = None, progress: bool = True) -> FeaturizeSummary:
    """Run, resume or refresh `raysel featurize`. Returns counts and throughput.

    Raises StorageError / ManifestError / FeatureStoreError / BackboneError with a
    message naming the problem for bad sources, stores or models; ResourcePlanError
    when the stages cannot fit the cluster; StallError after `stall_timeout`
    seconds without progress; LeaseError when another run is writing the store;
    StorageWriteError (naming the path) when a write fails.
    """
    config.validate()
    started = time.time()
    store = FeatureStore(config.out, config.storage())
    spec = model_input_spec(config)
    if not store.is_complete():
        from raysel.embed.backbone import load_backbone

        # The model and its weights (hub, file or random init) fail here, with the reason,
        # not in a model actor after Ray and the pipeline started.
        load_backbone(config.model, config.weights, config.random_init, config.storage(), config.seed)
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
    # One run per store: a second featurize into it fails instead of interleaving shards.
    with storage.Lease(store.path(STORE_LEASE_FILE), store.options, what=f"feature store {store.uri}"):
        return _featurize_under_lease(config, ray_config, progress, store, spec, identity, started)


def _featurize_under_lease(config, ray_config, progress, store, spec, identity, started) -> FeaturizeSummary:
    from raysel.runtime import ensure_ray

    def chunk_size_for(images: int) -> int:  # a new store without --chunk-size: chosen from the cluster
        ensure_ray(ray_config)
        return resolve_resources(config, images).chunk_size

    manifest, added, removed = _open_or_create(store, config, identity, chunk_size_for)
    done = {chunk_id_of(u) for u in store.shard_uris()}
    # Each pending chunk's URIs as an Arrow slice of the manifest: no Python string per image.
    pending = {i: manifest.chunk_uris(span) for i, span in manifest.spans().items() if i not in done}
    processed = sum(len(c) for c in pending.values())
    resolved = replace(config, chunk_size=store.metadata().get("chunk_size", config.chunk_size))  # the store's chunks win
    resources = None
    if pending:
        log.info("featurizing %d images in %d chunks (%d chunks already done)", processed, len(pending), len(done))
        ensure_ray(ray_config)
        resources = resolve_resources(resolved, manifest.num_rows)
        if config.chunk_size is None:  # the store's chunk size, chosen by the rules when it was created
            resources = replace(resources, auto=(*resources.auto, "chunk_size"))
        resolved = replace(resolved, batch_size=resources.batch_size, model_actors=resources.model_actors,
                           kmeans_actors=resources.kmeans_actors, decode_threads=resources.decode_threads)
        log.info("featurize settings: %s", resources.describe())
        for note in resources.notes:
            log.warning("%s", note)
        if progress:  # what "auto" chose, before the progress bar
            print(f"featurize: {resources.describe()}", file=sys.stderr, flush=True)
        _run_chunks(store, resolved, spec, pending, progress, resources)
    featurized, failed = store.num_rows(), store.read_errors().num_rows
    if featurized + failed != manifest.num_rows:
        raise FeatureStoreError(
            f"{store.uri}: {featurized} rows + {failed} errors != {manifest.num_rows} images in the manifest"
        )
    seconds = time.time() - started
    summary = FeaturizeSummary(
        store=store.uri,
        images=manifest.num_rows,
        featurized=featurized,
        failed=failed,
        processed_this_run=processed,
        seconds=seconds,
        images_per_second=processed / seconds if seconds > 0 else 0.0,
        added_this_run=added,
        removed_from_source=removed,
        settings=resources.describe() if resources is not None else "",
    )
    storage.write_json_atomic(store.path(schema.RESOLVED_CONFIG_FILE), _resolved_config(store, resolved), store.options)
    store.mark_complete({"summary": asdict(summary), "raysel_version": __version__,
                         **({"resources": resources.as_dict()} if resources is not None else {})})
    return summary


def _resolved_config(store: FeatureStore, resolved: FeaturizeConfig) -> dict[str, Any]:
    """The config to record: every value concrete; a run with nothing to do keeps what the last run chose."""
    values = to_dict(resolved)
    if any(values[name] is None for name in AUTO_FEATURIZE_FIELDS):
        try:
            earlier = storage.read_json(store.path(schema.RESOLVED_CONFIG_FILE), store.options)
        except (FileNotFoundError, ValueError):
            earlier = {}
        for name in AUTO_FEATURIZE_FIELDS:
            if values[name] is None and earlier.get(name) is not None:
                values[name] = earlier[name]
    return values


_FIDELITY_KEYS = {"kmeans_init", "kmeans_stop", "kmeans_empty", "precision"}  # FeaturizeConfig.fidelity_identity


def read_store_manifest(store: FeatureStore, metadata: dict[str, Any]) -> Manifest:
    """The manifest of an existing store; a format-1 manifest (URIs only) gets chunk ids row // chunk_size."""
    version = metadata.get("format_version", 1)
    if not isinstance(version, int) or version > schema.STORE_FORMAT_VERSION:
        raise FeatureStoreError(
            f"{store.uri} was written in store format {version!r}, newer than this raysel {__version__} reads "
            f"(format {schema.STORE_FORMAT_VERSION}); upgrade raysel"
        )
    try:
        table = storage.read_parquet(store.path(schema.STORE_MANIFEST_FILE), store.options)
    except FileNotFoundError as exc:
        raise FeatureStoreError(f"{store.uri}: {schema.STORE_MANIFEST_FILE} is missing; the store is damaged") from exc
    # Format 1 (URIs only): fixed-size chunks in manifest order.
    return from_table(table, int(metadata["chunk_size"]) if "chunk_size" in metadata else None)


def _open_or_create(
    store: FeatureStore, config: FeaturizeConfig, identity: dict[str, Any], chunk_size_for=None
) -> tuple[Manifest, int, int]:
    """The store's manifest after listing the source: (manifest, images added, images gone from the source).

    A new store gets the whole listing. An existing one (same settings required)
    gets the source's new URIs appended as new chunks; URIs gone from the source
    are counted and written to `_removed.parquet` (their rows stay). A new store's chunk size is
    `config.chunk_size`, or `chunk_size_for(images)` when that is None ("auto").
    """
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
        manifest = read_store_manifest(store, metadata)
        listed = list_image_uris(config.source, config.storage())
        new, gone = diff_listing(manifest.uris, listed)  # Arrow hash joins, not Python sets
        del listed
        if len(gone):
            log.warning("%d images of %s are gone from %s (e.g. %s); their rows stay, listed in %s",
                        len(gone), store.uri, config.source, gone[0].as_py(), schema.STORE_REMOVED_FILE)
            storage.write_parquet_atomic(pa.table({schema.URI: gone}),
                                         store.path(schema.STORE_REMOVED_FILE), store.options)
        elif storage.exists(store.path(schema.STORE_REMOVED_FILE), store.options):
            storage.remove_tree(store.path(schema.STORE_REMOVED_FILE), store.options)
        migrate = metadata.get("format_version", 1) < schema.STORE_FORMAT_VERSION
        if len(new) or migrate:
            chunk_size = int(metadata["chunk_size"])
            manifest = manifest.appended(new, chunk_size)
            if len(new):
                log.info("refresh: %d new images in %s, appended as %d new chunks", len(new), config.source,
                         -(-len(new) // chunk_size))
                # Incomplete again until the new chunks are done; the manifest is the refresh's commit.
                storage.remove_tree(store.path(schema.STORE_SUCCESS_FILE), store.options)
            storage.write_parquet_atomic(manifest.table, manifest_uri, store.options)
            store.write_metadata({**metadata, "format_version": schema.STORE_FORMAT_VERSION, "images": manifest.num_rows})
        return manifest, len(new), len(gone)
    uris = list_image_uris(config.source, config.storage())
    chunk_size = config.chunk_size or chunk_size_for(len(uris))
    manifest = Manifest.of(uris, chunk_size)
    storage.write_parquet_atomic(manifest.table, manifest_uri, store.options)
    store.write_metadata(
        {
            "format_version": schema.STORE_FORMAT_VERSION,
            "created": time.time(),
            "raysel_version": __version__,
            "chunk_size": chunk_size,
            "images": manifest.num_rows,
            **identity,
        }
    )
    return manifest, 0, 0


def _run_chunks(store: FeatureStore, config: FeaturizeConfig, spec, pending: dict[int, pa.Array], progress: bool,
                resources) -> None:
    import ray
    from ray.data import ActorPoolStrategy

    from raysel.embed.featurizer import Featurizer, KMeansSettings

    plan = resources.plan
    log.info("resource plan: %s", plan.describe())
    if plan.scaled < 1:
        log.warning("the cluster is small for featurize: CPU reservations scaled by %.2f to fit (%s)",
                    plan.scaled, plan.describe())
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    if nodes > 1 and not storage.is_s3(store.uri):
        log.warning("the store %s is a local path and the cluster has %d nodes: workers write part files there, "
                    "so it must be a filesystem every node shares (NFS, ...); otherwise use an s3:// store",
                    store.uri, nodes)
    # Parts are leftovers of a killed run: an unfinished chunk is redone whole (a finished one has its shard).
    storage.remove_tree(store.path(PARTS_DIR), store.options)

    blocks = [
        pa.table({schema.URI: uris, CHUNK_ID: pa.array(np.full(len(uris), chunk_id, dtype=np.int64))})
        for chunk_id, uris in sorted(pending.items())
    ]
    extra_sizes: dict[str, int] = {}
    if config.pretext:  # PT4AL: decode at the pretext model's own size too, as its training did
        from raysel.pretext.checkpoints import absolute_uri, load_model
        from raysel.pretext.scorer import PRETEXT_IMAGE, PretextScorer

        _, pretext_spec, _ = load_model(config.pretext, config.storage())  # fail here, with the reason, not in an actor
        extra_sizes[PRETEXT_IMAGE] = pretext_spec.image_size
    dataset = ray.data.from_arrow(blocks)
    # A stage's own exception reaches the driver as itself (e.g. StorageUnavailableError from a
    # read), not as Ray Data's UserCodeException, whose cause does not survive pickling.
    dataset.context.raise_original_map_exception = True
    dataset = dataset.map_batches(
        DecodeBatch(spec.image_size, config.max_image_pixels, config.storage(), resources.decode_threads, extra_sizes,
                    cpus=plan.decode.num_cpus),
        batch_size=resources.batch_size,
        num_cpus=plan.decode.num_cpus,
    )
    if config.pretext:
        dataset = dataset.map_batches(
            PretextScorer,
            fn_constructor_kwargs={"model_uri": absolute_uri(config.pretext), "storage_options": config.storage()},
            batch_size=resources.batch_size,
            compute=ActorPoolStrategy(size=plan.pretext.count),
            num_cpus=plan.pretext.num_cpus,
            **({"num_gpus": plan.pretext.num_gpus} if plan.pretext.num_gpus else {}),
        )
    in_actor_kmeans = plan.kmeans is None
    dataset = dataset.map_batches(
        WritingFeaturizer if in_actor_kmeans else Featurizer,
        fn_constructor_kwargs={
            "model_name": config.model,
            "weights": config.weights,
            "random_init": config.random_init,
            "tau": config.tau,
            "storage_options": config.storage(),
            "seed": config.seed,
            "precision": config.precision,
            "torch_threads": resources.model_torch_threads,
            "kmeans": KMeansSettings(
                config.clusters, config.kmeans_iters, config.kmeans_tol,
                init=config.kmeans_init, stop=config.kmeans_stop, empty=config.kmeans_empty, seed=config.seed,
            ) if in_actor_kmeans else None,
            **({"store": store} if in_actor_kmeans else {}),
        },
        batch_size=resources.batch_size,
        compute=ActorPoolStrategy(size=plan.model.count),
        num_cpus=plan.model.num_cpus,
        **({"num_gpus": plan.model.num_gpus} if plan.model.num_gpus else {}),
    )
    if not in_actor_kmeans:
        dataset = dataset.map_batches(
            WritingKnowledgeClusterer,
            fn_constructor_kwargs={"store": store, "clusters": config.clusters, "max_iters": config.kmeans_iters,
                                   "tol": config.kmeans_tol, "init": config.kmeans_init, "stop": config.kmeans_stop,
                                   "empty": config.kmeans_empty, "seed": config.seed},
            batch_size=max(resources.batch_size, 128),
            compute=ActorPoolStrategy(size=plan.kmeans.count),
            num_cpus=plan.kmeans.num_cpus,
        )

    commit = start_committer(config.stall_timeout).commit  # the actor ends with the run (its last handle)
    expected = {chunk_id: len(uris) for chunk_id, uris in pending.items()}
    received: dict[int, int] = {chunk_id: 0 for chunk_id in pending}
    committing: dict[Any, int] = {}  # commit call -> chunk id
    incomplete: dict[int, list[str]] = {}
    bar = _progress_bar(sum(expected.values()), progress)

    def collect(timeout: float) -> None:
        while committing:
            ready, _ = ray.wait(list(committing), num_returns=len(committing), timeout=timeout)
            for ref in ready:
                chunk_id = committing.pop(ref)
                missing = ray.get(ref)
                if missing:
                    incomplete[chunk_id] = missing
            if not ready or timeout == 0:
                return

    try:
        for batch in watched(dataset.iter_batches(batch_size=None, batch_format="numpy"), config.stall_timeout):
            for chunk_id, rows in zip(batch[CHUNK_ID].tolist(), batch[ROWS].tolist()):
                received[chunk_id] += rows
                bar.update(rows)
                if received[chunk_id] == expected[chunk_id]:  # a retried batch counts again: checked in the commit
                    committing[commit.remote(store, chunk_id, pending[chunk_id].to_pylist())] = chunk_id
            collect(timeout=0)
    except Exception as exc:
        from raysel.runtime import remote_cause

        # Storage that stopped answering mid-read: the run stops (finished chunks kept), said in one line.
        unavailable = remote_cause(exc, storage.StorageUnavailableError)
        if unavailable is not None:
            raise unavailable from None
        raise
    bar.close()
    # Chunks whose count never matched (a retry counted twice, or rows lost): the commit checks the URI sets.
    for chunk_id, count in received.items():
        if count != expected[chunk_id]:
            committing[commit.remote(store, chunk_id, pending[chunk_id].to_pylist())] = chunk_id
    deadline = time.time() + (config.stall_timeout or float("inf"))
    while committing and time.time() < deadline:
        collect(timeout=min(5.0, max(deadline - time.time(), 0.01)))
    if committing:
        from raysel.runtime import StallError

        raise StallError(f"{len(committing)} chunk commits did not finish within --stall-timeout {config.stall_timeout:g} s")
    if incomplete:
        chunk_id, missing = sorted(incomplete.items())[0]
        raise FeatureStoreError(
            f"chunks {sorted(incomplete)[:10]} did not come back complete (chunk {chunk_id} has no row for "
            f"{len(missing)} URIs, e.g. {missing[0]}); rerun to redo them"
        )


COMMIT_THREADS = 4  # chunk commits (I/O: read parts, write the shard) in flight at once in the committer actor
# Tests only: the committer commits this many chunks, then holds every further commit (TEST_PAUSE_S),
# so a test can kill a run whose shards are partly written. Read by the driver, handed to the actor.
PAUSE_AFTER_COMMITS_ENV = "RAYSEL_FEATURIZE_TEST_PAUSE_AFTER_COMMITS"
TEST_PAUSE_S = 600.0


class ChunkCommitter:
    """Runs `commit_chunk` for the driver: one long-lived process for every chunk of a run."""

    def __init__(self, pause_after_commits: int = 0):
        self.pause_after_commits = pause_after_commits
        self.calls = 0
        self.lock = threading.Lock()

    def commit(self, store: FeatureStore, chunk_id: int, uris: list[str]) -> list[str]:
        if self.pause_after_commits:
            with self.lock:
                self.calls += 1
                hold = self.calls > self.pause_after_commits
            if hold:
                time.sleep(TEST_PAUSE_S)
        return commit_chunk(store, chunk_id, uris)

    def ready(self) -> bool:
        return True


COMMITTER_START_S = 60.0  # the least time the committer actor gets to start


def start_committer(stall_timeout: float):
    """The run's `ChunkCommitter` actor (0 CPU, restarted on failure), once it is up.

    One actor, not a 0-CPU task per chunk: while the stages held every CPU, Ray
    started a fresh worker process for almost every such task (python + ray +
    pyarrow imports, about 2 s of CPU each on 2 cores). It is up before any batch
    flows, so commits keep up from the first finished chunk (a crash loses at most
    the chunks in flight). Ray ends it when its last handle goes (the run's end).
    """
    import ray

    from raysel.runtime import StallError

    committer = ray.remote(ChunkCommitter).options(
        num_cpus=0, max_concurrency=COMMIT_THREADS, max_restarts=3, max_task_retries=3
    ).remote(int(os.environ.get(PAUSE_AFTER_COMMITS_ENV, "0") or 0))
    # Starting a process takes seconds: a --stall-timeout shorter than that bounds the batches, not this start.
    limit = max(stall_timeout, COMMITTER_START_S) if stall_timeout else None
    ready, _ = ray.wait([committer.ready.remote()], timeout=limit)
    if not ready:
        ray.kill(committer)
        raise StallError(f"the chunk committer actor did not start within {limit:g} s (--stall-timeout {stall_timeout:g} s)")
    return committer


def watched(batches: Iterator[Any], stall_timeout: float) -> Iterator[Any]:
    """`batches`, raising StallError when the next one takes more than `stall_timeout` seconds (0: never).

    The iterator runs in a helper thread, so a pipeline that waits forever (a
    stage that cannot be scheduled, a hung read) ends the run with a message.
    """
    from raysel.runtime import StallError

    handoff: queue.Queue = queue.Queue(maxsize=8)
    stop = threading.Event()
    end = object()

    def pump() -> None:
        try:
            for item in batches:
                while not stop.is_set():
                    try:
                        handoff.put((item, None), timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            handoff.put((end, None))
        except BaseException as exc:  # re-raised in the caller's thread
            handoff.put((end, exc))

    thread = threading.Thread(target=pump, name="raysel-featurize-pump", daemon=True)
    thread.start()
    try:
        while True:
            try:
                item, error = handoff.get(timeout=stall_timeout or None)
            except queue.Empty:
                raise StallError(
                    f"featurize made no progress for {stall_timeout:g} s (--stall-timeout): a stage is waiting for "
                    "resources or a read hangs; see the resource plan in the log, or raise --stall-timeout"
                ) from None
            if error is not None:
                raise error
            if item is end:
                return
            yield item
    finally:
        stop.set()


def _writing(stage: type) -> type:
    """`stage` whose output rows are written as part files where it runs; returns only (chunk_id, rows)."""

    class Writing(stage):  # type: ignore[misc, valid-type]
        def __init__(self, store: FeatureStore, **kwargs: Any):
            super().__init__(**kwargs)
            self.part_writer = PartWriter(store)

        def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return self.part_writer(super().__call__(batch))

    Writing.__name__ = Writing.__qualname__ = f"Writing{stage.__name__}"
    return Writing


class WritingKnowledgeClusterer:
    """The CPU K-Means actor, writing its rows' part files itself (built lazily: no torch import for the driver)."""

    def __new__(cls, store: FeatureStore, **kwargs: Any):
        from raysel.cluster.knowledge_clusters import KnowledgeClusterer

        return _writing(KnowledgeClusterer)(store, **kwargs)


class WritingFeaturizer:
    """The model actor with K-Means on its device (GPU clusters), writing its rows' part files itself."""

    def __new__(cls, store: FeatureStore, **kwargs: Any):
        from raysel.embed.featurizer import Featurizer

        return _writing(Featurizer)(store, **kwargs)


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
