"""Class histogram: selected images per class from a labels file, against the random expectation."""
from __future__ import annotations

import re

import numpy as np
import pytest

from raysel.report.class_histogram import class_counts, class_histogram_section
from raysel.report.inputs import Selection
from raysel.select.errors import LabeledError
from raysel.storage import StorageOptions

pytestmark = pytest.mark.pure


def write_labels(path, rows) -> str:
    path.write_text("uri,label\n" + "".join(f"{uri},{label}\n" for uri, label in rows))
    return str(path)


def counts_table(body: str) -> list[tuple[str, int, float]]:
    table = re.search(r'<table id="class-counts">(.*?)</table>', body).group(1)
    cells = re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td></tr>", table)
    return [(label, int(count), float(expected)) for label, count, expected in cells]


def test_counts_per_class_with_expected_counts_and_unlabeled_picks(tmp_path):
    labels = write_labels(tmp_path / "labels.csv", [("a", "cat"), ("b", "cat"), ("c", "cat"), ("d", "dog"), ("e", "owl"), ("f", "dog")])
    selection = Selection(uri="s.parquet", uris=["a", "b", "d", "zz"], scores=np.full(4, np.nan))
    section = class_histogram_section(selection, labels, StorageOptions())
    # 3 labelled picks; shares in the file: cat 3/6, dog 2/6, owl 1/6.
    assert counts_table(section.body) == [("cat", 2, 1.5), ("dog", 1, 1.0), ("owl", 0, 0.5)]
    assert "never selected: owl" in section.body and "1 selected image(s) have no label" in section.body
    assert 'id="class-plot"' in section.body and "data:image/png;base64," in section.body


def test_numeric_labels_sort_numerically():
    classes, counts, unlabeled = class_counts(["x", "y", "z"], {"x": 10, "y": 2, "z": 2, "w": 1})
    assert (classes, counts, unlabeled) == ([1, 2, 10], [0, 2, 1], 0)


def test_no_labels_says_so():
    section = class_histogram_section(Selection(uri="s", uris=["a"], scores=np.full(1, np.nan)), None, StorageOptions())
    assert 'class="absent"' in section.body and "No labels given" in section.body


def test_a_labels_file_without_a_label_column_is_an_error(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("uri,klass\na,1\n")
    with pytest.raises(LabeledError, match="no 'label' column"):
        class_histogram_section(Selection(uri="s", uris=["a"], scores=np.full(1, np.nan)), str(path), StorageOptions())
