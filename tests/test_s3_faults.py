"""S3 under injected faults (tests/fault_proxy.py in front of the moto server): same results, bounded failures.

At a 5% fault rate (503 SlowDown, 500, connection resets, delays), `select` (store reads,
checkpoint and output writes) and `featurize` (listing, reading, shard writes) complete with the
same results as without faults, every request retried within `s3_max_attempts`. With the
endpoint down entirely, a run (select, featurize) fails within a bounded time with a clear error,
and the rerun after the endpoint is back completes. Storage that stops answering after the
listing fails the featurize run (resumable) and records no image as bad.
"""
from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pytest

from fault_proxy import FaultProxy
from raysel import storage
from raysel.config import FeaturizeConfig, SelectConfig
from raysel.select import run_selection, select_reference
from raysel.store import FeatureStore, write_store
from raysel.storage import StorageOptions

pytestmark = [pytest.mark.s3, pytest.mark.ray]

N, K, D, BUDGET = 300, 3, 8, 40


@pytest.fixture
def proxy(s3_endpoint):
    proxy = FaultProxy(s3_endpoint, fault_rate=0.05, seed=14).start()
    yield proxy
    proxy.stop()


def synthetic_store(bucket: str, endpoint: str):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((N, K, D)).astype(np.float32)
    uris = [f"s3://{bucket}/images/img-{i:04d}.png" for i in rng.permutation(N)]
    flat = pa.array(vectors.reshape(-1), pa.float32())
    inner = pa.ListArray.from_arrays(pa.array(np.arange(0, N * K * D + 1, D, dtype=np.int32)), flat)
    clusters = pa.ListArray.from_arrays(pa.array(np.arange(0, N * K + 1, K, dtype=np.int32)), inner)
    table = pa.table({"uri": uris, "clusters": clusters})
    write_store(f"s3://{bucket}/store", table, options=StorageOptions(s3_endpoint=endpoint), rows_per_shard=60)
    return uris, vectors


def test_select_under_five_percent_faults_matches_the_reference(ray_session, s3_endpoint, s3_bucket, proxy):
    uris, vectors = synthetic_store(s3_bucket, s3_endpoint)
    out = f"s3://{s3_bucket}/selection.parquet"
    config = SelectConfig(store=f"s3://{s3_bucket}/store", out=out, budget=BUDGET, shards=2, checkpoint_every=5,
                          s3_endpoint=proxy.url)
    table = run_selection(config, progress=False)
    assert table.equals(select_reference(vectors, uris, BUDGET))
    assert storage.read_parquet(out, StorageOptions(s3_endpoint=s3_endpoint)).equals(table)
    faults = sum(proxy.stats[k] for k in ("slow_down", "internal", "reset", "delay"))
    assert faults > 0, proxy.stats  # the faults happened, and were absorbed


def test_endpoint_down_fails_in_bounded_time_and_resumes(ray_session, s3_endpoint, s3_bucket, proxy, capsys):
    import botocore.exceptions

    from raysel.cli import main

    uris, vectors = synthetic_store(s3_bucket, s3_endpoint)
    proxy.fault_rate = 0.0
    proxy.down()
    config = SelectConfig(store=f"s3://{s3_bucket}/store", out=f"s3://{s3_bucket}/selection.parquet", budget=BUDGET,
                          s3_endpoint=proxy.url, s3_max_attempts=3)
    started = time.time()
    with pytest.raises(botocore.exceptions.EndpointConnectionError, match="Could not connect to the endpoint URL"):
        run_selection(config, progress=False)
    assert time.time() - started < 90
    # the CLI says it on one line, exit 2
    code = main(["select", config.store, "--out", config.out, "--budget", str(BUDGET), "--s3-endpoint", proxy.url,
                 "--s3-max-attempts", "2"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("raysel: error: object storage failed after retries") and "Traceback" not in err
    proxy.up()
    assert run_selection(config, progress=False).equals(select_reference(vectors, uris, BUDGET))


@pytest.mark.torch
def test_featurize_under_five_percent_faults_writes_the_same_store(ray_session, s3_endpoint, s3_bucket, proxy, tmp_path):
    import boto3

    from raysel.pipeline import featurize
    from raysel.sample_pool import make_sample_pool

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    for path in make_sample_pool(str(tmp_path / "pool"), count=12, seed=3):
        client.upload_file(path, s3_bucket, "images/" + path.rsplit("/", 1)[-1])
    common = dict(source=f"s3://{s3_bucket}/images", model="test_vit", random_init=True, clusters=2, batch_size=4,
                  chunk_size=4)
    featurize(FeaturizeConfig(out=f"s3://{s3_bucket}/clean", s3_endpoint=s3_endpoint, **common), progress=False)
    summary = featurize(FeaturizeConfig(out=f"s3://{s3_bucket}/faulty", s3_endpoint=proxy.url, **common), progress=False)
    assert summary.featurized == 12 and summary.failed == 0
    options = StorageOptions(s3_endpoint=s3_endpoint)
    clean = pa.concat_tables(FeatureStore(f"s3://{s3_bucket}/clean", options).iter_tables())
    faulty = pa.concat_tables(FeatureStore(f"s3://{s3_bucket}/faulty", options).iter_tables())
    assert faulty.equals(clean)
    assert sum(proxy.stats[k] for k in ("slow_down", "internal", "reset", "delay")) > 0, proxy.stats


def test_access_denied_on_the_output_names_it_and_resumes_once_allowed(ray_session, s3_endpoint, s3_bucket, proxy):
    from raysel.storage import StorageWriteError

    uris, vectors = synthetic_store(s3_bucket, s3_endpoint)
    proxy.fault_rate = 0.0
    proxy.deny_writes_under = f"/{s3_bucket}/denied/"
    out = f"s3://{s3_bucket}/denied/selection.parquet"
    config = SelectConfig(store=f"s3://{s3_bucket}/store", out=out, budget=BUDGET, s3_endpoint=proxy.url)
    with pytest.raises(StorageWriteError, match=f"cannot write {out}.*nothing was written there"):
        run_selection(config, progress=False)
    assert not storage.exists(out, StorageOptions(s3_endpoint=s3_endpoint))
    proxy.deny_writes_under = None  # the policy is fixed
    assert run_selection(config, progress=False).equals(select_reference(vectors, uris, BUDGET))


# ----------------------------------------------------------------------------- featurize with the endpoint down


def worst_case_seconds(requests: int, attempts: int) -> float:
    """A generous bound on `requests` S3 requests in a row that all fail, from the configured retry settings.

    Per request: s3fs's loop (S3FS_RETRIES) around botocore's `attempts`, each a connect and a read
    timeout plus the standard mode's backoff, capped at 20 s.
    """
    options = StorageOptions()
    return requests * storage.S3FS_RETRIES * attempts * (options.s3_connect_timeout + options.s3_read_timeout + 20.0)


FEATURIZE_FLAGS = dict(model="test_vit", random_init=True, clusters=2, batch_size=4, chunk_size=4)
POOL_IMAGES = 8


def store_tables(path: str) -> tuple[pa.Table, pa.Table]:
    """(rows, errors) of a feature store, as tables."""
    store = FeatureStore(path)
    return pa.concat_tables(store.iter_tables()), store.read_errors()


@pytest.fixture(scope="module")
def pool_on_s3(ray_session, s3_endpoint, tmp_path_factory):
    """(source, rows of a clean run's store): POOL_IMAGES images under s3://BUCKET/images, featurized without faults."""
    import boto3

    from raysel.pipeline import featurize
    from raysel.sample_pool import make_sample_pool

    bucket, folder = "raysel-faults-pool", tmp_path_factory.mktemp("faults-pool")
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=bucket)
    for path in make_sample_pool(str(folder / "pool"), count=POOL_IMAGES, seed=3):
        client.upload_file(path, bucket, "images/" + path.rsplit("/", 1)[-1])
    source = f"s3://{bucket}/images"
    featurize(FeaturizeConfig(source=source, out=str(folder / "clean"), s3_endpoint=s3_endpoint, **FEATURIZE_FLAGS),
              progress=False)
    rows, errors = store_tables(str(folder / "clean"))
    assert rows.num_rows == POOL_IMAGES and errors.num_rows == 0
    return source, rows


@pytest.mark.torch
def test_featurize_with_the_endpoint_down_fails_in_bounded_time_and_resumes(pool_on_s3, proxy, tmp_path, capsys):
    import os

    from raysel.cli import main

    source, clean_rows = pool_on_s3
    proxy.fault_rate = 0.0
    proxy.down()
    out = tmp_path / "store"
    argv = ["featurize", source, "--out", str(out), "--model", "test_vit", "--random-init", "--clusters", "2",
            "--batch-size", "4", "--chunk-size", "4", "--s3-endpoint", proxy.url, "--s3-max-attempts", "2",
            "--no-progress"]
    started = time.time()
    code = main(argv)
    elapsed = time.time() - started
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(
        f"raysel: error: object storage {proxy.url} did not answer listing {source} after 2 attempts"), err
    assert "rerun once the endpoint answers" in err and os.environ["AWS_SECRET_ACCESS_KEY"] not in err
    assert elapsed < worst_case_seconds(requests=2, attempts=2) + 30, elapsed  # 2: the existence check, the listing
    assert not out.exists()  # no store at all, so none that looks complete
    proxy.up()
    assert main(argv) == 0
    assert store_tables(str(out))[0].equals(clean_rows)


@pytest.mark.torch
def test_featurize_with_reads_failing_after_the_listing_records_no_bad_image(pool_on_s3, proxy, tmp_path):
    """Objects unreadable because storage is down (refused, or 503 SlowDown past every retry) are not corrupt
    images: the run fails, resumable, and records none of them as bad input."""
    from raysel.pipeline import featurize
    from raysel.storage import StorageUnavailableError

    source, clean_rows = pool_on_s3
    bucket = source.split("/")[2]
    out = str(tmp_path / "store")
    config = FeaturizeConfig(source=source, out=out, s3_endpoint=proxy.url, s3_max_attempts=2, **FEATURIZE_FLAGS)
    proxy.fault_rate = 0.0
    for outage in ("refused", "slow_down"):
        proxy.faults_under = {f"/{bucket}/images/": outage}  # the listing ("/bucket?list-type=2...") still answers
        started = time.time()
        with pytest.raises(StorageUnavailableError, match=f"object storage {proxy.url} did not answer reading {source}/"):
            featurize(config, progress=False)
        assert time.time() - started < worst_case_seconds(requests=POOL_IMAGES, attempts=2) + 60, outage
        store = FeatureStore(out)
        assert not store.is_complete() and store.read_errors().num_rows == 0, outage  # nothing recorded as bad
    proxy.faults_under = {}
    summary = featurize(config, progress=False)
    assert summary.featurized == POOL_IMAGES and summary.failed == 0
    rows, errors = store_tables(out)
    assert rows.equals(clean_rows) and errors.num_rows == 0
