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


# --- defaults chosen from the cluster (resolve_featurize) -----------------------------------------------------------
from raysel.runtime import (  # noqa: E402
    CHUNKS_PER_WRITER,
    DECODE_CPUS_PER_GPU,
    MAX_BATCH,
    MIN_BATCH,
    MIN_CHUNK,
    SHARD_TARGET_BYTES,
    ClusterShape,
    ModelShape,
    NodeShape,
    resolve_featurize,
)

VIT_S16 = ModelShape(image_size=224, patches=196, dim=384, clusters=5)
SHAPES = {
    "laptop 2 CPU": ClusterShape.uniform(1, 2, memory_gib=8),
    "8 x (8 CPU + 1 GPU)": ClusterShape.uniform(8, 8, 1, memory_gib=32),
    "4 x 32 CPU": ClusterShape.uniform(4, 32, memory_gib=128),
    "16 CPU + 1 GPU": ClusterShape.uniform(1, 16, 1, memory_gib=64),
}


def row_bytes(model: ModelShape) -> int:
    return 4 * model.dim * (1 + model.clusters)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("images", [40, 10_000, 1_281_167])
@pytest.mark.parametrize("pretext", [False, True])
def test_auto_defaults_fit_every_cluster_shape_within_the_stated_bounds(shape, images, pretext):
    cluster = SHAPES[shape]
    got = resolve_featurize(cluster, VIT_S16, images, pretext=pretext)
    plan = got.plan
    # No over-subscription: every actor and the decode tasks that run at once fit the CPUs and GPUs ...
    actors = sum(stage.cpus() for stage in plan.stages() if stage.count is not None)
    assert actors + got.decode_concurrency * plan.decode.num_cpus <= cluster.cpus + 1e-6, got.describe()
    assert got.decode_concurrency >= 1 and plan.decode.num_cpus > 0
    assert sum(s.count * s.num_gpus for s in plan.stages() if s.count) <= cluster.gpus + 1e-9
    # ... and each actor fits on one node.
    assert all(s.num_cpus <= min(n.cpus for n in cluster.nodes) for s in plan.stages())
    assert MIN_BATCH <= got.batch_size <= MAX_BATCH
    # Shards of at most 128 MiB, at least MIN_CHUNK images, >= 4 chunks per writing actor when the pool allows.
    assert MIN_CHUNK <= got.chunk_size and got.chunk_size * row_bytes(VIT_S16) <= SHARD_TARGET_BYTES
    writers = got.kmeans_actors or got.model_actors
    assert got.chunk_size == MIN_CHUNK or -(-images // got.chunk_size) >= CHUNKS_PER_WRITER * writers
    assert set(got.auto) == {"batch_size", "chunk_size", "model_actors", "kmeans_actors", "decode_threads"}
    for word in ("batch_size", "(auto)", "decode tasks of"):
        assert word in got.describe()


def test_gpu_clusters_get_big_batches_kmeans_on_the_gpu_and_the_decode_cpus_a_gpu_needs():
    one = resolve_featurize(SHAPES["16 CPU + 1 GPU"], VIT_S16, 1_281_167)
    assert (one.model_actors, one.kmeans_actors, one.batch_size) == (1, 0, 256)
    assert one.plan.model.num_gpus == 1 and one.plan.decode.num_cpus == 1
    assert one.decode_concurrency == 15 >= DECODE_CPUS_PER_GPU and not one.notes
    eight = resolve_featurize(SHAPES["8 x (8 CPU + 1 GPU)"], VIT_S16, 1_281_167)
    assert (eight.model_actors, eight.kmeans_actors, eight.decode_concurrency) == (8, 0, 56)
    # 7 spare CPUs per GPU node is below what a GPU needs: said, with what to do.
    assert len(eight.notes) == 1 and f"below the {DECODE_CPUS_PER_GPU}" in eight.notes[0] and "add CPU nodes" in eight.notes[0]
    with_cpu_node = ClusterShape(SHAPES["8 x (8 CPU + 1 GPU)"].nodes + (NodeShape(16),))
    assert not resolve_featurize(with_cpu_node, VIT_S16, 1_281_167).notes
    # Batches hold ~256 x 196 patch tokens: a ViT-S/8 (784 patches) gets 64 images.
    assert resolve_featurize(SHAPES["16 CPU + 1 GPU"], ModelShape(224, 784, 384, 5), None).batch_size == 64


def test_cpu_clusters_give_each_node_one_model_actor_with_most_of_its_cores():
    got = resolve_featurize(SHAPES["4 x 32 CPU"], VIT_S16, 1_281_167)
    assert got.model_actors == 4 and got.plan.model.num_cpus == 29 == got.model_torch_threads
    assert got.kmeans_actors >= 1 and got.plan.scaled == 1 and got.batch_size == 32
    # Asked for 8 model actors on 4 nodes: two per node, each with half of the node's model cores.
    two_per_node = resolve_featurize(SHAPES["4 x 32 CPU"], VIT_S16, None, model_actors=8)
    assert two_per_node.plan.model.num_cpus == 14 == two_per_node.model_torch_threads
    laptop = resolve_featurize(SHAPES["laptop 2 CPU"], VIT_S16, 10_000)
    # A small machine: one model actor running torch on every core, reservations scaled to fit (as plan_featurize).
    assert (laptop.model_actors, laptop.kmeans_actors, laptop.model_torch_threads) == (1, 1, None)
    assert laptop.plan == plan_featurize(2, 0, None, None, False)


def test_explicit_values_win_over_the_rules():
    given = dict(batch_size=7, chunk_size=33, model_actors=2, kmeans_actors=3, decode_threads=5)
    for shape in ("laptop 2 CPU", "4 x 32 CPU"):
        got = resolve_featurize(SHAPES[shape], VIT_S16, 1_281_167, **given)
        assert {name: getattr(got, name) for name in given} == given and got.auto == ()
    gpu = resolve_featurize(SHAPES["8 x (8 CPU + 1 GPU)"], VIT_S16, None, model_actors=4, kmeans_actors=2)
    assert (gpu.model_actors, gpu.kmeans_actors) == (4, 2) and gpu.plan.kmeans.num_cpus == 1
    assert set(gpu.auto) == {"batch_size", "chunk_size", "decode_threads"}


def test_reads_from_s3_get_more_threads_and_a_small_object_store_smaller_batches():
    assert resolve_featurize(SHAPES["laptop 2 CPU"], VIT_S16, 100).decode_threads == 8
    assert resolve_featurize(SHAPES["laptop 2 CPU"], VIT_S16, 100, remote_source=True).decode_threads == 16
    small_store = ClusterShape((NodeShape(16, 1, 2**30, 200 * 2**20),))  # 200 MiB object store
    batch = resolve_featurize(small_store, VIT_S16, None).batch_size
    assert batch < 256 and batch * 224 * 224 * 3 * 64 <= 200 * 2**20


def test_featurize_fields_accept_auto_from_the_cli_yaml_and_python(tmp_path):
    import argparse

    from raysel import _dataclass_cli
    from raysel.config import AUTO_FEATURIZE_FIELDS, FeaturizeConfig

    parser = argparse.ArgumentParser()
    _dataclass_cli.add_arguments(parser, FeaturizeConfig)
    args = parser.parse_args(["pool", "--out", "s", "--batch-size", "auto", "--chunk-size", "64"])
    config = _dataclass_cli.build(FeaturizeConfig, args)
    assert config.batch_size is None and config.chunk_size == 64 and config.decode_threads is None
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("batch_size: auto\nmodel_actors: 3\n")
    _dataclass_cli.load_yaml_defaults(parser, str(yaml_file), (FeaturizeConfig,))
    from_yaml = _dataclass_cli.build(FeaturizeConfig, parser.parse_args(["pool", "--out", "s"]))
    assert from_yaml.batch_size is None and from_yaml.model_actors == 3
    assert all(getattr(FeaturizeConfig(**{n: "auto" for n in AUTO_FEATURIZE_FIELDS}), n) is None for n in AUTO_FEATURIZE_FIELDS)
    with pytest.raises(SystemExit):
        parser.parse_args(["pool", "--out", "s", "--batch-size", "big"])


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(
    nodes=st.lists(st.tuples(st.sampled_from([2, 4, 8, 16, 32, 64, 96]), st.sampled_from([0, 0, 1, 4, 8])),
                   min_size=1, max_size=6),
    images=st.one_of(st.none(), st.integers(1, 5_000_000)),
    pretext=st.booleans(),
    patches=st.sampled_from([64, 196, 784]),
)
def test_auto_defaults_never_oversubscribe_any_cluster(nodes, images, pretext, patches):
    cluster = ClusterShape(tuple(NodeShape(cpus, gpus, 16 * 2**30, 5 * 2**30) for cpus, gpus in nodes))
    model = ModelShape(224, patches, 384, 5)
    got = resolve_featurize(cluster, model, images, pretext=pretext)
    actors = sum(stage.cpus() for stage in got.plan.stages() if stage.count is not None)
    assert actors + got.decode_concurrency * got.plan.decode.num_cpus <= cluster.cpus + 1e-6
    assert all(s.num_cpus <= min(n.cpus for n in cluster.nodes) for s in got.plan.stages())  # fits on any node
    assert MIN_BATCH <= got.batch_size <= MAX_BATCH
    assert MIN_CHUNK <= got.chunk_size and got.chunk_size * row_bytes(model) <= SHARD_TARGET_BYTES
