"""The stall watchdog of `raysel pretext train`: no finished step for `stall_timeout` seconds ends the run.

Workers report every finished step (at most once a second) to a `ProgressBeacon`
actor (0 CPUs, so it is placed even on a full cluster). The driver polls it from
a helper thread while `TorchTrainer.fit()` runs in the calling thread; when the
last progress is older than the timeout it aborts the Ray Train controller
(what Ctrl-C does), `fit()` returns with an error, and the run raises StallError
naming the timeout and what was last seen. Training workers that cannot be
placed (a busy cluster), a decode that hangs on a read, or a hung collective
all end this way instead of waiting forever.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

import ray

log = logging.getLogger(__name__)

BEAT_EVERY_S = 1.0  # a worker reports progress at most this often
ABORT_GRACE_S = 10.0  # seconds the controller gets to abort its run before it is killed
NOTHING_YET = "no training step finished yet (workers not placed, or the first batch not decoded)"


@ray.remote(num_cpus=0)
class ProgressBeacon:
    """When the last training step finished, and which (ages on the beacon's own clock)."""

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.what = NOTHING_YET

    def beat(self, what: str) -> None:
        self.last = time.monotonic()
        self.what = what

    def status(self) -> tuple[float, str]:
        return time.monotonic() - self.last, self.what


class StepReporter:
    """In a worker: `step(epoch, step)` after every finished step, sent on at most every BEAT_EVERY_S seconds."""

    def __init__(self, beacon: Any, rank: int) -> None:
        self.beacon, self.rank, self.sent = beacon, rank, 0.0

    def step(self, epoch: int, step: int, force: bool = False) -> None:
        self.progress(f"epoch {epoch + 1} step {step + 1} finished on rank {self.rank}", force)

    def progress(self, what: str, force: bool = False) -> None:
        """Any other progress (a batch of the pool decoded for --shuffle full, an accuracy pass)."""
        now = time.monotonic()
        if self.beacon is not None and (force or now - self.sent >= BEAT_EVERY_S):
            self.beacon.beat.remote(what)
            self.sent = now


class StallWatch:
    """Watches `beacon` while a trainer's fit() runs; `fired` holds (seconds, last seen) once it aborted the run."""

    def __init__(self, beacon: Any, stall_timeout: float) -> None:
        self.beacon = beacon
        self.stall_timeout = stall_timeout
        self.controller: Any = None  # the Ray Train controller actor, once fit() created it
        self.fired: tuple[float, str] | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="raysel-pretext-watchdog", daemon=True)

    def __enter__(self) -> "StallWatch":
        if self.stall_timeout > 0:
            self._placement_groups_before = set(_live_placement_groups())
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def message(self) -> str:
        seconds, what = self.fired or (self.stall_timeout, NOTHING_YET)
        return (
            f"pretext train made no progress for {self.stall_timeout:g} s (--stall-timeout; last seen: {what}, "
            f"{seconds:.0f} s ago): training workers waiting for resources, or a read or a worker hangs; "
            "check the cluster's free CPUs/GPUs, or raise --stall-timeout"
        )

    def _watch(self) -> None:
        poll = min(5.0, max(self.stall_timeout / 4, 0.2))
        while not self._done.wait(poll):
            try:
                seconds, what = ray.get(self.beacon.status.remote(), timeout=max(poll, 5.0))
            except Exception:  # the beacon is slow to answer: judge at the next poll
                continue
            if seconds > self.stall_timeout:
                self.fired = (seconds, what)
                log.error("%s", self.message())
                self._abort()
                return

    def _abort(self) -> None:
        controller = self.controller
        if controller is None:
            log.error("the watchdog cannot abort this training run: Ray Train did not hand over its controller "
                      "(fit() not on the main thread, or Ray Train V1); stop it by hand")
            return
        try:  # what Ctrl-C does: the controller aborts its workers and exits, so its call fails
            ray.get(controller.abort.remote(), timeout=ABORT_GRACE_S)
        except Exception:
            pass
        try:  # and make sure it is gone, so that it starts no worker group any more
            ray.kill(controller, no_restart=True)
        except Exception:
            pass
        # The workers' placement group belongs to the job, not the controller: without this it would wait
        # for the busy CPUs and then hold them until the driver exits.
        for _ in range(3):
            for group_id in set(_live_placement_groups()) - self._placement_groups_before:
                log.info("removing placement group %s of the stalled run", group_id)
                _remove_placement_group(group_id)
            time.sleep(1.0)


def _live_placement_groups() -> list[str]:
    from ray.util import placement_group_table

    return [group_id for group_id, group in placement_group_table().items() if group.get("state") != "REMOVED"]


def _remove_placement_group(group_id: str) -> None:
    from ray._raylet import PlacementGroupID
    from ray.util import remove_placement_group
    from ray.util.placement_group import PlacementGroup

    try:
        remove_placement_group(PlacementGroup(PlacementGroupID.from_hex(group_id)))
    except Exception as exc:  # already gone
        log.warning("could not remove placement group %s: %s", group_id, exc)


def watched_trainer_class(trainer_class: type, watch: StallWatch) -> type:
    """`trainer_class` (a Ray Train V2 trainer) handing its controller actor to `watch` when fit() starts it.

    Ray Train hands the controller to its SIGINT handler when fit() runs on the
    main thread (the CLI, jobs, tests); the watchdog aborts it the same way.
    """

    class Watched(trainer_class):  # type: ignore[misc, valid-type]
        def _register_sigint_handler(self, controller):
            watch.controller = controller
            return super()._register_sigint_handler(controller)

    Watched.__name__ = Watched.__qualname__ = trainer_class.__name__
    return Watched
