"""Killing a Ray shard actor the way a crash does, and waiting until Ray has restarted it."""
from __future__ import annotations

import time


def kill_and_wait_for_restart(ray_session, actor, timeout_s: float = 60.0) -> None:
    """Kill a shard actor (Ray restarts it) and return once the restarted, empty actor answers.

    The actor must have `is_loaded()` (pool and K-Center shard actors do). Calls in flight to
    it when it dies fail with RayActorError; calls after it reach the empty actor.
    """
    from ray.exceptions import GetTimeoutError, RayActorError

    ray_session.kill(actor, no_restart=False)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if not ray_session.get(actor.is_loaded.remote(), timeout=10):
                return
        except (RayActorError, GetTimeoutError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"the killed shard actor did not come back within {timeout_s:.0f} s")
