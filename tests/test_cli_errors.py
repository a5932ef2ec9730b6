"""Errors a new user meets first: one line `raysel: error: ...`, exit 2, before Ray or any output."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from raysel.cli import main

RAYSEL = [sys.executable, "-m", "raysel.cli"]


@pytest.mark.pure
def test_budget_zero_says_the_budget_must_be_at_least_one(tmp_path, capsys):
    code = main(["select", str(tmp_path / "store"), "--budget", "0", "--out", str(tmp_path / "s.parquet")])
    err = capsys.readouterr().err
    assert code == 2
    assert "raysel: error:" in err and "--budget must be >= 1, got 0" in err
    assert "missing" not in err


@pytest.mark.pure
def test_budget_not_given_is_missing(tmp_path, capsys):
    assert main(["select", str(tmp_path / "store"), "--out", str(tmp_path / "s.parquet")]) == 2
    assert "missing required option(s): --budget" in capsys.readouterr().err


@pytest.mark.torch
def test_featurize_without_a_route_to_the_hub_fails_in_the_driver(tmp_path):
    """Default hub model, no cached weights, no hub: a one-line error before Ray starts, no store written."""
    from raysel.sample_pool import make_sample_pool

    make_sample_pool(str(tmp_path / "pool"), count=4, seed=0)
    ray_tmp = tmp_path / "ray"
    ray_tmp.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-cache"), "RAY_TMPDIR": str(ray_tmp)}
    result = subprocess.run(
        [*RAYSEL, "featurize", str(tmp_path / "pool"), "--out", str(tmp_path / "store")],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("raysel: error: could not get the pretrained weights"), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not os.listdir(ray_tmp)  # Ray never started
    assert not (tmp_path / "store").exists()  # nothing half-written
