"""The HTML page: sections, embedded images (base64 data URIs), inline CSS; nothing fetched from elsewhere."""
from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass

from matplotlib.figure import Figure

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px; }
h1 { margin-bottom: 0.2em; }
section { margin: 2em 0; border-top: 1px solid #ccc; padding-top: 0.5em; }
.absent { color: #888; font-style: italic; }
.note { color: #555; font-size: 0.9em; }
.sheet { display: flex; flex-wrap: wrap; gap: 6px; }
.tile { margin: 0; width: min-content; font-size: 0.75em; text-align: center; }
.tile img { display: block; }
.tile .failed { background: #eee; color: #a00; display: flex; align-items: center; justify-content: center; }
.overlays { display: flex; flex-wrap: wrap; gap: 16px; }
.overlay { margin: 0; font-size: 0.8em; max-width: 340px; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; vertical-align: middle; margin: 0 2px 0 6px; }
table { border-collapse: collapse; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
th { background: #f4f4f4; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 12px; }
dt { font-weight: bold; } dd { margin: 0; word-break: break-all; }
"""


def escape(value: object) -> str:
    return html.escape(str(value), quote=True)


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def img(data: bytes, mime: str, alt: str, **attributes: object) -> str:
    extra = "".join(f' {name.replace("_", "-")}="{escape(value)}"' for name, value in attributes.items())
    return f'<img src="{data_uri(data, mime)}" alt="{escape(alt)}"{extra}>'


def new_figure(width: float = 7.0, height: float = 3.5) -> tuple[Figure, object]:
    """A matplotlib figure and its axes, outside pyplot: no global state, no display, rendered by Agg."""
    figure = Figure(figsize=(width, height))
    return figure, figure.subplots()


def figure_png(figure: Figure) -> bytes:
    """A figure as PNG bytes, with no software tag in the file: the same data give the same bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def absent(message: str) -> str:
    return f'<p class="absent">{escape(message)}</p>'


def table(header: list[str], rows: list[list[object]], **attributes: object) -> str:
    extra = "".join(f' {name.replace("_", "-")}="{escape(value)}"' for name, value in attributes.items())
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table{extra}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


@dataclass
class Section:
    """One part of the page: `id` is its HTML id (stable, for tests and links), `body` its HTML."""

    id: str
    title: str
    body: str

    def html(self) -> str:
        return f'<section id="{escape(self.id)}"><h2>{escape(self.title)}</h2>\n{self.body}\n</section>'


def render_page(title: str, facts: dict[str, object], sections: list[Section]) -> str:
    summary = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in facts.items())
    body = "\n".join(section.html() for section in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{escape(title)}</title><style>{CSS}</style></head>\n"
        f"<body><h1>{escape(title)}</h1><dl id=\"summary\">{summary}</dl>\n{body}\n</body></html>\n"
    )
