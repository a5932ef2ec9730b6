"""The report rendered by a real headless Chromium: every section shows, every image decodes, nothing is fetched."""
from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from browser import chromium_page
from raysel.config import ReportConfig
from raysel.report import build_report

pytestmark = [pytest.mark.ray, pytest.mark.torch]

SECTIONS = ("selection", "coverage", "classes", "accuracy", "overlays")


def test_report_renders_in_chromium(report_run, tmp_path):
    out = tmp_path / "report.html"
    build_report(ReportConfig(source=report_run.run_dir, out=str(out), labels=report_run.labels,
                              simulation=report_run.simulation, overlays=2))
    selected = pq.read_table(report_run.selection).sort_by("rank").column("uri").to_pylist()

    with chromium_page() as page:
        console, failed_pages, requests = [], [], []
        page.on("console", lambda message: console.append((message.type, message.text)))
        page.on("pageerror", lambda error: failed_pages.append(str(error)))
        page.on("request", lambda request: requests.append(request.url))
        page.goto(out.as_uri(), wait_until="load")
        page.wait_for_function("Array.from(document.images).every(image => image.complete)")

        shown = page.evaluate(
            "ids => ids.map(id => { const s = document.getElementById(id);"
            " return s && s.offsetHeight > 0 && s.querySelector('h2') ? s.querySelector('h2').innerText : null; })",
            list(SECTIONS),
        )
        images = page.evaluate(
            "Array.from(document.images).map(image => ({alt: image.alt, width: image.naturalWidth,"
            " section: image.closest('section').id}))"
        )
        tiles = page.evaluate(
            "Array.from(document.querySelectorAll('#selection .tile')).map(tile =>"
            " ({rank: tile.dataset.rank, uri: tile.title, caption: tile.querySelector('figcaption').innerText,"
            "   width: tile.querySelector('img').naturalWidth}))"
        )
        absent = page.locator(".absent").count()
        overlays = page.locator("#overlays figure.overlay img").count()

    assert all(shown), dict(zip(SECTIONS, shown))
    assert images and all(image["width"] > 0 for image in images), [i for i in images if i["width"] == 0]
    assert {image["section"] for image in images} == set(SECTIONS)  # every section drew something
    assert len(tiles) == report_run.budget
    assert [int(tile["rank"]) for tile in tiles] == list(range(report_run.budget))
    assert [tile["uri"] for tile in tiles] == selected
    assert all(tile["caption"].startswith(f"#{rank} ") for rank, tile in enumerate(tiles))
    assert "random pick" in tiles[0]["caption"] and "score" in tiles[1]["caption"]
    assert absent == 0  # every input was given, so no section says it is missing
    assert overlays == 2
    assert console == [] and failed_pages == []
    # Self-contained: the page itself is the only thing loaded that is not a data: URI.
    assert [url for url in requests if not url.startswith("data:")] == [out.as_uri()]
