"""Building blocks of the self-contained HTML reports (no template engine, no network).

Every image is inlined as a ``data:`` URI, the stylesheet is inlined from ``report.css`` beside
this module, so a report opens offline from a USB stick or an e-mail attachment.
"""
from __future__ import annotations

import base64
import html
import math
import re
from datetime import datetime, timezone
from importlib import resources
from typing import Iterable, Sequence

__all__ = ["esc", "page", "section", "table_html", "image_html", "warnings_html", "cards_html",
           "fmt", "versions_html", "data_uri", "flicker_html", "messages_html", "readable"]

#: An absolute path (or file:// URI) inside a message: two components at least, not part of a
#: word ("1/s", "mg/kg", "A/P" and bids: URIs are not paths).
_ABS_PATH = re.compile(r"(?:file://(?=/)|(?<![\w.~/:-]))/(?:[^\s/'\"(),;:]+/)+[^\s/'\"(),;:]*")


def readable(message, roots: Sequence = ()) -> str:
    """One line a reader can use from a log message: a traceback becomes the line before it
    and its last line (the error), lines are joined, and an absolute path becomes relative to
    the first of ``roots`` (output or input folder) holding it, else its file name."""
    lines = [ln.strip() for ln in str(message).splitlines() if ln.strip()]
    tb = next((i for i, ln in enumerate(lines) if ln.startswith("Traceback (most recent")), None)
    if tb is not None:
        lines = lines[:tb] + lines[-1:] if tb < len(lines) - 1 else lines[:tb]
    text = " ".join(lines)
    homes = [str(r).rstrip("/") + "/" for r in roots if r]

    def short(m):
        path = m.group(0).removeprefix("file://")
        for home in homes:
            if path.startswith(home) and len(path) > len(home):
                return path[len(home):]
        return path.rstrip("/").rsplit("/", 1)[-1] or path
    return _ABS_PATH.sub(short, text)


def esc(text) -> str:
    return html.escape("" if text is None else str(text), quote=True)


def fmt(v, digits: int = 3) -> str:
    """Human formatting of a table cell: n/a, booleans, integers, 3 significant digits."""
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return "n/a"
        if v.is_integer() and abs(v) < 1e6:
            return str(int(v))
        a = abs(v)
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 0.01:
            return f"{v:.{digits}g}" if a < 100 else f"{v:.1f}"
        return f"{v:.2e}"
    return str(v)


def _css() -> str:
    return resources.files("bids_agquant.reports").joinpath("report.css").read_text()


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def image_html(data: bytes, mime: str, caption: str = "", alt: str = "",
               css_class: str = "figure") -> str:
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return (f'<figure class="{css_class}"><img src="{data_uri(data, mime)}" '
            f'alt="{esc(alt or caption)}">{cap}</figure>')


def flicker_html(first: bytes, second: bytes, mime: str, caption: str = "",
                 alt: tuple[str, str] = ("", "")) -> str:
    """Two images of one size in one place, alternating (a CSS animation, no script): the
    ``second`` shows, then the ``first``; hovering holds the one on screen. With reduced motion
    asked for, the ``first`` shows and hovering shows the ``second``."""
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return (f'<figure class="figure flicker"><div class="flicker-stack">'
            f'<img src="{data_uri(first, mime)}" alt="{esc(alt[0])}">'
            f'<img class="flicker-top" src="{data_uri(second, mime)}" alt="{esc(alt[1])}">'
            f"</div>{cap}</figure>")


def table_html(columns: Sequence[str], rows: Iterable[dict], headers: dict | None = None,
               css_class: str = "data", highlight=None, formats: dict | None = None,
               raw: Sequence[str] = ()) -> str:
    """An HTML table; ``highlight(row) -> css class or None`` marks rows; columns in ``raw``
    hold ready-made (trusted, already escaped) HTML."""
    headers = headers or {}
    formats = formats or {}
    head = "".join(f"<th>{esc(headers.get(c, c))}</th>" for c in columns)
    body = []
    for r in rows:
        cls = highlight(r) if highlight else None
        cells = []
        for c in columns:
            v = r.get(c)
            if c in raw:
                cells.append(f"<td>{v}</td>")
                continue
            text = formats[c](v) if c in formats else fmt(v)
            num = isinstance(v, (int, float)) and not isinstance(v, bool)
            cells.append(f'<td class="num">{esc(text)}</td>' if num else f"<td>{esc(text)}</td>")
        body.append(f'<tr class="{cls}">' if cls else "<tr>")
        body.append("".join(cells) + "</tr>")
    if not body:
        return '<p class="empty">No data.</p>'
    return (f'<div class="table-wrap"><table class="{css_class}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def warnings_html(warnings: Sequence[str]) -> str:
    if not warnings:
        return '<div class="callout ok"><strong>No warnings.</strong></div>'
    items = "".join(f"<li>{esc(w)}</li>" for w in warnings)
    return (f'<div class="callout warn"><strong>{len(warnings)} warning'
            f'{"s" if len(warnings) != 1 else ""}</strong><ul>{items}</ul></div>')


def messages_html(errors: Sequence[str], warnings: Sequence[str]) -> str:
    """Errors (red callout, when any) then the warnings: one readable line each."""
    if not errors:
        return warnings_html(warnings)
    items = "".join(f"<li>{esc(e)}</li>" for e in errors)
    return (f'<div class="callout bad"><strong>{len(errors)} error'
            f'{"s" if len(errors) != 1 else ""}</strong><ul>{items}</ul></div>'
            + warnings_html(warnings))


def cards_html(cards: Sequence[tuple[str, str, str]]) -> str:
    """Key-number cards: (label, value, note)."""
    out = []
    for label, value, note in cards:
        out.append(f'<div class="card"><div class="card-label">{esc(label)}</div>'
                   f'<div class="card-value">{esc(value)}</div>'
                   f'<div class="card-note">{esc(note)}</div></div>')
    return f'<div class="cards">{"".join(out)}</div>'


def versions_html(versions: dict) -> str:
    rows = [{"software": k, "version": v} for k, v in versions.items()]
    return table_html(["software", "version"], rows, css_class="data compact")


def section(anchor: str, title: str, body: str, intro: str = "") -> str:
    lead = f'<p class="lead">{intro}</p>' if intro else ""
    return (f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{lead}{body}</section>')


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]],
         header_extra: str = "") -> str:
    """A whole report page. ``sections`` are (anchor, title, html) in order; a nav is built."""
    nav = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t, _ in sections)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = "".join(h for _, _, h in sections)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<style>{_css()}</style></head>
<body>
<header class="top"><div class="inner">
<div class="brand">bids_agquant</div>
<h1>{esc(title)}</h1>
<div class="subtitle">{subtitle}</div>{header_extra}
<div class="stamp">generated {stamp}</div>
</div></header>
<nav class="toc"><div class="inner">{nav}</div></nav>
<main class="inner">{body}</main>
<footer class="inner">bids_agquant &mdash; quantitative MRI of gadolinium nanoparticles.
Numbers are computed from the BIDS-Derivatives in this folder; figures are inlined.</footer>
</body></html>
"""
