"""Accuracy section: drawn from a simulation run's results.parquet (mean over seeds, min-max band)."""
from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raysel.report.accuracy import accuracy_section, read_results
from raysel.report.inputs import ReportInputError
from raysel.storage import StorageOptions

pytestmark = pytest.mark.pure


def write_results(folder, rows: list[tuple]) -> str:
    folder.mkdir(exist_ok=True)
    names = ["method", "seed", "round", "labeled", "accuracy"]
    pq.write_table(pa.table({n: [r[i] for r in rows] for i, n in enumerate(names)}), folder / "results.parquet")
    return str(folder)


def test_mean_min_and_max_over_seeds_per_method_and_budget(tmp_path):
    run = write_results(tmp_path / "sim", [
        ("geal", 0, 0, 10, 0.5), ("geal", 1, 0, 10, 0.7), ("geal", 0, 1, 20, 0.8), ("geal", 1, 1, 20, 0.9),
        ("random", 0, 0, 10, 0.4), ("random", 0, 1, 20, 0.6),
    ])
    assert read_results(run, StorageOptions()) == {"geal": {10: [0.5, 0.7], 20: [0.8, 0.9]}, "random": {10: [0.4], 20: [0.6]}}
    body = accuracy_section(run, StorageOptions()).body
    rows = re.findall(r"<tr><td>(\w+)</td><td>(\d+)</td><td>(\d+)</td><td>([\d.]+)</td><td>([\d.]+)</td><td>([\d.]+)</td></tr>", body)
    assert rows == [("geal", "10", "2", "0.6000", "0.5000", "0.7000"), ("geal", "20", "2", "0.8500", "0.8000", "0.9000"),
                    ("random", "10", "1", "0.4000", "0.4000", "0.4000"), ("random", "20", "1", "0.6000", "0.6000", "0.6000")]
    assert 'id="accuracy-plot"' in body and "data:image/png;base64," in body


def test_no_simulation_says_so():
    body = accuracy_section(None, StorageOptions()).body
    assert 'class="absent"' in body and "No simulation run given" in body


def test_bad_simulation_directories_are_errors(tmp_path):
    with pytest.raises(ReportInputError, match="has no results.parquet"):
        read_results(str(tmp_path), StorageOptions())
    (tmp_path / "results.parquet").write_bytes(b"garbage")
    with pytest.raises(ReportInputError, match="not a readable Parquet"):
        read_results(str(tmp_path), StorageOptions())
    pq.write_table(pa.table({"method": ["geal"], "accuracy": [0.5]}), tmp_path / "results.parquet")
    with pytest.raises(ReportInputError, match=r"no \['seed', 'round', 'labeled'\] column"):
        read_results(str(tmp_path), StorageOptions())
    write_results(tmp_path, [("geal", 0, 0, 10, 1.5)])
    with pytest.raises(ReportInputError, match=r"accuracy must be in \[0, 1\]"):
        read_results(str(tmp_path), StorageOptions())
