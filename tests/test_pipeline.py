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
from raysel.pipeline import PAUSE_AFTER_COMMITS_ENV, featurize
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


@pytest.mark.timeout(600)  # two cold Ray starts; minutes when the 2 cores are shared
def test_resume_after_killed_run_finishes_without_redoing_or_duplicating(tmp_path):
    uris = write_pool(tmp_path / "pool", good_files(32, seed=100))
    store_dir = tmp_path / "store"
    args = ["featurize", str(tmp_path / "pool"), "--out", str(store_dir), "--model", "test_vit", "--random-init",
            "--clusters", "3", "--batch-size", "2", "--chunk-size", "2", "--num-cpus", "2", "--no-progress"]
    # The killed run commits 2 chunks, then holds its commits: killed with 2 shards written, 14 to go.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", PAUSE_AFTER_COMMITS_ENV: "2"}
    process = subprocess.Popen([sys.executable, "-m", "raysel.cli", *args], env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shards = store_dir / "shards"
    deadline = time.time() + 300  # startup on 2 shared cores can take minutes
    while time.time() < deadline and not (shards.exists() and len(list(shards.glob("*.parquet"))) >= 2):
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the driver and the Ray it started: a hard crash
    process.wait(timeout=30)
    # A commit already running in the committer actor may still land its shard: snapshot once nothing moves.
    survivors, settle = {}, time.time() + 30
    while time.time() < settle:
        now = {p.name: p.read_bytes() for p in shards.glob("*.parquet")}
        if now == survivors:
            break
        survivors = now
        time.sleep(2)
    assert len(survivors) == 2, "the run must be killed mid-way for this test to mean anything"
    assert not (store_dir / schema.STORE_SUCCESS_FILE).exists()

    result = run_cli(args, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    store = FeatureStore(str(store_dir))
    rows = rows_of(store)
    assert sorted(rows.column("uri").to_pylist()) == uris  # every image once: none lost, none twice
    assert {name: (shards / name).read_bytes() for name in survivors} == survivors  # finished work not redone
    assert store.is_complete() and "32 images" not in result.stderr
    summary = json.loads((store_dir / schema.STORE_SUCCESS_FILE).read_text())["summary"]
    assert summary["processed_this_run"] == 32 - 2 * len(survivors)


def test_refresh_appends_new_images_reports_removed_ones_and_keeps_finished_chunks(ray_session, tmp_path):
    pool = tmp_path / "pool"
    write_pool(pool, good_files(6, seed=300))
    config = FeaturizeConfig(source=str(pool), out=str(tmp_path / "store"), **TINY)
    assert featurize(config, progress=False).featurized == 6
    shards = tmp_path / "store" / "shards"
    before = {p.name: p.read_bytes() for p in shards.glob("*.parquet")}
    assert sorted(before) == ["part-000000.parquet", "part-000001.parquet"]  # 4 + 2 images

    # A week later: 3 new images, one deleted.
    added = write_pool(pool, {f"new/{n}": d for n, d in good_files(3, seed=301).items()})
    os.remove(sorted(pool.glob("good-*"))[0])
    summary = featurize(config, progress=False)
    assert (summary.added_this_run, summary.removed_from_source, summary.processed_this_run) == (3, 1, 3)
    assert "3 new images" in summary.lines() and "1 images of the store are gone" in summary.lines()
    assert {name: (shards / name).read_bytes() for name in before} == before  # finished chunks not redone
    assert sorted(p.name for p in shards.glob("*.parquet")) == [*sorted(before), "part-000002.parquet"]
    store = FeatureStore(config.out)
    rows = rows_of(store).column("uri").to_pylist()
    assert len(rows) == 9 == len(set(rows)) and set(added) <= set(rows)
    removed = pq.read_table(tmp_path / "store" / schema.STORE_REMOVED_FILE).column("uri").to_pylist()
    assert len(removed) == 1 and removed[0] in rows and store.is_complete()
    manifest = pq.read_table(tmp_path / "store" / schema.STORE_MANIFEST_FILE)
    assert manifest.column("chunk_id").to_pylist() == [0, 0, 0, 0, 1, 1, 2, 2, 2]

    # A source that became empty: a clear error, the store untouched.
    for path in list(pool.rglob("*")):
        if path.is_file():
            path.unlink()
    from raysel.storage import StorageError

    with pytest.raises(StorageError, match="no files"):
        featurize(config, progress=False)
    assert rows_of(store).num_rows == 9 and store.is_complete()


def test_store_of_format_1_is_migrated_and_a_newer_format_is_refused(ray_session, tmp_path):
    write_pool(tmp_path / "pool", good_files(5, seed=310))
    config = FeaturizeConfig(source=str(tmp_path / "pool"), out=str(tmp_path / "store"), **TINY)
    featurize(config, progress=False)
    store_dir = tmp_path / "store"
    # What a format-1 store looks like: the manifest has URIs only, chunks are row // chunk_size.
    manifest = pq.read_table(store_dir / schema.STORE_MANIFEST_FILE)
    pq.write_table(manifest.select(["uri"]), store_dir / schema.STORE_MANIFEST_FILE)
    metadata = json.loads((store_dir / schema.STORE_METADATA_FILE).read_text())
    (store_dir / schema.STORE_METADATA_FILE).write_text(json.dumps({**metadata, "format_version": 1}))
    summary = featurize(config, progress=False)
    assert summary.processed_this_run == 0 and summary.featurized == 5
    assert pq.read_table(store_dir / schema.STORE_MANIFEST_FILE).equals(manifest)
    assert json.loads((store_dir / schema.STORE_METADATA_FILE).read_text())["format_version"] == schema.STORE_FORMAT_VERSION

    (store_dir / schema.STORE_METADATA_FILE).write_text(json.dumps({**metadata, "format_version": 99}))
    with pytest.raises(FeatureStoreError, match="store format 99, newer"):
        featurize(config, progress=False)


def rotation_model(path) -> str:
    from raysel.pretext import checkpoints
    from raysel.pretext.rotation import build_rotation_net

    net, spec = build_rotation_net("test_resnet", image_size=32, seed=1)
    checkpoints.save(checkpoints.export_model(net, "test_resnet", spec, {}), str(path))
    return str(path)


def test_cli_featurize_pretext_finishes_on_the_machines_real_cpus(tmp_path):
    """The run that used to hang at 0% on 2 CPUs (decode + scorer + featurizer + K-Means > 2); no --num-cpus here."""
    uris = write_pool(tmp_path / "pool", good_files(6, seed=320))
    model = rotation_model(tmp_path / "rot.pt")
    result = run_cli(["featurize", str(tmp_path / "pool"), "--out", str(tmp_path / "store"), "--pretext", model,
                      "--model", "test_vit", "--random-init", "--clusters", "3", "--batch-size", "auto",
                      "--stall-timeout", "240"], timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "featurized: 6" in result.stdout
    # The cluster-sized defaults on this machine's real CPUs, said in the summary and recorded with the store.
    cpus = os.cpu_count()
    assert "batch_size 32 (auto), chunk_size 256 (auto)" in result.stdout, result.stdout
    assert "featurize: batch_size 32 (auto)" in result.stderr  # said before the progress bar
    resolved = json.loads((tmp_path / "store" / schema.RESOLVED_CONFIG_FILE).read_text())
    chosen = {k: resolved[k] for k in ("batch_size", "chunk_size", "model_actors", "kmeans_actors", "decode_threads")}
    assert chosen == {"batch_size": 32, "chunk_size": 256, "model_actors": 1, "kmeans_actors": 1, "decode_threads": 8}
    resources = json.loads((tmp_path / "store" / schema.STORE_SUCCESS_FILE).read_text())["resources"]
    assert resources["decode_cpus"] <= 1 and f"on {cpus:g} CPUs" in resources["plan"]
    # A rerun with nothing to do (no Ray started) keeps the record of what was chosen.
    again = featurize(FeaturizeConfig(source=str(tmp_path / "pool"), out=str(tmp_path / "store"), pretext=model,
                                      model="test_vit", random_init=True, clusters=3), progress=False)
    assert again.processed_this_run == 0
    assert {k: json.loads((tmp_path / "store" / schema.RESOLVED_CONFIG_FILE).read_text())[k] for k in chosen} == chosen
    rows = rows_of(FeatureStore(str(tmp_path / "store")))
    assert rows.column("uri").to_pylist() == uris
    assert np.isfinite(rows.column(schema.PRETEXT_LOSS).to_numpy()).all()


def test_cli_pretext_train_asking_for_every_cpu_per_worker_fails_fast_naming_the_flag(tmp_path):
    write_pool(tmp_path / "pool", good_files(4, seed=330))
    cpus = os.cpu_count()
    started = time.time()
    result = run_cli(["pretext", "train", str(tmp_path / "pool"), "--out", str(tmp_path / "m.pt"), "--model",
                      "test_resnet", "--image-size", "32", "--epochs", "1", "--cpus-per-worker", str(cpus)], timeout=180)
    assert result.returncode == 2, (result.stdout[-2000:], result.stderr[-3000:])
    assert "--cpus-per-worker" in result.stderr and f"has {cpus}" in result.stderr and "raysel: error:" in result.stderr
    assert time.time() - started < 170 and not (tmp_path / "m.pt").exists()


def test_cli_stall_watchdog_ends_a_run_without_progress(tmp_path):
    write_pool(tmp_path / "pool", good_files(4, seed=340))
    result = run_cli(["featurize", str(tmp_path / "pool"), "--out", str(tmp_path / "store"), "--model", "test_vit",
                      "--random-init", "--no-progress", "--stall-timeout", "0.2"], timeout=180)
    assert result.returncode == 2 and "no progress for 0.2 s (--stall-timeout)" in result.stderr, result.stderr[-3000:]
    assert not (tmp_path / "store" / schema.STORE_SUCCESS_FILE).exists()
