"""An endpoint URL carrying `user:pass@` never reaches a saved config, an error line or a log line."""
from __future__ import annotations

import json
import logging
import os

import pytest

from raysel.config import FeaturizeConfig, SelectConfig, to_dict
from raysel.redact import RedactingFilter, redact

SECRET = "s3cr3t-pa55"
ENDPOINT = f"http://raysel-user:{SECRET}@127.0.0.1:9"  # port 9: nothing listens there


@pytest.mark.pure
def test_redact_urls_nested_and_env_secrets(monkeypatch):
    monkeypatch.setenv("MY_API_TOKEN", "tok-123456")
    value = {"a": [ENDPOINT, "s3://bucket/key"], "b": "uses tok-123456"}
    assert redact(value) == {"a": ["http://***@127.0.0.1:9", "s3://bucket/key"], "b": "uses ***"}
    assert SECRET not in json.dumps(to_dict(SelectConfig(store="s", out="o", budget=1, s3_endpoint=ENDPOINT)))


@pytest.mark.pure
def test_log_lines_are_redacted(caplog):
    logger = logging.getLogger("raysel.test_redact")
    handler = logging.StreamHandler(open(os.devnull, "w"))
    record = logger.makeRecord(logger.name, logging.WARNING, __file__, 1, "endpoint %s failed", (ENDPOINT,), None)
    RedactingFilter().filter(record)
    assert SECRET not in record.getMessage() and "***@127.0.0.1" in record.getMessage()
    handler.close()


@pytest.mark.ray
def test_saved_select_config_and_cli_error_carry_no_password(ray_session, tmp_path, capsys):
    import numpy as np
    import pyarrow as pa

    from raysel.cli import main
    from raysel.select import run_selection
    from raysel.store import write_store

    vectors = np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32)
    table = pa.table({"uri": [f"img-{i:02d}" for i in range(20)], "embedding": list(vectors)})
    write_store(str(tmp_path / "store"), table)
    out = str(tmp_path / "sel.parquet")
    run_selection(SelectConfig(store=str(tmp_path / "store"), out=out, budget=3, method="coreset", s3_endpoint=ENDPOINT),
                  progress=False)
    saved = open(out + ".config.json").read()
    assert SECRET not in saved and "***@127.0.0.1:9" in saved

    code = main(["select", "s3://no-bucket/store", "--out", str(tmp_path / "x.parquet"), "--budget", "2",
                 "--s3-endpoint", ENDPOINT, "--s3-max-attempts", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("raysel: error:") and SECRET not in err


@pytest.mark.torch
def test_store_config_carries_no_password(tmp_path):
    from raysel.pipeline import featurize
    from raysel.sample_pool import make_sample_pool

    make_sample_pool(str(tmp_path / "pool"), count=2, seed=0)
    featurize(FeaturizeConfig(source=str(tmp_path / "pool"), out=str(tmp_path / "store"), model="test_vit",
                              random_init=True, s3_endpoint=ENDPOINT), progress=False)
    for name in os.listdir(tmp_path / "store"):
        path = tmp_path / "store" / name
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), name
