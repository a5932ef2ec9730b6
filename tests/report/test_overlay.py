"""Knowledge-cluster overlays, recomputed from the model the store records and checked against the stored clusters."""
from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pytest
import torch

from raysel import schema
from raysel.config import ReportConfig
from raysel.embed.backbone import load_backbone
from raysel.images import read_and_decode
from raysel.report.inputs import read_selection
from raysel.report.overlay import compute_patch_clusters, overlay_section, render_overlay
from raysel.storage import StorageOptions
from raysel.store import FeatureStore, write_store

pytestmark = [pytest.mark.ray, pytest.mark.torch]


def section_of(report_run, **options):
    store = FeatureStore(report_run.store)
    config = ReportConfig(source=report_run.run_dir, out="unused.html", **options)
    return overlay_section(config, store, store.metadata(), read_selection(report_run.selection))


def test_overlays_of_the_first_picks_match_the_stored_clusters(report_run):
    body = section_of(report_run, overlays=3).body
    ranks = re.findall(r'<figure class="overlay" data-rank="(\d+)"', body)
    assert ranks == ["0", "1", "2"]
    assert body.count('class="match"') == 3 and "mismatch" not in body
    assert body.count("data:image/png;base64,") == 3
    assert "random init, seed 0 (as the store records)" in body


def test_kept_patches_and_clusters_are_those_featurize_found(report_run):
    store = FeatureStore(report_run.store)
    metadata = store.metadata()
    rows = pa.concat_tables(list(store.iter_tables(columns=[schema.URI, schema.NUM_KEPT_PATCHES])))
    kept_in_store = dict(zip(rows.column(schema.URI).to_pylist(), rows.column(schema.NUM_KEPT_PATCHES).to_pylist()))
    uris = report_run.pool[:4]
    pixels = np.stack([read_and_decode(u, metadata["image_size"], 10**8, StorageOptions())[0] for u in uris])
    model = load_backbone(metadata["model"], random_init=True, seed=metadata["seed"])
    results = compute_patch_clusters(model, pixels, metadata["tau"], metadata["clusters"], 100, 1e-4)
    for uri, result in zip(uris, results):
        assert result.patch_cluster.shape == (10, 10)  # test_vit: 160 px / 16 px patches
        kept = result.patch_cluster[result.patch_cluster >= 0]
        assert len(kept) == kept_in_store[uri]
        assert set(kept.tolist()) <= set(range(report_run.clusters))
        png = render_overlay(result, report_run.clusters)
        assert png.startswith(b"\x89PNG")


def test_other_weights_show_as_a_mismatch(report_run, tmp_path):
    with torch.random.fork_rng(devices=[]):
        other = load_backbone("test_vit", random_init=True, seed=123)
    torch.save(other.state_dict(), tmp_path / "other.pt")
    body = section_of(report_run, overlays=1, weights=str(tmp_path / "other.pt")).body
    assert body.count('class="mismatch"') == 1 and "other.pt" in body


def test_no_overlays_when_turned_off_or_when_no_model_is_recorded(report_run, tmp_path):
    assert "Overlays turned off" in section_of(report_run, overlays=0).body
    store = write_store(str(tmp_path / "byo"), pa.table({"uri": ["a"], "embedding": [[1.0, 2.0]]}))
    config = ReportConfig(source=store.uri, out="unused.html")
    body = overlay_section(config, store, store.metadata(), read_selection(report_run.selection)).body
    assert 'class="absent"' in body and "records no model" in body
