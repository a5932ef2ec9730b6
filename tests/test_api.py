"""The Python API's demo: what the README's first command runs (sample pool -> featurize -> select -> report)."""
from __future__ import annotations

import os

import pyarrow.parquet as pq
import pytest

from raysel import api
from raysel.store import FeatureStore

pytestmark = [pytest.mark.ray, pytest.mark.torch]


@pytest.mark.timeout(240)
def test_demo_writes_pool_store_selection_and_report(ray_session, tmp_path, capsys):
    out = str(tmp_path / "demo")
    table = api.demo(out, images=12, budget=4)

    printed = capsys.readouterr().out
    selection = os.path.join(out, "selection.parquet")
    assert selection in printed and os.path.join(out, "report.html") in printed
    assert pq.read_table(selection).equals(table) and table.num_rows == 4
    assert len(set(table.column("uri").to_pylist())) == 4
    assert FeatureStore(os.path.join(out, "store")).num_rows() == 12
    page = open(os.path.join(out, "report.html")).read()
    for uri in table.column("uri").to_pylist():
        assert os.path.basename(uri) in page  # every pick is on the contact sheet
