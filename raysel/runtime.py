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


def get_reraising_input_errors(refs):
    """ray.get, re-raising an input error (ValueError) from inside a task or actor as itself (no remote traceback)."""
    from ray.exceptions import RayTaskError

    try:
        return ray.get(refs)
    except RayTaskError as exc:
        if isinstance(exc.cause, ValueError):
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
) -> FeaturizePlan:
    """Reservations for decode tasks, model actors, the pretext scorer and K-Means actors that fit the cluster.

    Args:
        cpus, gpus: the cluster's totals (`ray.cluster_resources()`).
        model_actors: --model-actors (None: one per GPU, else 1).
        kmeans_actors: --kmeans-actors (None: 0 on GPU clusters, where K-Means runs on the model's device;
            1 on CPU clusters).
        pretext: whether a PretextScorer pool runs next to each model actor.

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
    demand = actors * MODEL_ACTOR_CPUS + DECODE_CPUS
    scale = min(1.0, cpus / demand)
    if scale * MODEL_ACTOR_CPUS < MIN_CPU_RESERVATION:
        raise ResourcePlanError(
            f"featurize would run {models} model actors{f', {models} pretext scorers' if pretext else ''} and "
            f"{kmeans} K-Means actors plus decode tasks ({demand:g} CPUs asked) on {cpus:g} CPUs: lower "
            "--model-actors / --kmeans-actors"
        )
    actor_cpus = _round_down(MODEL_ACTOR_CPUS * scale)
    decode_cpus = _round_down(min(DECODE_CPUS, cpus - actors * actor_cpus))
    return FeaturizePlan(
        cluster_cpus=cpus,
        cluster_gpus=gpus,
        decode=StagePlan("decode", None, decode_cpus),
        model=StagePlan("featurizer", models, actor_cpus, gpu_per_model),
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


def cluster_total_gpus() -> float:
    return float(ray.cluster_resources().get("GPU", 0.0))
