"""Joining Ray: embedded in-process by default, or an existing cluster by address."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import ray

from raysel.config import RayConfig

log = logging.getLogger(__name__)


def ensure_ray(config: RayConfig | None = None) -> None:
    """Start or join Ray once per process; a no-op when Ray is already up (jobs, tests)."""
    if ray.is_initialized():
        return
    config = config or RayConfig()
    if config.address:
        log.info("joining Ray cluster at %s", config.address)
        ray.init(address=config.address, log_to_driver=True)
    else:
        ray.init(num_cpus=config.num_cpus, num_gpus=config.num_gpus, include_dashboard=False)


class ShardNotLoadedError(RuntimeError):
    """A call reached a shard actor that holds no rows: it died between calls and Ray restarted it empty."""


# A shard actor lost: it died during the call (Ray's error) or before it (restarted empty, ours).
LOST_ACTOR_ERRORS = (ray.exceptions.RayActorError, ShardNotLoadedError)


def get_reraising_input_errors(refs):
    """ray.get, re-raising an input error (ValueError) or a lost shard actor from inside a task or
    actor as itself (no remote traceback); a task whose argument came from a lost actor counts too."""
    from ray.exceptions import RayTaskError

    try:
        return ray.get(refs)
    except RayTaskError as exc:
        if isinstance(exc.cause, (ValueError, *LOST_ACTOR_ERRORS)):
            raise exc.cause from None
        raise


def remote_cause(exc: BaseException, wanted: type[BaseException]) -> BaseException | None:
    """The `wanted` exception that caused `exc` inside a task or actor (through Ray's and Ray Data's wrappers), or None."""
    from ray.exceptions import RayTaskError

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, RayTaskError):
            exc = exc.cause
            continue
        if isinstance(exc, wanted):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def cluster_gpus() -> int:
    return int(ray.cluster_resources().get("GPU", 0))


def cluster_cpus() -> int:
    return int(ray.cluster_resources().get("CPU", 1))


# --- resource plan -------------------------------------------------------------------------------------------------
# Ray Data schedules an actor pool only once every actor's reservation fits, and a
# decode task only while CPUs are free, so stages that together ask for more than
# the cluster has wait forever at 0%. The plan below is computed before anything
# starts: it scales the CPU reservations down to fit (they are scheduling tokens:
# a CPU model actor runs torch on every core anyway), or fails at once naming the
# numbers and the flag to change.

MIN_CPU_RESERVATION = 0.05  # below this a stage's reservation means nothing; ask the user instead
DECODE_CPUS = 1.0  # a decode task keeps about one core busy (8 reads in flight, PIL decoding)
MODEL_ACTOR_CPUS = 1.0  # the model actor's own Python thread (feeding the device / torch's threads)
KMEANS_ACTOR_CPUS = 1.0  # a CPU K-Means actor runs torch on its core(s)
# Ray rounds fractional resources to 1e-4; round down so that the sum never exceeds the cluster.
_RESOURCE_GRAIN = 1e-4


class ResourcePlanError(ValueError):
    """The stages of a run cannot all be placed on this cluster; the message names the numbers and the flag."""


class StallError(RuntimeError):
    """A run made no progress for longer than its stall timeout."""


@dataclass(frozen=True)
class StagePlan:
    """One stage's share of the cluster: `count` actors (None: tasks, as many as fit) of `num_cpus` / `num_gpus`."""

    name: str
    count: int | None
    num_cpus: float
    num_gpus: float = 0.0

    def cpus(self) -> float:
        return self.num_cpus * (self.count if self.count is not None else 1)


@dataclass(frozen=True)
class FeaturizePlan:
    """What every featurize stage reserves; `scaled` < 1 when CPU reservations were shrunk to fit."""

    cluster_cpus: float
    cluster_gpus: float
    decode: StagePlan
    model: StagePlan
    pretext: StagePlan | None
    kmeans: StagePlan | None  # None: K-Means runs inside the model actors (GPU clusters)
    scaled: float = 1.0

    def stages(self) -> list[StagePlan]:
        return [s for s in (self.decode, self.model, self.pretext, self.kmeans) if s is not None]

    def describe(self) -> str:
        parts = []
        for stage in self.stages():
            count = "tasks" if stage.count is None else f"{stage.count} x"
            gpus = f" + {stage.num_gpus:g} GPU" if stage.num_gpus else ""
            parts.append(f"{stage.name} {count} {stage.num_cpus:g} CPU{gpus}")
        return f"{', '.join(parts)} on {self.cluster_cpus:g} CPUs / {self.cluster_gpus:g} GPUs"


def _round_down(value: float) -> float:
    return math.floor(value / _RESOURCE_GRAIN + 1e-9) * _RESOURCE_GRAIN


def plan_featurize(
    cpus: float,
    gpus: float,
    model_actors: int | None,
    kmeans_actors: int | None,
    pretext: bool,
    model_cpus: float = MODEL_ACTOR_CPUS,
) -> FeaturizePlan:
    """Reservations for decode tasks, model actors, the pretext scorer and K-Means actors that fit the cluster.

    Args:
        cpus, gpus: the cluster's totals (`ray.cluster_resources()`).
        model_actors: --model-actors (None: one per GPU, else 1).
        kmeans_actors: --kmeans-actors (None: 0 on GPU clusters, where K-Means runs on the model's device;
            1 on CPU clusters).
        pretext: whether a PretextScorer pool runs next to each model actor.
        model_cpus: CPUs each model actor (Featurizer) reserves before scaling (resolve_featurize gives CPU
            model actors most of a node's cores); the pretext scorer and K-Means actors reserve MODEL_ACTOR_CPUS.

    Raises:
        ResourcePlanError: the asked-for actors cannot all be placed (too many model actors for the GPUs,
            or so many actors that each would reserve less than MIN_CPU_RESERVATION of a CPU).
    """
    if cpus <= 0:
        raise ResourcePlanError(f"the Ray cluster has {cpus:g} CPUs; featurize needs at least one")
    on_gpu = gpus > 0
    models = model_actors or (int(gpus) if on_gpu and gpus >= 1 else 1)
    kmeans = kmeans_actors if kmeans_actors is not None else (0 if on_gpu else 1)
    if kmeans == 0 and not on_gpu:
        raise ResourcePlanError("--kmeans-actors 0 runs K-Means in the model actors, which needs a GPU; use >= 1")
    gpu_per_model = 0.0
    if on_gpu:
        # With --pretext a GPU hosts one Featurizer and one PretextScorer.
        per_gpu = 2 if pretext else 1
        gpu_per_model = 1.0 / per_gpu
        if models * gpu_per_model * (2 if pretext else 1) > gpus + 1e-9:
            raise ResourcePlanError(
                f"{models} model actors{' and as many pretext scorers' if pretext else ''} need "
                f"{models * gpu_per_model * (2 if pretext else 1):g} GPUs; the cluster has {gpus:g}: "
                f"lower --model-actors to {int(gpus) or 1}"
            )
    actors = models * (2 if pretext else 1) + kmeans
    # K-Means actors reserve what model actors do; the last actor stage also writes the part files.
    demand = (actors - models) * MODEL_ACTOR_CPUS + models * model_cpus + DECODE_CPUS
    scale = min(1.0, cpus / demand)
    if scale * MODEL_ACTOR_CPUS < MIN_CPU_RESERVATION:
        raise ResourcePlanError(
            f"featurize would run {models} model actors{f', {models} pretext scorers' if pretext else ''} and "
            f"{kmeans} K-Means actors plus decode tasks ({demand:g} CPUs asked) on {cpus:g} CPUs: lower "
            "--model-actors / --kmeans-actors"
        )
    actor_cpus = _round_down(MODEL_ACTOR_CPUS * scale)
    featurizer_cpus = _round_down(model_cpus * scale)
    decode_cpus = _round_down(min(DECODE_CPUS, cpus - (actors - models) * actor_cpus - models * featurizer_cpus))
    return FeaturizePlan(
        cluster_cpus=cpus,
        cluster_gpus=gpus,
        decode=StagePlan("decode", None, decode_cpus),
        model=StagePlan("featurizer", models, featurizer_cpus, gpu_per_model),
        pretext=StagePlan("pretext scorer", models, actor_cpus, gpu_per_model) if pretext else None,
        kmeans=StagePlan("k-means", kmeans, actor_cpus) if kmeans else None,
        scaled=scale,
    )


def check_training_resources(cpus: float, workers: int, cpus_per_worker: int, decode_cpus: float) -> None:
    """Fail at once when training workers plus one decode task cannot all run on `cpus` CPUs.

    Ray Train places every worker before the first step, and the decode tasks
    that feed them need CPUs of their own; asking for all of them waits forever.

    Raises:
        ResourcePlanError: with the numbers and the flags to change.
    """
    needed = workers * cpus_per_worker + decode_cpus
    if needed > cpus + 1e-9:
        fitting = max(int((cpus - decode_cpus) // max(workers, 1)), 0)
        hint = f"--cpus-per-worker {fitting}" if fitting >= 1 else f"--num-workers {max(int(cpus - decode_cpus), 1)} --cpus-per-worker 1"
        raise ResourcePlanError(
            f"pretext train needs {workers} worker(s) x {cpus_per_worker} CPUs (--cpus-per-worker) + {decode_cpus:g} CPU "
            f"for decoding = {needed:g} CPUs, but the Ray cluster has {cpus:g}: use {hint} (or a bigger cluster)"
        )


def cluster_total_cpus() -> float:
    return float(ray.cluster_resources().get("CPU", 0.0))


# --- defaults chosen from the cluster ------------------------------------------------------------------------------
# The rates behind the rules, per CPU as Ray counts them (a vCPU, half a core on EC2), from the per-core
# figures measured on the development machine (docs/operations.md, "Expected throughput"), halved as
# benchmarks/bench_cluster.py does; the GPU rate is the capacity plan's assumption until
# benchmarks/gpu_check.sh measures one. docs/operations.md, "Defaults and how they are chosen", explains each rule.
VCPUS_PER_CORE = 2
DECODE_IMAGES_PER_CPU = 424 / VCPUS_PER_CORE  # JPEG 500x375 -> 224x224
KMEANS_IMAGES_PER_CPU = 5_000 / VCPUS_PER_CORE  # K=5, D=384, ~94 kept patches
CPU_MODEL_IMAGES_PER_CPU = 24 / VCPUS_PER_CORE  # ViT-S/16 forward
GPU_IMAGES_PER_SECOND = 1_500.0  # ViT-S/16 bf16 on an A10G (assumption; 2,000-3,000 on an A100 / H100)
DECODE_CPUS_PER_GPU = math.ceil(GPU_IMAGES_PER_SECOND / DECODE_IMAGES_PER_CPU)  # 8
GPU_BATCH_PATCHES = 256 * 196  # ViT-S/16 bf16 at 224 px: 256 images of 196 patches keep a GPU busy
CPU_BATCH = 32  # a CPU forward gains nothing from bigger batches; smaller ones keep the stages moving
MIN_BATCH, MAX_BATCH = 8, 512
BATCHES_PER_OBJECT_STORE = 64  # a decoded batch takes at most 1/64 of a node's object store (Ray Data keeps a few per stage)
SHARD_TARGET_BYTES = 128 * 2**20  # a store shard: big enough for S3 / Parquet, small enough to commit in one task
MIN_CHUNK = 256  # below this, commits and shards cost more than the resume granularity is worth
CHUNKS_PER_WRITER = 4  # resume granularity and parallel commits: >= 4 chunks per actor that writes part files
CHUNK_SECONDS = 120.0  # a killed run redoes at most ~2 minutes of each writer's work
LOCAL_DECODE_THREADS, S3_DECODE_THREADS = 8, 16  # concurrent reads per decode task: S3 GETs wait on latency
URI_BYTES = 100  # an average uri in a store row


@dataclass(frozen=True)
class NodeShape:
    """One Ray node's resources (`ray.nodes()[i]["Resources"]`)."""

    cpus: float
    gpus: float = 0.0
    memory_bytes: float = 0.0
    object_store_bytes: float = 0.0


@dataclass(frozen=True)
class ClusterShape:
    """The alive nodes of a Ray cluster; `uniform(8, 8, 1)` is 8 nodes of 8 CPUs + 1 GPU."""

    nodes: tuple[NodeShape, ...]

    @classmethod
    def uniform(cls, count: int, cpus: float, gpus: float = 0.0, memory_gib: float = 32.0) -> "ClusterShape":
        gib = float(2**30)
        # Ray's default object store: 30% of the node's memory.
        return cls(tuple(NodeShape(cpus, gpus, memory_gib * gib, 0.3 * memory_gib * gib) for _ in range(count)))

    @classmethod
    def of_ray(cls) -> "ClusterShape":
        """The cluster this process is connected to (alive nodes only)."""
        nodes = []
        for node in ray.nodes():
            if not node.get("Alive"):
                continue
            res = node.get("Resources", {})
            nodes.append(NodeShape(float(res.get("CPU", 0.0)), float(res.get("GPU", 0.0)),
                                   float(res.get("memory", 0.0)), float(res.get("object_store_memory", 0.0))))
        return cls(tuple(nodes))

    @property
    def cpus(self) -> float:
        return sum(n.cpus for n in self.nodes)

    @property
    def gpus(self) -> float:
        return sum(n.gpus for n in self.nodes)

    def describe(self) -> str:
        shapes: dict[tuple[float, float], int] = {}
        for n in self.nodes:
            shapes[(n.cpus, n.gpus)] = shapes.get((n.cpus, n.gpus), 0) + 1
        return " + ".join(f"{count} x ({c:g} CPU{f' + {g:g} GPU' if g else ''})" for (c, g), count in shapes.items())


@dataclass(frozen=True)
class ModelShape:
    """What the defaults need of the model: input size, patch tokens per image, embedding dim D, clusters K."""

    image_size: int
    patches: int
    dim: int
    clusters: int


@dataclass(frozen=True)
class FeaturizeResources:
    """The concrete featurize settings for one cluster: the user's values where given, the rules' otherwise.

    `auto` names the fields the rules chose; `notes` are warnings worth a log line (e.g. too few decode
    CPUs per GPU). `plan` holds every stage's reservation (decode tasks reserve `plan.decode.num_cpus`).
    """

    batch_size: int
    chunk_size: int
    model_actors: int
    kmeans_actors: int
    decode_threads: int
    decode_concurrency: int  # decode tasks that run at once on this cluster beside the actors
    model_torch_threads: int | None  # CPU model actors: torch threads (None: every core of the node)
    plan: FeaturizePlan
    auto: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        def value(name: str) -> str:
            return f"{name} {getattr(self, name)}{' (auto)' if name in self.auto else ''}"

        threads = "all cores" if self.model_torch_threads is None else str(self.model_torch_threads)
        return (
            f"{value('batch_size')}, {value('chunk_size')}, {value('model_actors')}, {value('kmeans_actors')}, "
            f"{value('decode_threads')}; decode tasks of {self.plan.decode.num_cpus:g} CPU, "
            f"{self.decode_concurrency} at once"
            + ("" if self.plan.model.num_gpus else f"; model actor torch threads: {threads}")
        )

    def as_dict(self) -> dict:
        return {
            **{name: getattr(self, name) for name in ("batch_size", "chunk_size", "model_actors", "kmeans_actors",
                                                       "decode_threads", "decode_concurrency", "model_torch_threads")},
            "decode_cpus": round(self.plan.decode.num_cpus, 4),
            "auto": list(self.auto),
            "plan": self.plan.describe(),
            "notes": list(self.notes),
        }


def _power_of_two_at_most(value: float) -> int:
    return 1 << max(int(math.floor(math.log2(max(value, 1.0)))), 0)


def resolve_featurize(
    cluster: ClusterShape,
    model: ModelShape,
    images: int | None,
    *,
    batch_size: int | None = None,
    chunk_size: int | None = None,
    model_actors: int | None = None,
    kmeans_actors: int | None = None,
    decode_threads: int | None = None,
    pretext: bool = False,
    remote_source: bool = False,
) -> FeaturizeResources:
    """batch_size, chunk_size, actor counts, decode threads and every stage's CPU reservation for a cluster.

    Pure: the same cluster, model and pool give the same values. A value given by the user (not None) is
    kept as is; the others follow the rules of docs/operations.md ("Defaults and how they are chosen").

    Args:
        cluster: the alive nodes' CPUs, GPUs, memory and object store (`ClusterShape.of_ray()`).
        model: image size, patches per image, embedding dim D and clusters K.
        images: images in the pool (for chunk_size; None: not known, e.g. an existing store's chunks).
        batch_size, chunk_size, model_actors, kmeans_actors, decode_threads: the user's values, or None.
        pretext: a PretextScorer runs next to each model actor.
        remote_source: the images are read from object storage (S3), where reads wait on latency.

    Returns:
        FeaturizeResources; its `plan` fits the cluster's CPUs and GPUs (see plan_featurize).

    Raises:
        ResourcePlanError: the asked-for actors cannot all be placed (plan_featurize).
    """
    auto = []
    cpu_nodes = [n for n in cluster.nodes if n.cpus > 0]
    gpus = cluster.gpus
    on_gpu = gpus > 0
    notes = []

    # Actors. GPU: one model actor per GPU, K-Means on its device. CPU: one model actor per node holding most
    # of its cores; decode gets the share that keeps up with it, K-Means actors enough for the model's rate.
    model_cpus = MODEL_ACTOR_CPUS
    torch_threads = None
    if model_actors is None:
        auto.append("model_actors")
    if kmeans_actors is None:
        auto.append("kmeans_actors")
    if on_gpu:
        models = model_actors or (int(gpus) if gpus >= 1 else 1)
        kmeans = 0 if kmeans_actors is None else kmeans_actors
    else:
        node_cpus = min((n.cpus for n in cpu_nodes), default=cluster.cpus)
        decode_share = math.ceil(node_cpus * CPU_MODEL_IMAGES_PER_CPU / (CPU_MODEL_IMAGES_PER_CPU + DECODE_IMAGES_PER_CPU))
        models = model_actors or max(len(cpu_nodes), 1)
        per_node = math.ceil(models / max(len(cpu_nodes), 1))
        # Leave room on the node for a K-Means actor (and each model actor's pretext scorer).
        spare = node_cpus - decode_share - MODEL_ACTOR_CPUS * (1 + (per_node if pretext else 0))
        per_model = math.floor(spare / per_node)
        if per_model >= 2:
            model_cpus = float(per_model)
            torch_threads = per_model
        elif model_actors is None:
            models = 1  # a small machine: one model actor, torch on all its cores, reservations scaled to fit
        model_rate = models * model_cpus * CPU_MODEL_IMAGES_PER_CPU
        kmeans = kmeans_actors if kmeans_actors is not None else max(1, math.ceil(model_rate / KMEANS_IMAGES_PER_CPU))
    plan = plan_featurize(cluster.cpus, gpus, models, kmeans, pretext, model_cpus=model_cpus)
    if torch_threads is not None and plan.scaled < 1:
        torch_threads = None

    actor_cpus = sum(stage.cpus() for stage in plan.stages() if stage.count is not None)
    free_cpus = cluster.cpus - actor_cpus
    decode_concurrency = max(1, int(math.floor(free_cpus / plan.decode.num_cpus + 1e-9))) if plan.decode.num_cpus else 1
    if on_gpu and plan.model.count and free_cpus / plan.model.count < DECODE_CPUS_PER_GPU - 1e-9:
        notes.append(
            f"{free_cpus / plan.model.count:.3g} decode CPUs per model actor, below the {DECODE_CPUS_PER_GPU} a GPU "
            f"needs at {GPU_IMAGES_PER_SECOND:,.0f} images/s: decoding will limit the GPUs; add CPU nodes"
        )

    # Batches: GPU batches hold ~256 x 196 patch tokens (ViT-S/16 bf16 keeps a GPU busy), CPU batches 32;
    # a decoded batch never takes more than 1/64 of the smallest node's object store.
    if batch_size is None:
        auto.append("batch_size")
        wanted = _power_of_two_at_most(GPU_BATCH_PATCHES / max(model.patches, 1)) if on_gpu else CPU_BATCH
        store_bytes = min((n.object_store_bytes for n in cluster.nodes if n.object_store_bytes > 0), default=0.0)
        image_bytes = model.image_size * model.image_size * 3
        if store_bytes:
            wanted = min(wanted, _power_of_two_at_most(store_bytes / BATCHES_PER_OBJECT_STORE / image_bytes))
        batch_size = int(min(max(wanted, MIN_BATCH), MAX_BATCH))

    # Chunks: a shard of at most 128 MiB; >= 4 chunks per writing actor; ~2 minutes of one writer's work.
    if chunk_size is None:
        auto.append("chunk_size")
        row_bytes = 4 * model.dim * (1 + model.clusters) + URI_BYTES + 8
        largest = max(int(SHARD_TARGET_BYTES // row_bytes), MIN_CHUNK)
        writers = plan.kmeans.count if plan.kmeans is not None else plan.model.count
        rate = GPU_IMAGES_PER_SECOND * plan.model.count if on_gpu else models * model_cpus * CPU_MODEL_IMAGES_PER_CPU
        candidates = [largest, int(rate / writers * CHUNK_SECONDS)]
        if images:
            candidates.append(math.ceil(images / (CHUNKS_PER_WRITER * writers)))
        chunk_size = int(min(max(min(candidates), MIN_CHUNK), largest))

    if decode_threads is None:
        auto.append("decode_threads")
        decode_threads = S3_DECODE_THREADS if remote_source else LOCAL_DECODE_THREADS

    return FeaturizeResources(
        batch_size=batch_size,
        chunk_size=chunk_size,
        model_actors=plan.model.count,
        kmeans_actors=plan.kmeans.count if plan.kmeans is not None else 0,
        decode_threads=decode_threads,
        decode_concurrency=decode_concurrency,
        model_torch_threads=torch_threads,
        plan=plan,
        auto=tuple(auto),
        notes=tuple(notes),
    )
