"""Section: near-duplicates left out of the selection (`raysel dedup` -> `select --exclude`).

How many images the duplicates file removed (and in how many groups), and the first few pairs
side by side: the removed image, the kept image it duplicates, their cosine similarity. The file is
`--duplicates FILE`, else the `exclude` the selection's config records.
"""
from __future__ import annotations

import os

from raysel import storage
from raysel.report.contact_sheet import read_thumbnails
from raysel.report.inputs import ReportInputError, Selection
from raysel.report.page import Section, absent, escape, img
from raysel.storage import StorageOptions

PAIRS_SHOWN = 6


def duplicates_section(duplicates: str | None, selection: Selection, size: int, options: StorageOptions) -> Section:
    source = duplicates or selection.config.get("exclude")
    title = "Near-duplicates left out"
    if not source:
        return Section("duplicates", title, absent("No duplicates file: pass --duplicates FILE (from `raysel dedup`)."))
    table = storage.read_uri_table(source, "duplicates file", ReportInputError, options, string_columns=("uri", "duplicate_of"))
    removed = table.num_rows
    if "duplicate_of" not in table.column_names:
        body = f'<p class="note" id="duplicates-removed" data-removed="{removed}">{removed} images excluded ({escape(source)}).</p>'
        return Section("duplicates", title, body)
    rows = table.slice(0, PAIRS_SHOWN).to_pylist()
    groups = len(set(table.column("duplicate_of").to_pylist()))
    thumbnails = read_thumbnails([u for row in rows for u in (row["uri"], row["duplicate_of"])], size, options)
    cells = []
    for index, row in enumerate(rows):
        pair = []
        for role, uri, (jpeg, reason) in (("removed", row["uri"], thumbnails[2 * index]),
                                          ("kept", row["duplicate_of"], thumbnails[2 * index + 1])):
            picture = (img(jpeg, "image/jpeg", f"{role}: {os.path.basename(uri)}", width=size, height=size)
                       if jpeg is not None else f'<div class="failed" style="width:{size}px;height:{size}px">{escape(reason)}</div>')
            pair.append(f'<figure class="tile" title="{escape(uri)}">{picture}<figcaption>{role}</figcaption></figure>')
        similarity = row.get("similarity")
        caption = "" if similarity is None else f"cosine {similarity:.4f}"
        cells.append(f'<div class="pair" data-removed="{escape(row["uri"])}" data-kept="{escape(row["duplicate_of"])}">'
                     f'<div class="sheet">{"".join(pair)}</div><p class="note">{escape(caption)}</p></div>')
    body = (
        f'<p class="note" id="duplicates-removed" data-removed="{removed}">{removed} images removed as near-duplicates '
        f'of {groups} kept images ({escape(source)}); the first {len(rows)} pairs, removed beside kept:</p>\n'
        f'<div class="overlays">{"".join(cells)}</div>'
    )
    return Section("duplicates", title, body)
