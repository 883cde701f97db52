"""HTML primitives that escape everything they are given: text is never trusted markup.

`Html` marks a string this package built itself; anything else (every value from a document)
goes through ``html.escape`` on its way into the page.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence


class Html(str):
    """Markup made here, from escaped parts; a plain ``str`` is always escaped."""


def esc(value: object) -> Html:
    """``value`` as text in the page (quotes escaped too, so it is safe in an attribute)."""
    if isinstance(value, Html):
        return value
    return Html(html.escape(str(value), quote=True))


def tag(name: str, *children: object, cls: str = "") -> Html:
    attribute = f' class="{esc(cls)}"' if cls else ""
    return Html(f"<{name}{attribute}>{''.join(esc(c) for c in children)}</{name}>")


def join(parts: Iterable[object]) -> Html:
    return Html("".join(esc(p) for p in parts))


def number(value: object, digits: int = 3) -> str:
    """A metric as the terminal shows it; anything not a number is shown as it is."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-" if value is None else str(value)
    return f"{value:.{digits}f}" if isinstance(value, float) else f"{value:,}"


def interval(stat: object) -> str:
    """``0.912 [0.894, 0.930]`` of a Stat (pooled and its 95% CI)."""
    if not isinstance(stat, dict):
        return number(stat)
    ci = stat.get("ci95")
    lo, hi = ci if isinstance(ci, list) and len(ci) == 2 else (None, None)
    return f"{number(stat.get('pooled'))} [{number(lo)}, {number(hi)}]"


def table(headers: Sequence[object], rows: Iterable[Sequence[object]]) -> Html:
    head = tag("tr", *(tag("th", h) for h in headers))
    body = join(tag("tr", *(tag("td", c) for c in row)) for row in rows)
    return tag("table", tag("thead", head), tag("tbody", body))


def items(values: Iterable[object]) -> Html:
    return tag("ul", *(tag("li", v) for v in values))


def image(data_uri: str, caption: object) -> Html:
    """A figure whose source is a ``data:`` URI this package made (checked again here)."""
    if not data_uri.startswith("data:image/png;base64,"):
        raise ValueError("only embedded PNG figures")
    return Html(
        f'<figure><img src="{esc(data_uri)}" alt="{esc(caption)}">'
        f"{tag('figcaption', caption)}</figure>"
    )
