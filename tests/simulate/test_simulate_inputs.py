"""Bad inputs to `raysel simulate`: each fails with a clear ValueError before any round runs."""
from __future__ import annotations

import os

import pyarrow as pa
import pytest

from blob_pool import blob_table, write_blob_splits, write_labels
from raysel.cli import main
from raysel.config import SimulateConfig
from raysel.select import UnknownMethodError
from raysel.simulate import (
    EmptyTestSplitError,
    OracleLabelsError,
    SelectOptionsError,
    SimulationBudgetError,
    run_simulation,
)
from raysel.simulate.oracle import Oracle
from raysel.store import write_store

pytestmark = pytest.mark.pure  # every error below is raised before selection needs Ray


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    return write_blob_splits(tmp_path_factory.mktemp("blobs"))


def simulate(splits, out, **overrides):
    values = {**splits, "out": str(out), "methods": "random", "budgets": "2,4", "seeds": "0", **overrides}
    return run_simulation(SimulateConfig(**values))


def test_pool_image_without_label(splits, tmp_path):
    _, labels = blob_table("pool", 20, seed=1)
    del labels["mem://pool/img-007.png"]
    partial = write_labels(str(tmp_path / "partial.csv"), labels)
    with pytest.raises(OracleLabelsError, match=r"no label for 1 image\(s\).*img-007"):
        simulate(splits, tmp_path / "sim", labels=partial)


def test_labels_of_unknown_images(splits, tmp_path):
    _, labels = blob_table("pool", 20, seed=1)
    labels["mem://elsewhere/stray.png"] = 1
    extra = write_labels(str(tmp_path / "extra.csv"), labels)
    with pytest.raises(OracleLabelsError, match="the store does not have.*stray.png"):
        simulate(splits, tmp_path / "sim", labels=extra)


def test_empty_test_split(splits, tmp_path):
    table, _ = blob_table("test", 1, seed=2)
    empty = write_store(str(tmp_path / "empty-store"), table.slice(0, 0)).uri
    with pytest.raises(EmptyTestSplitError, match="test split feature store .* has no images"):
        simulate(splits, tmp_path / "sim", test_store=empty, test_labels=write_labels(str(tmp_path / "none.csv"), {}))


@pytest.mark.parametrize("budgets", ["4,2", "2,2", "0,3", "2,x", ""])
def test_budgets_must_increase(splits, tmp_path, budgets):
    with pytest.raises(ValueError, match="--budgets"):
        simulate(splits, tmp_path / "sim", budgets=budgets)


def test_budgets_larger_than_the_pool(splits, tmp_path):
    with pytest.raises(SimulationBudgetError, match="end at 61 labeled images but the pool holds 60"):
        simulate(splits, tmp_path / "sim", budgets="10,61")


def test_unknown_method_lists_the_valid_ones(splits, tmp_path):
    with pytest.raises(UnknownMethodError, match="'nope'.*valid methods: .*coreset.*random"):
        simulate(splits, tmp_path / "sim", methods="random,nope")


@pytest.mark.parametrize("options, message", [("{budget: 3}", "cannot set"), ("{colour: red}", "unknown"), ("[1, 2]", "mapping")])
def test_bad_select_options(splits, tmp_path, options, message):
    with pytest.raises(SelectOptionsError, match=message):
        simulate(splits, tmp_path / "sim", select_options=options)


def test_embedding_dimensions_must_match(splits, tmp_path):
    table, labels = blob_table("test", 3, seed=2)
    narrow = table.set_column(1, "embedding", pa.array([v[:4] for v in table.column("embedding").to_pylist()], pa.list_(pa.float32())))
    store = write_store(str(tmp_path / "narrow"), narrow).uri
    with pytest.raises(OracleLabelsError, match="8 dimensions and the test split's 4"):
        simulate(splits, tmp_path / "sim", test_store=store, test_labels=write_labels(str(tmp_path / "t.csv"), labels))


def test_oracle_refuses_images_it_has_no_label_for():
    oracle = Oracle(pool_labels={"a": 0, "b": 1}, test_labels={"t": 1})
    assert oracle.reveal(["b", "a"]) == [1, 0]
    with pytest.raises(OracleLabelsError, match="no label for picked image"):
        oracle.reveal(["a", "c"])


def test_cli_reports_bad_input_with_exit_code_2(splits, tmp_path, capsys):
    argv = ["simulate", splits["store"], "--labels", splits["labels"], "--test-store", splits["test_store"],
            "--test-labels", splits["test_labels"], "--out", str(tmp_path / "sim"), "--budgets", "5,3"]
    assert main(argv) == 2
    assert "raysel: error: --budgets must be labeled counts >= 1, strictly increasing" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "sim")
