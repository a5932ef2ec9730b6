"""Finding and checking the report's inputs: every bad one is a clear error (exit 2 from the CLI)."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raysel.cli import main
from raysel.config import ReportConfig
from raysel.report.inputs import ReportInputError, read_selection, resolve_inputs
from raysel.store import write_store

pytestmark = pytest.mark.pure


def write_selection(path, uris, ranks=None, scores=None) -> str:
    ranks = list(range(len(uris))) if ranks is None else ranks
    scores = [None] * len(uris) if scores is None else scores
    pq.write_table(pa.table({"uri": pa.array(uris, pa.string()), "rank": pa.array(ranks, pa.int64()),
                             "score": pa.array(scores, pa.float64())}), path)
    return str(path)


def test_selection_is_sorted_by_rank_and_carries_its_recorded_config(tmp_path):
    path = write_selection(tmp_path / "sel.parquet", ["b", "a", "c"], ranks=[1, 0, 2], scores=[0.5, None, 0.25])
    (tmp_path / "sel.parquet.config.json").write_text(json.dumps({"config": {"method": "coreset", "distance": "euclidean"}}))
    selection = read_selection(path)
    assert selection.uris == ["a", "b", "c"] and selection.method == "coreset"
    assert selection.scores[1:].tolist() == [0.5, 0.25] and selection.scores[0] != selection.scores[0]  # NaN


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: write_selection(p / "sel.parquet", []), "is empty"),
        (lambda p: write_selection(p / "sel.parquet", ["a", "a"]), "more than once"),
        (lambda p: write_selection(p / "sel.parquet", ["a", "b"], ranks=[0, 2]), "ranks must be 0 .. 1"),
        (lambda p: pq.write_table(pa.table({"uri": ["a"]}), p / "sel.parquet") or str(p / "sel.parquet"), r"no \['rank'\] column"),
        (lambda p: (p / "sel.parquet").write_bytes(b"nope") and str(p / "sel.parquet"), "not a readable Parquet"),
        (lambda p: str(p / "missing.parquet"), "does not exist"),
        (lambda p: str(p / "sel.csv"), "must be a .parquet file"),
    ],
)
def test_bad_selections(tmp_path, make, message):
    with pytest.raises(ReportInputError, match=message):
        read_selection(make(tmp_path))


def test_a_run_directory_gives_its_store_and_selection_and_a_store_needs_selection(tmp_path):
    store = write_store(str(tmp_path / "run" / "store"), pa.table({"uri": ["a", "b"], "embedding": [[1.0, 0.0], [0.0, 1.0]]}))
    write_selection(tmp_path / "run" / "selection.parquet", ["b"])
    inputs = resolve_inputs(ReportConfig(source=str(tmp_path / "run"), out="r.html"))
    assert inputs.store.uri == store.uri and inputs.selection.uris == ["b"]
    with pytest.raises(ReportInputError, match="pass the selection with --selection"):
        resolve_inputs(ReportConfig(source=store.uri, out="r.html"))
    with pytest.raises(ReportInputError, match="neither a feature store"):
        resolve_inputs(ReportConfig(source=str(tmp_path), out="r.html"))
    with pytest.raises(ReportInputError, match="does not exist"):
        resolve_inputs(ReportConfig(source=str(tmp_path / "nowhere"), out="r.html"))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--overlays", "-1"], "--overlays must be >= 0"),
        (["--max-tiles", "-1"], "--max-tiles must be >= 0"),
        (["--thumbnail-size", "0"], "--thumbnail-size must be >= 1"),
        (["--coverage-vectors", "pixels"], "--coverage-vectors must be"),
        (["--coverage-distance", "manhattan"], "--coverage-distance must be"),
        (["--weights", "w.pt", "--random-init"], "pass either --weights or --random-init"),
    ],
)
def test_cli_rejects_bad_options_with_exit_2(tmp_path, capsys, flags, message):
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r.html"), *flags]) == 2
    assert f"raysel: error: {message}" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def test_cli_names_a_missing_store_and_a_missing_out(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r.html")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "missing required option(s): --out" in capsys.readouterr().err
