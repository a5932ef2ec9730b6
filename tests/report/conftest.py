"""One small real run shared by the report tests: sample pool -> `featurize` (test_vit) -> `select` (geal)."""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raysel.config import FeaturizeConfig, SelectConfig
from raysel.pipeline import featurize
from raysel.sample_pool import make_sample_pool
from raysel.select import run_selection

POOL_IMAGES = 12
BUDGET = 6
CLUSTERS = 3


@dataclass
class ReportRun:
    run_dir: str  # holds store/ and selection.parquet, the layout `raysel demo` writes
    store: str
    selection: str
    labels: str  # uri,label: the sample pool's shape family
    simulation: str  # a `raysel simulate`-style directory with results.parquet
    pool: list[str]
    budget: int = BUDGET
    clusters: int = CLUSTERS


def write_labels(path: str, uris: list[str]) -> str:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uri", "label"])
        writer.writerows((uri, os.path.basename(os.path.dirname(uri))) for uri in uris)
    return path


def write_results(folder: str) -> str:
    """A results table as `raysel simulate` writes it: 2 methods x 2 seeds x 3 rounds."""
    os.makedirs(folder, exist_ok=True)
    rows = [
        (method, seed, round_, labeled, accuracy)
        for method, base in (("geal", 0.5), ("random", 0.4))
        for seed in (0, 1)
        for round_, labeled in enumerate((10, 20, 40))
        for accuracy in [base + 0.1 * round_ + 0.02 * seed]
    ]
    names = ["method", "seed", "round", "labeled", "accuracy"]
    pq.write_table(pa.table({n: [row[i] for row in rows] for i, n in enumerate(names)}), os.path.join(folder, "results.parquet"))
    return folder


@pytest.fixture(scope="session")
def report_run(ray_session, tmp_path_factory) -> ReportRun:
    root = tmp_path_factory.mktemp("report-run")
    pool = make_sample_pool(str(root / "pool"), count=POOL_IMAGES, size=48)
    store = str(root / "run" / "store")
    featurize(
        FeaturizeConfig(source=str(root / "pool"), out=store, model="test_vit", random_init=True, clusters=CLUSTERS,
                        batch_size=POOL_IMAGES, chunk_size=POOL_IMAGES),
        progress=False,
    )
    selection = str(root / "run" / "selection.parquet")
    run_selection(SelectConfig(store=store, out=selection, budget=BUDGET, checkpoint_every=0))
    return ReportRun(
        run_dir=str(root / "run"),
        store=store,
        selection=selection,
        labels=write_labels(str(root / "labels.csv"), pool),
        simulation=write_results(str(root / "simulation")),
        pool=pool,
    )
