"""The PNGs a document names (``plots``), embedded as ``data:`` URIs, bounded in size.

Nothing is re-drawn: the run already drew them, and embedding keeps the report free of
matplotlib. Only files that are regular, start with the PNG signature and fit the limits are
embedded; any other name is reported as text, so a crafted path reads nothing else into the page.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cxr.files import UnusableFile, read_regular

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURE_LIMIT = 8 << 20  # one figure
TOTAL_LIMIT = 64 << 20  # every figure of one page


@dataclass(frozen=True)
class Figure:
    name: str  # as the document gives it
    data_uri: str | None  # None: not embedded, ``reason`` says why
    reason: str = ""


def candidates(name: str, base: Path) -> list[Path]:
    """The path as written (relative to where the run was), then beside the document."""
    path = Path(name)
    return [path] if path.is_absolute() else [path, base / path, base / path.name]


def embed(name: str, base: Path, budget: int) -> Figure:
    if not name.lower().endswith(".png"):
        return Figure(name, None, "not a PNG file name")
    reason = "not found"
    for path in candidates(name, base):
        try:
            data = read_regular(path, min(FIGURE_LIMIT, budget))
        except FileNotFoundError:
            continue
        except (UnusableFile, OSError) as exc:
            reason = str(exc) if isinstance(exc, UnusableFile) else (exc.strerror or str(exc))
            continue
        if not data.startswith(PNG_SIGNATURE):
            return Figure(name, None, "not a PNG image")
        return Figure(name, "data:image/png;base64," + base64.b64encode(data).decode("ascii"))
    return Figure(name, None, reason)


def embed_all(names: Iterable[object], base: Path) -> list[Figure]:
    """Each named figure, in order, until the page's budget is spent."""
    figures, budget = [], TOTAL_LIMIT
    for name in names:
        if not isinstance(name, str):
            continue
        figure = embed(name, base, budget) if budget > 0 else Figure(name, None, "page full")
        if figure.data_uri is not None:
            budget -= len(figure.data_uri)
        figures.append(figure)
    return figures
