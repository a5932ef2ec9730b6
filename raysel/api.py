"""The Python API: the same entry points the CLI and the jobs call.

    from raysel.api import featurize, select, FeaturizeConfig, SelectConfig
    featurize(FeaturizeConfig(source="s3://bucket/images", out="s3://bucket/store"))
    select(SelectConfig(store="s3://bucket/store", budget=1000, out="selection.parquet"))
    train_pretext(PretextConfig(source="s3://bucket/images", out="s3://bucket/pretext.pt"))  # PT4AL, docs/pt4al.md
    simulate(SimulateConfig(store="pool/", labels="pool.csv", test_store="test/", test_labels="test.csv", out="sim/"))
    dedup(DedupConfig(store="s3://bucket/store", threshold=0.95, out="duplicates.parquet"))
    export(ExportConfig(selection="selection.parquet", format="label-studio", out="tasks.json"))
"""
from __future__ import annotations

import os

import pyarrow as pa

from raysel.config import FeaturizeConfig, PretextConfig, RayConfig, ReportConfig, SelectConfig, SimulateConfig
from raysel.config import DedupConfig, ExportConfig, ImportLabelsConfig
from raysel.pipeline import FeaturizeSummary
from raysel.pipeline import featurize as _featurize

__all__ = ["FeaturizeConfig", "SelectConfig", "PretextConfig", "RayConfig", "featurize", "select", "train_pretext", "demo",
           "ReportConfig", "report", "SimulateConfig", "simulate",
           "ExportConfig", "export", "ImportLabelsConfig", "import_labels", "DedupConfig", "dedup"]

DEMO_MODEL = "test_vit"  # timm's tiny registered ViT: no download, random init


def featurize(config: FeaturizeConfig, ray_config: RayConfig | None = None, progress: bool = True) -> FeaturizeSummary:
    return _featurize(config, ray_config, progress=progress)


def train_pretext(config: PretextConfig, ray_config: RayConfig | None = None):
    """PT4AL's rotation model (Ray Train); returns a PretextSummary. See raysel.pretext.training."""
    from raysel.pretext.training import train_pretext as _train_pretext

    return _train_pretext(config, ray_config)


def select(config: SelectConfig, ray_config: RayConfig | None = None) -> pa.Table:
    from raysel.runtime import ensure_ray
    from raysel.select import run_selection

    ensure_ray(ray_config)
    return run_selection(config)


def report(config: ReportConfig):
    """Write the HTML report of a selection (no Ray needed); returns a ReportSummary. See raysel.report."""
    from raysel.report import build_report

    return build_report(config)


def simulate(config: SimulateConfig, ray_config: RayConfig | None = None) -> pa.Table:
    """Simulated labeling rounds per method and seed; returns the results table. See raysel.simulate."""
    from raysel.runtime import ensure_ray
    from raysel.simulate import run_simulation

    config.validate()
    ensure_ray(ray_config)
    return run_simulation(config)


def export(config: ExportConfig):
    """Write a selection in a labeling tool's format (no Ray needed); returns an ExportSummary. See raysel.export."""
    from raysel.export import export_selection

    return export_selection(config)


def import_labels(config: ImportLabelsConfig):
    """A Label Studio JSON export or COCO file -> uri,label (no Ray needed); returns an ImportSummary."""
    from raysel.export import import_labels as _import_labels

    return _import_labels(config)


def dedup(config: DedupConfig, ray_config: RayConfig | None = None) -> pa.Table:
    """Near-duplicates of a feature store (SemDeDup on Ray shard actors); returns the duplicates table."""
    from raysel.dedup import run_dedup
    from raysel.runtime import ensure_ray

    config.validate()
    ensure_ray(ray_config)
    return run_dedup(config)


def demo(out: str, images: int = 48, budget: int = 8, num_cpus: int | None = None) -> pa.Table:
    """Sample pool -> featurize -> select -> report on an embedded Ray, printing where everything went."""
    from raysel.sample_pool import make_sample_pool

    pool = os.path.join(out, "pool")
    store = os.path.join(out, "store")
    selection = os.path.join(out, "selection.parquet")
    make_sample_pool(pool, count=images)
    print(f"sample pool: {images} images in {pool}")
    ray_config = RayConfig(num_cpus=num_cpus)
    summary = featurize(FeaturizeConfig(source=pool, out=store, model=DEMO_MODEL, random_init=True), ray_config)
    print(summary.lines())
    table = select(SelectConfig(store=store, out=selection, budget=budget), ray_config)
    print(f"selection: {table.num_rows} images -> {selection}")
    for row in table.to_pylist()[:budget]:
        score = "first pick" if row["score"] is None else f"{row['score']:.4f}"
        print(f"  {row['rank']:3d}  {score:>10}  {row['uri']}")
    page = os.path.join(out, "report.html")
    report(ReportConfig(source=out, out=page))
    print(f"report: {page} (open it in a browser)")
    return table
