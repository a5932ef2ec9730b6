"""`accuracy.png`: test accuracy vs labeled images, one line per method (mean over seeds, min-max band)."""
from __future__ import annotations

import io
from collections import defaultdict
from typing import Sequence

from raysel import storage
from raysel.storage import StorageOptions

PLOT_FILE = "accuracy.png"


def accuracy_curves(rows: Sequence[dict]) -> dict[str, dict[int, list[float]]]:
    """method -> labeled count -> accuracies (one per seed)."""
    curves: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        curves[row["method"]][int(row["labeled"])].append(float(row["accuracy"]))
    return curves


def plot_png(rows: Sequence[dict], title: str = "") -> bytes:
    """The plot as PNG bytes (Agg canvas; no global matplotlib state is touched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for method, by_count in sorted(accuracy_curves(rows).items()):
        counts = sorted(by_count)
        means = [sum(by_count[n]) / len(by_count[n]) for n in counts]
        seeds = max(len(by_count[n]) for n in counts)
        line = axes.plot(counts, means, marker="o", label=f"{method} ({seeds} seed{'s' if seeds > 1 else ''})")[0]
        axes.fill_between(counts, [min(by_count[n]) for n in counts], [max(by_count[n]) for n in counts],
                          color=line.get_color(), alpha=0.15, linewidth=0)
    axes.set_xlabel("labeled images")
    axes.set_ylabel("test accuracy (linear probe)")
    axes.set_title(title or "accuracy vs labeled images (line: mean over seeds; band: min-max)", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def write_plot(rows: Sequence[dict], uri: str, options: StorageOptions, title: str = "") -> None:
    storage.write_bytes_atomic(uri, plot_png(rows, title), options)
