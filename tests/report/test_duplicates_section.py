"""The report's near-duplicates section: how many `raysel dedup` removed, and pairs side by side."""
from __future__ import annotations

import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from export_pool import write_images, write_pool_store, write_selection
from raysel.config import ReportConfig
from raysel.report import build_report

pytestmark = pytest.mark.pure


def test_section_counts_removed_images_and_shows_pairs(tmp_path):
    paths = write_images(str(tmp_path / "pool"))
    store = str(tmp_path / "store")
    write_pool_store(store, paths)
    duplicates = str(tmp_path / "duplicates.parquet")
    pq.write_table(pa.table({"uri": [paths[1], paths[3], paths[5]], "duplicate_of": [paths[0], paths[0], paths[2]],
                             "similarity": [0.97, 0.96, 0.99], "cluster": [0, 0, 1]}), duplicates)
    selection = str(tmp_path / "selection.parquet")
    write_selection(selection, [paths[0], paths[2], paths[4]], store, method="coreset")
    record = json.load(open(selection + ".config.json"))
    record["config"]["exclude"] = duplicates  # as `select --exclude` records it
    json.dump(record, open(selection + ".config.json", "w"))
    out = str(tmp_path / "report.html")
    build_report(ReportConfig(source=store, selection=selection, out=out, overlays=0))
    page = open(out).read()
    section = page[page.index('<section id="duplicates">'):]
    assert 'data-removed="3"' in section and "3 images removed as near-duplicates of 2 kept images" in section
    pairs = re.findall(r'class="pair" data-removed="([^"]+)" data-kept="([^"]+)"', section)
    assert pairs == [(paths[1], paths[0]), (paths[3], paths[0]), (paths[5], paths[2])]
    assert section.count("<img") == 6 and "cosine 0.9900" in section


def test_no_duplicates_section_when_the_selection_excluded_nothing(tmp_path):
    paths = write_images(str(tmp_path / "pool"))
    store = str(tmp_path / "store")
    write_pool_store(store, paths)
    selection = str(tmp_path / "selection.parquet")
    write_selection(selection, paths[:2], store, method="coreset")
    out = str(tmp_path / "report.html")
    build_report(ReportConfig(source=store, selection=selection, out=out, overlays=0))
    page = open(out).read()
    assert '<section id="duplicates">' not in page and '<section id="selection">' in page


def test_duplicates_file_without_uri_column_is_named_in_the_error(tmp_path):
    from raysel.report.inputs import ReportInputError

    paths = write_images(str(tmp_path / "pool"))
    store = str(tmp_path / "store")
    write_pool_store(store, paths)
    duplicates = str(tmp_path / "duplicates.csv")
    open(duplicates, "w").write("path,duplicate_of\na.jpg,b.jpg\n")
    selection = str(tmp_path / "selection.parquet")
    write_selection(selection, [paths[0]], store, method="coreset")
    with pytest.raises(ReportInputError, match=r"duplicates file .*duplicates\.csv.* has no 'uri' column"):
        build_report(ReportConfig(source=store, selection=selection, out=str(tmp_path / "r.html"), overlays=0, duplicates=duplicates))
