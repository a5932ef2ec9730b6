"""`raysel report`: gather every section and write one self-contained HTML file."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from raysel import __version__, storage
from raysel.config import ReportConfig
from raysel.report.accuracy import accuracy_section
from raysel.report.class_histogram import class_histogram_section
from raysel.report.contact_sheet import contact_sheet_section
from raysel.report.coverage import coverage_section
from raysel.report.duplicates import duplicates_section
from raysel.report.inputs import resolve_inputs
from raysel.report.overlay import overlay_section
from raysel.report.page import render_page

log = logging.getLogger(__name__)


@dataclass
class ReportSummary:
    out: str
    store: str
    selection: str
    picks: int
    bytes: int

    def lines(self) -> str:
        return f"report of {self.picks} picks from {self.store} -> {self.out} ({self.bytes / 1e6:.1f} MB)"


def build_report(config: ReportConfig) -> ReportSummary:
    """Write the report page to `config.out`. Raises a ValueError subclass naming any bad input."""
    config.validate()
    inputs = resolve_inputs(config)
    selection, options = inputs.selection, config.storage()
    sections = [
        contact_sheet_section(selection, config.max_tiles, config.thumbnail_size, options),
        coverage_section(inputs.store, selection, config.coverage_vectors, config.coverage_distance, config.coverage_sample),
        class_histogram_section(selection, config.labels, options),
        accuracy_section(config.simulation, options),
        overlay_section(config, inputs.store, inputs.metadata, selection),
    ]
    if config.duplicates or selection.config.get("exclude"):  # only for selections that left duplicates out
        sections.append(duplicates_section(config.duplicates, selection, config.thumbnail_size, options))
    facts = {
        "feature store": inputs.store.uri,
        "model": inputs.metadata.get("model", "not recorded"),
        "selection": selection.uri,
        "method": selection.method or "not recorded",
        "picks": len(selection.uris),
        "raysel": __version__,
    }
    page = render_page("raysel selection report", facts, sections).encode("utf-8")
    storage.write_bytes_atomic(config.out, page, options)
    log.info("wrote %s (%d bytes)", config.out, len(page))
    return ReportSummary(config.out, inputs.store.uri, selection.uri, len(selection.uris), len(page))
