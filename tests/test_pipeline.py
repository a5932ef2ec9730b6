"""featurize end to end on a real embedded Ray, a real S3 server on loopback and real `ray start` nodes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from image_files import bad_files, good_files, odd_mode_files
from raysel import schema
from raysel.config import FeaturizeConfig
from raysel.pipeline import featurize
from raysel.store import FeatureStore, FeatureStoreError, vectors_of

pytestmark = [pytest.mark.ray, pytest.mark.torch]
TINY = dict(model="test_vit", random_init=True, clusters=3, batch_size=4, chunk_size=4)


def write_pool(folder, files) -> list[str]:
    for name, data in files.items():
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(data)
    return sorted(os.path.join(folder, name) for name in files)


def rows_of(store: FeatureStore) -> pa.Table:
    return pa.concat_tables(list(store.iter_tables())).sort_by(schema.URI)


def reference_rows(uris: list[str], config: FeaturizeConfig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Single-process reference: the same kernels called directly, no Ray, no pipeline."""
    import torch

    from raysel.cluster.knowledge_clusters import KnowledgeClusterer
    from raysel.embed.featurizer import Featurizer
    from raysel.images import DecodeBatch
    from raysel.pipeline import model_input_spec

    spec = model_input_spec(config)
    decoded = DecodeBatch(spec.image_size, config.max_image_pixels, config.storage())({"uri": np.array(uris, dtype=object)})
    featurizer = Featurizer(config.model, config.weights, config.random_init, config.tau, config.storage(), seed=config.seed)
    with torch.inference_mode():
        tokens = featurizer(decoded)
    clusters = KnowledgeClusterer(config.clusters, config.kmeans_iters, config.kmeans_tol)(tokens)
    return {u: (e, c) for u, e, c in zip(clusters["uri"], clusters["embedding"], clusters["clusters"])}


def test_featurize_local_folder_keeps_good_images_and_records_bad_ones(ray_session, tmp_path):
    good = {**good_files(9), **odd_mode_files()}
    bad = {name: data for name, (data, _) in bad_files().items()}
    uris = write_pool(tmp_path / "pool", {**good, **bad})
    config = FeaturizeConfig(source=str(tmp_path / "pool"), out=str(tmp_path / "store"), **TINY)
    summary = featurize(config, progress=False)

    store = FeatureStore(config.out)
    rows = rows_of(store)
    errors = store.read_errors()
    assert summary.images == len(uris) and summary.featurized == len(good) and summary.failed == len(bad)
    assert sorted(rows.column("uri").to_pylist()) == sorted(str(tmp_path / "pool" / n) for n in good)
    reasons = dict(zip(errors.column("uri").to_pylist(), errors.column("error").to_pylist()))
    for name, (_, word) in bad_files().items():
        assert word in reasons[str(tmp_path / "pool" / name)]
    embedding = vectors_of(rows.column("embedding"), 2)
    clusters = vectors_of(rows.column("clusters"), 3)
    assert embedding.shape == (len(good), 64) and clusters.shape == (len(good), 3, 64)
    assert np.isfinite(clusters).all()
    assert store.is_complete()
    metadata = store.metadata()
    assert (metadata["model"], metadata["tau"], metadata["clusters"], metadata["image_size"]) == ("test_vit", 0.5, 3, 160)

    # The distributed pipeline computes what the kernels compute when called directly.
    reference = reference_rows(rows.column("uri").to_pylist(), config)
    for uri, vector, image_clusters in zip(rows.column("uri").to_pylist(), embedding, clusters):
        np.testing.assert_allclose(vector, reference[uri][0], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(image_clusters, reference[uri][1], rtol=1e-3, atol=1e-3)

    # A complete store reruns as a no-op; other settings are refused.
    again = featurize(config, progress=False)
    assert again.processed_this_run == 0 and again.featurized == len(good)
    with pytest.raises(FeatureStoreError, match="tau"):
        featurize(FeaturizeConfig(source=config.source, out=config.out, **{**TINY, "clusters": 3}, tau=0.3), progress=False)


@pytest.mark.s3
def test_featurize_from_s3_prefix_and_manifest_into_s3_store(ray_session, s3_endpoint, s3_bucket, tmp_path):
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    files = {**good_files(6, seed=50), "broken.jpg": bad_files()["bad-truncated.jpg"][0]}
    for name, data in files.items():
        client.put_object(Bucket=s3_bucket, Key=f"images/{name}", Body=data)
    config = FeaturizeConfig(
        source=f"s3://{s3_bucket}/images", out=f"s3://{s3_bucket}/store", s3_endpoint=s3_endpoint, **TINY
    )
    summary = featurize(config, progress=False)
    store = FeatureStore(config.out, config.storage())
    assert (summary.featurized, summary.failed) == (6, 1)
    assert set(rows_of(store).column("uri").to_pylist()) == {f"s3://{s3_bucket}/images/good-{i:03d}.{'png' if i % 2 == 0 else 'jpeg'}" for i in range(6)}

    # A manifest naming an object that is gone by the time it is read: recorded, not fatal.
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("uri\n" + f"s3://{s3_bucket}/images/good-000.png\ns3://{s3_bucket}/images/deleted.jpg\n")
    summary = featurize(
        FeaturizeConfig(source=str(manifest), out=str(tmp_path / "store2"), s3_endpoint=s3_endpoint, **TINY), progress=False
    )
    errors = FeatureStore(str(tmp_path / "store2")).read_errors().to_pylist()
    assert summary.featurized == 1 and errors == [{"uri": f"s3://{s3_bucket}/images/deleted.jpg", "error": errors[0]["error"]}]
    assert "missing object" in errors[0]["error"]


def run_cli(args: list[str], timeout: float = 180, **popen) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "raysel.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, **popen)


def test_cli_bad_sources_exit_non_zero_with_clear_errors(tmp_path, capsys):
    from raysel.cli import main

    tiny = ["--out", str(tmp_path / "s"), "--model", "test_vit", "--random-init"]
    assert main(["featurize", str(tmp_path / "missing"), *tiny]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "bad.csv").write_text("path\n/a.jpg\n")
    assert main(["featurize", str(tmp_path / "bad.csv"), *tiny]) == 2
    assert "no 'uri' column" in capsys.readouterr().err
    assert main(["featurize", str(tmp_path), "--out", str(tmp_path / "s"), "--model", "no_such_model_xyz"]) == 2
    assert "unknown timm model" in capsys.readouterr().err
    assert main(["featurize", str(tmp_path), "--out", str(tmp_path / "s"), "--tau", "1.5"]) == 2
    assert "--tau" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()  # nothing half-written


def test_resume_after_killed_run_finishes_without_redoing_or_duplicating(tmp_path):
    uris = write_pool(tmp_path / "pool", good_files(64, seed=100))
    store_dir = tmp_path / "store"
    args = ["featurize", str(tmp_path / "pool"), "--out", str(store_dir), "--model", "test_vit", "--random-init",
            "--clusters", "3", "--batch-size", "2", "--chunk-size", "2", "--num-cpus", "2", "--no-progress"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    process = subprocess.Popen([sys.executable, "-m", "raysel.cli", *args], env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shards = store_dir / "shards"
    deadline = time.time() + 150
    while time.time() < deadline and not (shards.exists() and len(list(shards.glob("*.parquet"))) >= 2):
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the driver and the Ray it started: a hard crash
    process.wait(timeout=30)
    survivors = {p.name: p.read_bytes() for p in shards.glob("*.parquet")}
    assert 2 <= len(survivors) < 32, "the run must be killed mid-way for this test to mean anything"
    assert not (store_dir / schema.STORE_SUCCESS_FILE).exists()

    result = run_cli(args, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    store = FeatureStore(str(store_dir))
    rows = rows_of(store)
    assert sorted(rows.column("uri").to_pylist()) == uris  # every image once: none lost, none twice
    assert {name: (shards / name).read_bytes() for name in survivors} == survivors  # finished work not redone
    assert store.is_complete() and "64 images" not in result.stderr
    summary = json.loads((store_dir / schema.STORE_SUCCESS_FILE).read_text())["summary"]
    assert summary["processed_this_run"] == 64 - 2 * len(survivors)


@pytest.mark.cluster
def test_featurize_against_running_local_cluster_by_address(tmp_path):
    from local_cluster import LocalRayCluster

    write_pool(tmp_path / "pool", good_files(6, seed=200))
    with LocalRayCluster() as cluster:
        cluster.start_head(num_cpus=2)
        result = run_cli(["featurize", str(tmp_path / "pool"), "--out", str(tmp_path / "store"), "--address",
                          cluster.address, "--no-progress", *sum(([f"--{k.replace('_', '-')}", str(v)] for k, v in TINY.items() if k != "random_init"), []), "--random-init"])
        assert result.returncode == 0, result.stderr[-3000:]
        assert "featurized: 6" in result.stdout and "images/s" in result.stdout
    assert FeatureStore(str(tmp_path / "store")).num_rows() == 6
