"""Section 3: how many selected images fall in each class, against what a random pick would give.

Labels come from a labels file (`uri`, `label`; raysel.select.supervision.labels). The
expected count of a class is budget x its share of the labels file: what a
uniform random sample of the labelled images would hold on average.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from raysel.report.inputs import Selection
from raysel.report.page import Section, absent, escape, figure_png, img, new_figure, table
from raysel.select.supervision.labels import read_labels
from raysel.storage import StorageOptions


def class_counts(selection_uris: list[str], labels: dict[str, Any]) -> tuple[list[Any], list[int], int]:
    """(classes in sorted order, selected images per class, selected images without a label)."""
    classes = sorted(set(labels.values()), key=lambda value: (isinstance(value, str), value))
    counts = Counter(labels[u] for u in selection_uris if u in labels)
    unlabeled = sum(1 for u in selection_uris if u not in labels)
    return classes, [counts.get(c, 0) for c in classes], unlabeled


def class_histogram_section(selection: Selection, labels_uri: str | None, options: StorageOptions) -> Section:
    title = "Classes of the selection"
    if labels_uri is None:
        return Section("classes", title, absent("No labels given (--labels FILE with 'uri' and 'label'): no class histogram."))
    labeled = read_labels(labels_uri, options)
    labels = dict(zip(labeled.uris, labeled.labels))
    classes, counts, unlabeled = class_counts(selection.uris, labels)
    share = Counter(labeled.labels)
    labelled_selected = len(selection.uris) - unlabeled
    expected = [labelled_selected * share[c] / len(labeled.labels) for c in classes]

    figure, axes = new_figure(max(5.0, 0.45 * len(classes) + 2), 3.5)
    positions = np.arange(len(classes))
    axes.bar(positions, counts, color="tab:blue", label="selected")
    axes.scatter(positions, expected, color="tab:red", marker="_", s=300, zorder=3, label="expected from a random pick")
    axes.set_xticks(positions, [str(c) for c in classes], rotation=90 if len(classes) > 20 else 0)
    axes.set_xlabel("class")
    axes.set_ylabel("selected images")
    axes.legend()
    rows = [[c, n, f"{e:.1f}"] for c, n, e in zip(classes, counts, expected)]
    missing = [str(c) for c, n in zip(classes, counts) if n == 0]
    notes = [f"{len(classes)} classes in {labels_uri}; {sum(1 for n in counts if n)} of them selected"]
    if missing:
        notes.append("never selected: " + ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else ""))
    if unlabeled:
        notes.append(f"{unlabeled} selected image(s) have no label in the file")
    body = (
        f'<p class="note">{escape("; ".join(notes))}.</p>\n'
        + img(figure_png(figure), "image/png", "class histogram", id="class-plot")
        + "\n"
        + table(["class", "selected", "expected (random)"], rows, id="class-counts")
    )
    return Section("classes", title, body)
