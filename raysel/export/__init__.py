"""`raysel export`: a selection in the import format of a labeling tool, and labels coming back.

One module per format (csv_format, coco, label_studio, cvat, fiftyone_format), each a function
`(picks, config) -> {uri: bytes}` of the files to write; `run.export_selection` reads and checks the
selection, builds every file in memory (so a bad input writes nothing) and writes them, then
`<out>.raysel.json` with this export's config and the selection's own. `labels_import` reads a
Label Studio JSON export or a COCO file back into `uri,label`.
"""
from raysel.export.errors import ExportError
from raysel.export.labels_import import ImportSummary, import_labels
from raysel.export.run import ExportSummary, export_selection

__all__ = ["export_selection", "ExportSummary", "ExportError", "import_labels", "ImportSummary"]
