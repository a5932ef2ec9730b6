"""`raysel report`: one self-contained HTML page about a selection (see docs/operations.md, "Reading the report").

Sections, one module each: the contact sheet (contact_sheet), the coverage curve
(coverage), the class histogram (class_histogram), the accuracy plot of a
simulation run (accuracy) and the knowledge-cluster overlays (overlay); page
assembles the HTML, build runs them all.
"""
from raysel.report.build import ReportSummary, build_report
from raysel.report.inputs import ReportInputError

__all__ = ["build_report", "ReportSummary", "ReportInputError"]
