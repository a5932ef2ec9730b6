"""The selection job (jobs/run_selection_job.py) on real Ray clusters, and the cluster manifests.

The cluster tests start a head and workers as `ray start` processes (tests/local_cluster.py) with no
AWS credentials anywhere on the nodes, submit the job with the real `ray job submit` CLI, and read
images from the moto S3 server on loopback: the S3 reads happen in Ray workers, so a job only
succeeds if the credentials it brings in its runtime_env reach them.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from local_cluster import RAY, LocalRayCluster, ray_env, without_aws_credentials

REPO = Path(__file__).resolve().parents[1]
JOB = "jobs/run_selection_job.py"
POOL_IMAGES = 24
BUDGET = 6
# What `--working-dir .` must not upload (Ray also skips .gitignore'd files).
UPLOAD_EXCLUDES = [".venv", "out", ".git", "*.egg-info", ".hypothesis", "benchmarks/results"]
JOB_TIMEOUT_S = 150
FAST_NODE_DEATH = {"RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "3000",
                   "RAY_health_check_failure_threshold": "5"}


def load_job_module():
    spec = importlib.util.spec_from_file_location("run_selection_job", REPO / JOB)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def pool(s3_endpoint, tmp_path_factory):
    """24 sample images under s3://raysel-cluster-jobs/images on the loopback S3 server."""
    import boto3

    from raysel.sample_pool import make_sample_pool

    bucket = "raysel-cluster-jobs"
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=bucket)
    local = tmp_path_factory.mktemp("pool")
    uris = []
    for path in make_sample_pool(str(local), count=POOL_IMAGES, seed=7):
        key = "images/" + os.path.relpath(path, local)
        client.upload_file(path, bucket, key)
        uris.append(f"s3://{bucket}/{key}")
    yield {"bucket": bucket, "source": f"s3://{bucket}/images", "endpoint": s3_endpoint, "uris": sorted(uris), "client": client}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=obj["Key"])
    client.delete_bucket(Bucket=bucket)


@pytest.fixture(scope="module")
def cluster():
    """Head (0 CPUs, as cluster.yaml has it) + one worker (2 CPUs), no AWS credentials on any node, job API on loopback.

    The head runs only the job's driver, so every featurize and select actor runs on a worker.
    A killed node is declared dead after ~5-15 s instead of Ray's ~30 s default, to keep the test short.
    """
    local = LocalRayCluster(dashboard=True, aws_credentials=False, env=FAST_NODE_DEATH)
    try:
        local.start_head(num_cpus=0)
        local.add_worker(num_cpus=2)
        yield local
    finally:
        local.stop(grace=3)  # its temp dir is its own: no need to drain


def job_args(pool, store: str, selection: str) -> list[str]:
    """The same selection for every run: example.yaml with a tiny pool, tiny batches, one seed."""
    return [
        "--config", "jobs/configs/example.yaml",
        "--featurize.source", pool["source"],
        "--featurize.out", store,
        "--featurize.s3-endpoint", pool["endpoint"],
        "--featurize.batch-size", "4",
        "--featurize.chunk-size", "4",
        "--select.out", selection,
        "--select.budget", str(BUDGET),
    ]


@pytest.fixture(scope="module")
def embedded_selection(pool, ray_session, tmp_path_factory):
    """The reference: the same job, its config parsed from the same flags, run on this process's embedded Ray."""
    job = load_job_module()
    out = tmp_path_factory.mktemp("embedded")
    config, _ = job.parse_job_config(job_args(pool, str(out / "store"), str(out / "selection.parquet")))
    summary = job.run(config)
    assert summary["mode"] == "embedded" and summary["counts"]["featurized"] == POOL_IMAGES
    return pq.read_table(out / "selection.parquet")


# ----------------------------------------------------------------------------- job helpers


def submit(cluster: LocalRayCluster, args: list[str], env_vars: dict[str, str]) -> tuple[str, str]:
    """`ray job submit --no-wait` from the repo root; returns (submission id, the CLI's output)."""
    submission_id = f"raysel-test-{uuid.uuid4().hex[:12]}"
    runtime_env = {"excludes": UPLOAD_EXCLUDES, "env_vars": env_vars}
    result = subprocess.run(
        [RAY, "job", "submit", "--address", cluster.job_address, "--submission-id", submission_id,
         "--working-dir", ".", "--runtime-env-json", json.dumps(runtime_env), "--no-wait",
         "--", "python", JOB, *args],
        cwd=REPO, env=without_aws_credentials(ray_env()), capture_output=True, text=True, timeout=90,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return submission_id, result.stdout + result.stderr


def job_status(cluster: LocalRayCluster, submission_id: str) -> str:
    with urllib.request.urlopen(f"{cluster.job_address}/api/jobs/{submission_id}", timeout=10) as response:
        return json.loads(response.read())["status"]


def job_logs(cluster: LocalRayCluster, submission_id: str) -> str:
    result = subprocess.run([RAY, "job", "logs", "--address", cluster.job_address, submission_id],
                            env=ray_env(), capture_output=True, text=True, timeout=60)
    return result.stdout + result.stderr


def wait_for_job(cluster: LocalRayCluster, submission_id: str, timeout: float = JOB_TIMEOUT_S) -> str:
    """The job's final status; stops the job and fails the test if it runs past `timeout`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = job_status(cluster, submission_id)
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            return status
        time.sleep(1)
    subprocess.run([RAY, "job", "stop", "--address", cluster.job_address, "--no-wait", submission_id],
                   env=ray_env(), capture_output=True, timeout=60)
    pytest.fail(f"job {submission_id} not finished after {timeout} s:\n{job_logs(cluster, submission_id)[-4000:]}")


def dummy_credentials() -> dict[str, str]:
    """Non-default credentials that moto accepts; the values must never show up in logs or outputs."""
    token = uuid.uuid4().hex
    return {
        "AWS_ACCESS_KEY_ID": "AKIA" + token[:16].upper(),
        "AWS_SECRET_ACCESS_KEY": "raysel-secret-" + token,
        "AWS_SESSION_TOKEN": "raysel-session-" + token[::-1],
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def assert_same_selection(table: pa.Table, reference: pa.Table) -> None:
    import numpy as np

    assert table.column("uri").to_pylist() == reference.column("uri").to_pylist()
    assert table.column("rank").to_pylist() == list(range(BUDGET))
    scores = [s for s in table.column("score").to_pylist()]
    expected = [s for s in reference.column("score").to_pylist()]
    assert [s is None for s in scores] == [s is None for s in expected]
    np.testing.assert_allclose([s for s in scores if s is not None], [s for s in expected if s is not None], rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- cluster tests


@pytest.mark.cluster
@pytest.mark.s3
@pytest.mark.timeout(280)
def test_job_on_multi_node_cluster_matches_embedded_run_and_keeps_credentials_secret(cluster, pool, embedded_selection):
    from raysel import storage
    from raysel.storage import StorageOptions

    credentials = dummy_credentials()
    secrets = [credentials["AWS_SECRET_ACCESS_KEY"], credentials["AWS_SESSION_TOKEN"]]
    prefix = f"s3://{pool['bucket']}/runs/{uuid.uuid4().hex[:8]}"
    submission_id, submit_output = submit(
        cluster, job_args(pool, f"{prefix}/store", f"{prefix}/selection.parquet"), credentials
    )
    status = wait_for_job(cluster, submission_id)
    logs = job_logs(cluster, submission_id)
    assert status == "SUCCEEDED", logs[-5000:]

    options = StorageOptions(s3_endpoint=pool["endpoint"])
    assert_same_selection(storage.read_parquet(f"{prefix}/selection.parquet", options), embedded_selection)

    summary = storage.read_json(f"{prefix}/selection.summary.json", options)
    assert summary["mode"] == "cluster" and summary["cluster"]["alive_nodes"] >= 2
    # The nodes have no credentials of their own: every image decoded means they reached the workers.
    assert summary["counts"] == {"images": POOL_IMAGES, "featurized": POOL_IMAGES, "failed": 0,
                                 "featurized_this_run": POOL_IMAGES, "budget": BUDGET, "selected": BUDGET}
    assert set(summary["timings"]) >= {"ray_init_s", "featurize_s", "select_s", "total_s"}
    assert set(summary["versions"]) >= {"raysel", "ray", "torch", "timm"}

    resolved = yaml.safe_load(storage.read_bytes(f"{prefix}/selection.config.yaml", options))
    assert set(resolved) == {"featurize", "select", "ray"}
    assert resolved["featurize"]["source"] == pool["source"] and resolved["select"]["store"] == f"{prefix}/store"
    assert resolved["featurize"]["model"] == "test_vit" and resolved["select"]["budget"] == BUDGET

    # Nothing the job wrote or logged holds the secrets: logs, the CLI's output, every object of the run.
    written = [pool["client"].get_object(Bucket=pool["bucket"], Key=obj["Key"])["Body"].read()
               for obj in pool["client"].list_objects_v2(Bucket=pool["bucket"], Prefix=prefix[len(f"s3://{pool['bucket']}/"):])["Contents"]]
    assert len(written) >= 6
    driver_logs = [p.read_bytes() for p in Path(cluster.temp_dir).rglob(f"job-driver-{submission_id}.log")]
    assert driver_logs, "the driver's log file should be on the head node"
    for secret in secrets:
        assert secret not in logs and secret not in submit_output
        assert not any(secret.encode() in blob for blob in written + driver_logs)


def alive_nodes(cluster: LocalRayCluster) -> dict[str, bool]:
    """node id -> is it the head, for every ALIVE node."""
    from ray.util.state import list_nodes

    nodes = list_nodes(address=cluster.job_address, filters=[("state", "=", "ALIVE")], raise_on_missing_output=False)
    return {n.node_id: bool(n.is_head_node) for n in nodes}


def featurizer_nodes(cluster: LocalRayCluster) -> set[str]:
    """Nodes where a featurize model actor (Ray Data's MapWorker running the Featurizer) is ALIVE."""
    from ray.util.state import list_actors

    actors = list_actors(address=cluster.job_address, filters=[("state", "=", "ALIVE")], limit=1000,
                         raise_on_missing_output=False)
    return {a.node_id for a in actors if "MapWorker" in a.class_name and "Featurizer" in a.class_name and a.node_id}


@pytest.mark.cluster
@pytest.mark.s3
@pytest.mark.timeout(280)
def test_job_survives_losing_a_worker_node_mid_run(cluster, pool, embedded_selection, tmp_path):
    from raysel.store import FeatureStore

    (worker,) = cluster.nodes[1:]  # the module's worker; the head has no CPUs, so work runs on the workers only
    before = alive_nodes(cluster)
    extra = cluster.add_worker(num_cpus=3)
    (extra_id,) = set(alive_nodes(cluster)) - set(before)
    (worker_id,) = [node for node, head in before.items() if not head]
    process_of = {worker_id: worker, extra_id: extra}
    store, selection = tmp_path / "store", tmp_path / "selection.parquet"
    submission_id, _ = submit(cluster, job_args(pool, str(store), str(selection)), dummy_credentials())

    # Kill the node whose model actor came up, as soon as it is up: it has the whole featurize pass still
    # ahead of it (and either worker alone can hold every stage, so the run can go on without it).
    # Whatever node Ray picked, the kill lands on featurize work before the store is complete.
    deadline = time.time() + 150
    doomed: set[str] = set()
    while time.time() < deadline and not doomed:
        assert job_status(cluster, submission_id) in ("PENDING", "RUNNING"), job_logs(cluster, submission_id)[-4000:]
        doomed = featurizer_nodes(cluster) & set(process_of)
        time.sleep(0.2)
    assert doomed, "no featurize model actor came up on a worker: the kill would prove nothing"
    doomed_id = sorted(doomed)[0]
    cluster.kill_node(process_of[doomed_id])  # SIGKILL to the node's process group: a crash, not a drain
    assert job_status(cluster, submission_id) == "RUNNING" and not (store / "_SUCCESS").exists()

    status = wait_for_job(cluster, submission_id)
    logs = job_logs(cluster, submission_id)
    assert status == "SUCCEEDED", f"killed node {doomed_id} (its model actor was up):\n{logs[-5000:]}"
    assert "marked dead" in logs or "dead or unavailable" in logs  # Ray saw the loss and recovered

    assert_same_selection(pq.read_table(selection), embedded_selection)
    rows = pa.concat_tables(list(FeatureStore(str(store)).iter_tables()))
    assert sorted(rows.column("uri").to_pylist()) == pool["uris"]  # every image once: none lost, none twice
    summary = json.loads((tmp_path / "selection.summary.json").read_text())
    assert summary["counts"]["featurized"] == POOL_IMAGES and summary["counts"]["failed"] == 0


# ----------------------------------------------------------------------------- manifests and config (pure)


def ray_cluster_schema() -> dict:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


@pytest.mark.pure
def test_cluster_yaml_validates_against_rays_schema():
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    jsonschema.validate(config, ray_cluster_schema())
    validate_config(prepare_config(copy.deepcopy(config)))  # what `ray up` runs before launching anything

    nodes = config["available_node_types"]
    head = nodes[config["head_node_type"]]
    assert head["resources"]["CPU"] == 0 and any("--num-cpus=0" in c for c in config["head_start_ray_commands"])
    gpu = [n for n in nodes.values() if n.get("resources", {}).get("GPU")]
    cpu = [n for name, n in nodes.items() if name != config["head_node_type"] and not n.get("resources", {}).get("GPU")]
    assert gpu and cpu
    for group in gpu + cpu:
        assert 0 <= group["min_workers"] <= group["max_workers"]
        assert "IamInstanceProfile" in group["node_config"]  # S3 through the instance role, no keys
    assert all(n["max_workers"] <= config["max_workers"] for n in gpu + cpu)
    assert any("constraints.txt" in c and "pip install" in c for c in config["setup_commands"])
    assert config["file_mounts"]
    text = (REPO / "cluster.yaml").read_text()
    assert "aws_secret_access_key" not in text.lower() and "AKIA" not in text

    # The schema has teeth: a misspelt key is refused.
    broken = copy.deepcopy(config)
    broken["available_node_types"]["head"]["min_worker"] = 0
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, ray_cluster_schema())


@pytest.mark.pure
def test_kuberay_rayjob_manifest_has_what_kuberay_requires():
    documents = [d for d in yaml.safe_load_all((REPO / "docs" / "kuberay-rayjob.yaml").read_text()) if d]
    (job,) = [d for d in documents if d.get("kind") == "RayJob"]
    assert job["apiVersion"] == "ray.io/v1" and job["metadata"]["name"]
    spec = job["spec"]
    assert JOB in spec["entrypoint"] and "--config" in spec["entrypoint"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert isinstance(runtime_env, dict)
    assert not any(k.startswith("AWS_") for k in runtime_env.get("env_vars", {})), "credentials come from IRSA"

    cluster = spec["rayClusterSpec"]
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    head_container = head["template"]["spec"]["containers"][0]
    assert head_container["image"] and head_container["name"]
    accounts = {d["metadata"]["name"]: d for d in documents if d.get("kind") == "ServiceAccount"}
    assert head["template"]["spec"]["serviceAccountName"] in accounts
    assert "eks.amazonaws.com/role-arn" in accounts[head["template"]["spec"]["serviceAccountName"]]["metadata"]["annotations"]

    groups = cluster["workerGroupSpecs"]
    assert len({g["groupName"] for g in groups}) == len(groups)
    for group in groups:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert "rayStartParams" in group
        pod = group["template"]["spec"]
        assert pod["serviceAccountName"] in accounts and pod["containers"][0]["image"]
    gpu_limits = [g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", 0) for g in groups]
    assert any(int(limit) >= 1 for limit in gpu_limits)


@pytest.mark.pure
def test_job_config_yaml_sections_flags_and_defaults(tmp_path):
    job = load_job_module()
    config, _ = job.parse_job_config(["--config", str(REPO / "jobs/configs/example.yaml"), "--select.budget", "3",
                                      "--featurize.batch-size", "4", "--ray.address", "auto"])
    assert config.featurize.model == "test_vit" and config.featurize.random_init is True
    assert config.featurize.batch_size == 4 and config.select.budget == 3  # flags win over the file
    assert config.select.store == config.featurize.out  # select reads the store the job writes
    assert config.ray.address == "auto"

    imagenet, _ = job.parse_job_config(["--config", str(REPO / "jobs/configs/imagenet.yaml")])
    assert (imagenet.featurize.model, imagenet.featurize.clusters) == ("vit_small_patch16_224.dino", 5)
    assert (imagenet.select.budget, imagenet.select.shards) == (10000, 8)

    bad = tmp_path / "bad.yaml"
    bad.write_text("featurize:\n  sourse: x\n")
    with pytest.raises(ValueError, match="sourse"):
        job.parse_job_config(["--config", str(bad)])
    bad.write_text("selct:\n  budget: 1\n")
    with pytest.raises(ValueError, match="selct"):
        job.parse_job_config(["--config", str(bad)])
    bad.write_text("featurize: {source: a, out: b}\nselect: {out: c, budget: 1}\npretext: {epochs: 1}\n")
    with pytest.raises(ValueError, match="pretext.*out"):
        job.parse_job_config(["--config", str(bad)])
    bad.write_text("featurize: {source: a, out: b}\nselect: {out: c, budget: 1}\npretext: {out: m.pt, epoch: 1}\n")
    with pytest.raises(ValueError, match="epoch"):
        job.parse_job_config(["--config", str(bad)])

    pt4al, _ = job.parse_job_config(["--config", str(REPO / "jobs/configs/pt4al.yaml")])
    assert pt4al.pretext.source == pt4al.featurize.source  # trains on the pool it featurizes
    assert pt4al.featurize.pretext == pt4al.pretext.out  # and featurize scores with what it trained
    assert (pt4al.pretext.epochs, pt4al.select.method) == (2, "pt4al")


@pytest.mark.pure
def test_scrub_removes_credentials_from_what_the_job_writes(monkeypatch):
    job = load_job_module()
    environ = {"AWS_SECRET_ACCESS_KEY": "abcd-secret-1234", "AWS_SESSION_TOKEN": "tok-5678-xyz", "HOME": "/root"}
    secrets = job.secret_values(environ)
    assert set(secrets) == {"abcd-secret-1234", "tok-5678-xyz"}
    scrubbed = job.scrub(
        {"s3_endpoint": "https://user:pw@minio.local:9000", "note": "key abcd-secret-1234 here",
         "aws_secret_access_key": "anything", "nested": [{"token": "tok-5678-xyz"}], "budget": 5},
        secrets,
    )
    assert scrubbed["s3_endpoint"] == "https://minio.local:9000"
    assert scrubbed["note"] == "key *** here" and scrubbed["aws_secret_access_key"] == "***"
    assert scrubbed["nested"] == [{"token": "***"}] and scrubbed["budget"] == 5

    # Under `ray job submit` (RAY_ADDRESS set by the job system) the job joins the cluster.
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert job.ray_config_for_this_process(job.RayConfig()).address is None
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert job.ray_config_for_this_process(job.RayConfig()).address == "auto"
    assert job.ray_config_for_this_process(job.RayConfig(address="ray://head:10001")).address == "ray://head:10001"


@pytest.mark.ray
@pytest.mark.torch
@pytest.mark.timeout(420)
def test_job_with_pretext_section_trains_then_featurizes_with_losses_then_selects(ray_session, tmp_path):
    """pretext: -> featurize (pretext_loss column) -> select --method pt4al, as one embedded job run."""
    from shape_pool import write_shape_pool

    from raysel.store import FeatureStore

    job = load_job_module()
    write_shape_pool(tmp_path / "pool", count=16)
    sections = yaml.safe_load((REPO / "jobs/configs/pt4al.yaml").read_text())
    sections["pretext"].update(out=str(tmp_path / "pretext.pt"), epochs=1, num_workers=1, batch_size=8)
    sections["featurize"].update(source=str(tmp_path / "pool"), out=str(tmp_path / "store"))
    sections["select"].update(out=str(tmp_path / "selection.parquet"), cycles=2, budget=3)
    sections.pop("ray")
    config_file = tmp_path / "pt4al.yaml"
    config_file.write_text(yaml.safe_dump(sections))

    parsed, _ = job.parse_job_config(["--config", str(config_file)])
    summary = job.run(parsed)

    assert summary["pretext"]["images"] == 16 and summary["pretext"]["epochs"] == 1
    assert os.path.exists(tmp_path / "pretext.pt") and summary["timings"]["pretext_s"] > 0
    losses = pa.concat_tables(FeatureStore(str(tmp_path / "store")).iter_tables(columns=["uri", "pretext_loss"]))
    assert losses.num_rows == 16 and None not in losses.column("pretext_loss").to_pylist()
    selection = pq.read_table(tmp_path / "selection.parquet")
    # cycle 0 samples from batch 0: the half of the pool with the highest pretext losses
    hardest = sorted(zip(losses.column("pretext_loss").to_pylist(), losses.column("uri").to_pylist()), reverse=True)[:8]
    assert selection.num_rows == 3 and set(selection.column("uri").to_pylist()) <= {uri for _, uri in hardest}
    written = yaml.safe_load((tmp_path / "selection.config.yaml").read_text())
    assert written["pretext"]["out"] == str(tmp_path / "pretext.pt")
