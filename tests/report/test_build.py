"""`raysel report` end to end (CLI and API) on a real featurize + select run."""
from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raysel.api import ReportConfig, report
from raysel.cli import main

pytestmark = [pytest.mark.ray, pytest.mark.torch]


def test_cli_writes_a_self_contained_page_with_every_section(report_run, tmp_path, capsys):
    out = tmp_path / "report.html"
    code = main(["report", report_run.run_dir, "--out", str(out), "--labels", report_run.labels,
                 "--simulation", report_run.simulation, "--overlays", "1"])
    assert code == 0 and "report of 6 picks" in capsys.readouterr().out
    page = out.read_text()
    assert re.findall(r'<section id="(\w+)">', page) == ["selection", "coverage", "classes", "accuracy", "overlays"]
    assert 'class="absent"' not in page
    # self-contained: no external scripts, stylesheets or images
    assert "<script" not in page and "<link" not in page
    assert re.findall(r'src="(?!data:)', page) == []


def test_store_with_selection_flag_and_absent_sections(report_run, tmp_path):
    out = tmp_path / "report.html"
    summary = report(ReportConfig(source=report_run.store, out=str(out), selection=report_run.selection, overlays=0))
    page = out.read_text()
    assert summary.picks == report_run.budget and summary.bytes == len(page.encode())
    assert "No labels given" in page and "No simulation run given" in page and "Overlays turned off" in page


def test_the_same_inputs_give_the_same_bytes(report_run, tmp_path):
    config = dict(source=report_run.run_dir, labels=report_run.labels, simulation=report_run.simulation, overlays=1)
    report(ReportConfig(out=str(tmp_path / "a.html"), **config))
    report(ReportConfig(out=str(tmp_path / "b.html"), **config))
    assert (tmp_path / "a.html").read_bytes() == (tmp_path / "b.html").read_bytes()


def test_a_selection_from_another_store_is_an_error(report_run, tmp_path, capsys):
    selection = tmp_path / "other.parquet"
    pq.write_table(pa.table({"uri": ["/elsewhere/x.png"], "rank": pa.array([0], pa.int64()), "score": pa.array([None], pa.float64())}), selection)
    code = main(["report", report_run.store, "--selection", str(selection), "--out", str(tmp_path / "r.html"), "--overlays", "0"])
    assert code == 2
    assert "the feature store" in capsys.readouterr().err and not (tmp_path / "r.html").exists()
