"""The report as one self-contained HTML page: sections of paragraphs, tables and PNG pictures (embedded as
base64 ``data:`` URLs), and what is missing with the command that makes it.

Each section is ``<section id=... class="present|partial|missing">``; a missing part is
``<p class="missing">missing: ... run <code>command</code></p>``.
"""
from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field

FIGURE_DPI = 100  # a figure drawn here from logged values

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 2px solid #ccc; margin-top: 2em; } h3 { margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
td.original, th.original { background: #f4f1e8; }
figure { margin: 0.8em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
p.missing { background: #fdecea; border-left: 4px solid #d9534f; padding: 0.4em 0.8em; }
.sources { font-size: 0.85em; color: #555; } code { background: #f3f3f3; padding: 0 0.2em; }
"""


@dataclass(frozen=True)
class Missing:
    """A part the store lacks: what, and the command that makes it."""

    what: str
    command: str


@dataclass
class Section:
    """One section of the report: ``blocks`` of HTML, in order, and the parts it lacks."""

    id: str
    title: str
    blocks: list = field(default_factory=list)  # of str, HTML
    missing: list = field(default_factory=list)  # of Missing

    def add(self, *blocks: str) -> None:
        self.blocks.extend(blocks)

    def lack(self, what: str, command: str) -> None:
        """Say that ``what`` is missing and that ``command`` makes it."""
        self.missing.append(Missing(what, command))
        self.blocks.append(missing_html(Missing(what, command)))

    @property
    def status(self) -> str:
        if not self.missing:
            return "present"
        return "missing" if all('class="missing"' in b for b in self.blocks) else "partial"


def missing_html(m: Missing) -> str:
    return f'<p class="missing">missing: {html.escape(m.what)}; run <code>{html.escape(m.command)}</code></p>'


def paragraph(text: str) -> str:
    """A paragraph of plain text (escaped)."""
    return f"<p>{html.escape(text)}</p>"


def table(header, rows, original_column: int | None = None) -> str:
    """A table of plain-text cells; ``original_column``, the index of the column of the original report's values,
    is shaded."""
    shaded = ' class="original"'

    def cells(values, tag):
        return "".join(f"<{tag}{shaded if i == original_column else ''}>{html.escape(str(v))}</{tag}>"
                       for i, v in enumerate(values))

    body = "".join(f"<tr>{cells(row, 'td')}</tr>" for row in rows)
    return f"<table><thead><tr>{cells(header, 'th')}</tr></thead><tbody>{body}</tbody></table>"


def picture(png: bytes, caption: str) -> str:
    """A PNG embedded in the page, with its caption."""
    data = base64.b64encode(png).decode("ascii")
    text = html.escape(caption)
    return f'<figure><img src="data:image/png;base64,{data}" alt="{text}"><figcaption>{text}</figcaption></figure>'


def figure_png(fig) -> bytes:
    """A matplotlib figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=FIGURE_DPI)
    return buffer.getvalue()


def render(parts, sources_line: str) -> str:
    """The whole page: ``parts`` is a list of (heading, sections); first the list of what is missing."""
    missing = [(s, m) for _, sections in parts for s in sections for m in s.missing]
    toc = "".join(f"<li><b>{html.escape(heading)}</b><ul>"
                  + "".join(f'<li><a href="#{s.id}">{html.escape(s.title)}</a> ({s.status})</li>' for s in sections)
                  + "</ul></li>" for heading, sections in parts)
    summary = ('<section id="missing"><h2>What is missing</h2>'
               + ("<p>Nothing: every part of the report is in the store.</p>" if not missing else
                  "<ul>" + "".join(f'<li><a href="#{s.id}">{html.escape(s.title)}</a>: {html.escape(m.what)}; run '
                                   f"<code>{html.escape(m.command)}</code></li>" for s, m in missing) + "</ul>")
               + "</section>")
    body = "".join(f"<h2>{html.escape(heading)}</h2>"
                   + "".join(f'<section id="{s.id}" class="{s.status}"><h3>{html.escape(s.title)}</h3>'
                             + "".join(s.blocks) + "</section>" for s in sections)
                   for heading, sections in parts)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>clrsearch report</title>"
            f"<style>{STYLE}</style></head><body><h1>clrsearch: the report, regenerated from what is tracked</h1>"
            f'<p class="sources">{html.escape(sources_line)}</p><nav><ul>{toc}</ul></nav>{summary}{body}'
            "</body></html>\n")
