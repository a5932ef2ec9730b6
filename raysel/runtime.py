"""Joining Ray: embedded in-process by default, or an existing cluster by address."""
from __future__ import annotations

import logging

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


def cluster_gpus() -> int:
    return int(ray.cluster_resources().get("GPU", 0))


def cluster_cpus() -> int:
    return int(ray.cluster_resources().get("CPU", 1))
