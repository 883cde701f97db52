"""The page: sections of every document, the checklist, one self-contained HTML file.

The Content-Security-Policy forbids scripts and every load but ``data:`` images and the inline
style, so the page works offline and cannot call out, whatever a document holds.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cxr.errors import CxrError
from cxr.files import write_atomic
from cxr.reporting.checklist import AUTHOR, fill, tally
from cxr.reporting.documents import Document, Documents, read_documents
from cxr.reporting.html import Html, esc, join, table, tag
from cxr.reporting.sections import Section, sections_of

POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; form-action 'none'"
STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #111; }
h1 { font-size: 1.6em; } h2 { border-bottom: 2px solid #333; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .92em; }
th, td { border: 1px solid #bbb; padding: 2px 6px; text-align: left; vertical-align: top;
  max-width: 40em; } td { overflow-wrap: anywhere; }
th { background: #eee; } img { max-width: 100%; } figure { display: inline-block; margin: .5em; }
figcaption, .missing { font-size: .8em; color: #555; } .author { color: #a40; }
nav li { display: inline; margin-right: 1em; }
@media print { nav { display: none; } h2 { break-before: page; } figure { break-inside: avoid; } }
"""
TITLE = "cxr report"


@dataclass(frozen=True)
class Written:
    """What `write_report` made: the file, its size and its section headings, in order."""

    path: Path
    size: int  # bytes
    sections: list[str]
    checklist: dict[str, int]  # status -> items


@contextmanager
def _malformed(what: str) -> Iterator[None]:
    """A crafted document whose values are of the wrong type gives one line starting with
    ``what``, not a traceback."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise CxrError(f"{what} ({type(exc).__name__}: {exc})") from None


def _sections(doc: Document, many: bool) -> list[Section]:
    """A document's sections, titled with its file name when there are several evaluations."""
    with _malformed(f"{doc.path}: malformed {doc.kind} document"):
        found = sections_of(doc)
    if many and doc.kind == "evaluate":
        found = [Section(f"{s.title} ({doc.path.name})", s.body) for s in found]
    return found


def checklist(docs: Documents) -> tuple[Section, dict[str, int]]:
    with _malformed("malformed document for the checklist"):
        filled = fill(docs)
    rows = [
        [
            f.item.guideline,
            f.item.number,
            f.item.title,
            tag("span", f.status, cls="author") if f.status == AUTHOR else f.status,
            f.text,
        ]
        for f in filled
    ]
    intro = tag(
        "p",
        "TRIPOD+AI (Collins et al., BMJ 2024) and CLAIM (Mongan et al., 2020): the items this "
        "tool answers from its own records, and those only the author can.",
    )
    return Section(
        "Reporting checklist",
        join([intro, table(["guideline", "item", "title", "status", "from the records"], rows)]),
    ), tally(filled)


def anchor(n: int) -> str:
    return f"s{n}"


def render_report(docs: Documents) -> tuple[str, list[str], dict[str, int]]:
    """The page's HTML, its section headings and the checklist's tally."""
    many = len(docs.evaluations) > 1
    sections = [s for d in docs.items for s in _sections(d, many)]
    listed, counts = checklist(docs)
    sections.append(listed)
    nav = tag(
        "nav",
        tag(
            "ul",
            *(
                Html(f'<li><a href="#{anchor(i)}">{esc(s.title)}</a></li>')
                for i, s in enumerate(sections)
            ),
        ),
    )
    body = join(
        Html(f'<section id="{anchor(i)}"><h2>{esc(s.title)}</h2>{s.body}</section>')
        for i, s in enumerate(sections)
    )
    sources = ", ".join(str(d.path) for d in docs.items)
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">'
        f"<title>{TITLE}</title><style>{STYLE}</style></head><body>"
        f"{tag('h1', TITLE)}{tag('p', 'From ', sources)}{nav}{body}</body></html>\n"
    )
    return page, [s.title for s in sections], counts


def write_report(documents: Documents | Sequence[Path], path: Path) -> Written:
    """Write the report of ``documents`` (or of the JSON files named) to ``path``, atomically."""
    docs = documents if isinstance(documents, Documents) else read_documents(list(documents))
    page, titles, counts = render_report(docs)
    data = page.encode("utf-8")
    path = Path(path)
    write_atomic(path, data, "the report")
    return Written(path, len(data), titles, counts)
