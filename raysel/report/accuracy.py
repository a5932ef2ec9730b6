"""Section 4: accuracy vs labeled images, from a `raysel simulate` run (DIR/results.parquet).

Drawn here from the table (mean over seeds, min-max band), so the page does
not depend on the run's own PNG.
"""
from __future__ import annotations

import pyarrow as pa

from raysel import storage
from raysel.report.inputs import ReportInputError
from raysel.report.page import Section, absent, escape, figure_png, img, new_figure, table
from raysel.storage import StorageOptions

RESULTS_FILE = "results.parquet"
RESULT_COLUMNS = ("method", "seed", "round", "labeled", "accuracy")


def read_results(run_dir: str, options: StorageOptions) -> dict[str, dict[int, list[float]]]:
    """method -> labeled count -> accuracies (one per seed), checked."""
    uri = storage.join(run_dir, RESULTS_FILE)
    try:
        results = storage.read_parquet(uri, options)
    except FileNotFoundError as exc:
        raise ReportInputError(f"simulation directory {run_dir!r} has no {RESULTS_FILE} (is it a `raysel simulate --out` directory?)") from exc
    except (pa.ArrowInvalid, OSError) as exc:
        raise ReportInputError(f"{uri} is not a readable Parquet file: {exc}") from exc
    missing = [c for c in RESULT_COLUMNS if c not in results.column_names]
    if missing:
        raise ReportInputError(f"{uri} has no {missing} column(s) (columns: {results.column_names})")
    if results.num_rows == 0:
        raise ReportInputError(f"{uri} has no rows")
    curves: dict[str, dict[int, list[float]]] = {}
    for row in results.select(list(RESULT_COLUMNS)).to_pylist():
        accuracy, labeled = row["accuracy"], row["labeled"]
        if accuracy is None or labeled is None or not 0.0 <= float(accuracy) <= 1.0:
            raise ReportInputError(f"{uri}: accuracy must be in [0, 1] with a labeled count; got {row}")
        curves.setdefault(str(row["method"]), {}).setdefault(int(labeled), []).append(float(accuracy))
    return curves


def accuracy_section(run_dir: str | None, options: StorageOptions) -> Section:
    title = "Accuracy vs labeled images"
    if run_dir is None:
        return Section("accuracy", title, absent("No simulation run given (--simulation DIR from `raysel simulate`): no accuracy plot."))
    curves = read_results(run_dir, options)
    figure, axes = new_figure()
    rows = []
    for method in sorted(curves):
        labeled = sorted(curves[method])
        means = [sum(curves[method][n]) / len(curves[method][n]) for n in labeled]
        line = axes.plot(labeled, means, marker="o", label=method)[0]
        lows = [min(curves[method][n]) for n in labeled]
        highs = [max(curves[method][n]) for n in labeled]
        axes.fill_between(labeled, lows, highs, color=line.get_color(), alpha=0.2)
        rows += [[method, n, len(curves[method][n]), f"{m:.4f}", f"{lo:.4f}", f"{hi:.4f}"]
                 for n, m, lo, hi in zip(labeled, means, lows, highs)]
    axes.set_xlabel("labeled images")
    axes.set_ylabel("test accuracy")
    axes.grid(alpha=0.3)
    axes.legend()
    body = (
        f'<p class="note">From {escape(storage.join(run_dir, RESULTS_FILE))}: mean over seeds, band from min to max.</p>\n'
        + img(figure_png(figure), "image/png", "accuracy vs labeled images", id="accuracy-plot")
        + "\n"
        + table(["method", "labeled", "seeds", "mean accuracy", "min", "max"], rows, id="accuracy-table")
    )
    return Section("accuracy", title, body)
