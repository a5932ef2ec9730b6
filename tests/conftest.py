"""Shared fixtures: one embedded Ray per test session, a real S3 server on loopback.

Tiers (markers in pyproject.toml): pure, ray, torch, s3, cluster, gpu.
"""
from __future__ import annotations

import logging
import os
import socket

import pytest

# Set before any Ray process starts, so every worker inherits them. The S3
# credentials are moto's dummies: the server on loopback accepts any.
os.environ["RAY_AUTH_MODE"] = "disabled"  # explicit, whatever ~/.ray holds on this machine
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.pop("AWS_PROFILE", None)
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request lines drown test output

RAY_TEST_CPUS = 4  # logical CPUs of the shared embedded Ray: room for a few actors on 2 cores


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def ray_session():
    """One embedded Ray for the whole test session (starting Ray costs seconds)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=RAY_TEST_CPUS, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on 127.0.0.1, spoken to over real HTTP by s3fs (here and in Ray workers)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint, request):
    """A fresh, empty bucket on the loopback S3 server; yields its name."""
    import boto3

    name = "raysel-" + request.node.name.lower().replace("_", "-").replace("[", "-").replace("]", "")[:40].strip("-")
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=name)
    yield name
    objects = client.list_objects_v2(Bucket=name).get("Contents", [])
    for obj in objects:
        client.delete_object(Bucket=name, Key=obj["Key"])
    client.delete_bucket(Bucket=name)
