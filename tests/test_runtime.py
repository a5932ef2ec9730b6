"""The resource plan: every featurize / pretext-train stage fits the cluster, or the run fails at once saying why."""
from __future__ import annotations

import time

import pytest

from raysel.pipeline import watched
from raysel.runtime import ResourcePlanError, StallError, check_training_resources, plan_featurize

pytestmark = pytest.mark.pure


def total(plan, one_decode_task: bool = True) -> float:
    return sum(stage.cpus() for stage in plan.stages())


@pytest.mark.parametrize("cpus", [1, 2, 3, 4, 16])
@pytest.mark.parametrize("pretext", [False, True])
def test_cpu_plans_fit_the_cluster_with_room_for_a_decode_task(cpus, pretext):
    plan = plan_featurize(cpus, 0, None, None, pretext)
    # Every actor plus one decode task: what must run at once for the first row to finish.
    assert total(plan) <= cpus + 1e-9, plan.describe()
    assert plan.decode.num_cpus > 0 and plan.model.num_cpus > 0
    assert plan.kmeans is not None and plan.kmeans.count == 1  # CPU clusters: K-Means on CPU actors
    assert (plan.pretext is not None) == pretext
    assert plan.scaled == min(1.0, cpus / (2 + pretext + 1))


def test_the_two_cpu_pretext_case_that_used_to_hang_is_scaled_down():
    # decode 0.5 + scorer 1 + featurizer 1 (+ K-Means) > 2: the old fixed reservations never scheduled K-Means.
    plan = plan_featurize(2, 0, None, None, True)
    assert plan.scaled < 1 and total(plan) <= 2
    assert "pretext scorer 1 x" in plan.describe() and "on 2 CPUs" in plan.describe()


def test_gpu_plans_run_kmeans_on_the_model_device_and_give_decode_whole_cpus():
    plan = plan_featurize(64, 8, None, None, False)
    assert plan.kmeans is None and plan.model.count == 8 and plan.model.num_gpus == 1
    assert plan.decode.num_cpus == 1 and plan.scaled == 1
    with_pretext = plan_featurize(64, 8, None, None, True)
    assert with_pretext.model.num_gpus == 0.5 and with_pretext.pretext.num_gpus == 0.5
    assert plan_featurize(64, 8, None, 4, False).kmeans.count == 4  # CPU K-Means actors on request


@pytest.mark.parametrize(
    "args, words",
    [
        ((2, 0, 40, None, False), ["40 model actors", "2 CPUs", "--model-actors"]),
        ((64, 8, 9, None, False), ["9 GPUs", "has 8", "--model-actors to 8"]),
        ((64, 4, 8, None, True), ["8 model actors and as many pretext scorers need 8 GPUs", "has 4", "--model-actors to 4"]),
        ((4, 0, None, 0, False), ["--kmeans-actors"]),
    ],
)
def test_plans_that_cannot_fit_fail_naming_the_numbers_and_the_flag(args, words):
    with pytest.raises(ResourcePlanError) as error:
        plan_featurize(*args)
    for word in words:
        assert word in str(error.value)


def test_training_that_cannot_fit_fails_naming_the_numbers_and_the_flag():
    check_training_resources(2, 1, 1, 0.5)  # fits
    with pytest.raises(ResourcePlanError, match=r"1 worker\(s\) x 2 CPUs \(--cpus-per-worker\) \+ 0.5 CPU .* = 2.5 CPUs.* has 2: use --cpus-per-worker 1"):
        check_training_resources(2, 1, 2, 0.5)
    with pytest.raises(ResourcePlanError, match="--num-workers 1"):
        check_training_resources(2, 3, 1, 0.5)


def test_watchdog_ends_a_stalled_iterator_with_a_clear_error():
    def stalls():
        yield 1
        time.sleep(30)
        yield 2

    got = []
    started = time.time()
    with pytest.raises(StallError, match="no progress for 0.3 s"):
        for item in watched(stalls(), 0.3):
            got.append(item)
    assert got == [1] and time.time() - started < 5
    assert list(watched(iter(range(5)), 0.3)) == [0, 1, 2, 3, 4]

    def fails():
        yield 1
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(watched(fails(), 5))
