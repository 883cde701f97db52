"""The sections of the page, each drawn from one document's keys (absent keys: no section).

Every value a document holds reaches the page through `cxr.reporting.html`, which escapes it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cxr.classify.results import result_name
from cxr.reporting.documents import Document
from cxr.reporting.figures import Figure, recorded
from cxr.reporting.html import Html, image, interval, items, join, number, table, tag

ROW_LIMIT = 200  # rows of one table (a confound's values, an audit's clusters)


@dataclass(frozen=True)
class Section:
    title: str
    body: Html


def name_of(result: Mapping[str, Any]) -> str:
    held = result.get("validation", {}).get("held_out")
    where = f" [held out {held}]" if held is not None else ""
    return f"{result_name(result)}{where}"


def text(value: object) -> str:
    """A nested value in one cell: strings as they are, anything else as compact JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def pairs(mapping: Mapping[str, Any]) -> Html:
    return table(["", ""], [(k, text(v)) for k, v in mapping.items()])


def capped(rows: Sequence[Any], what: str) -> tuple[Sequence[Any], Html]:
    if len(rows) <= ROW_LIMIT:
        return rows, Html("")
    return rows[:ROW_LIMIT], tag("p", f"The first {ROW_LIMIT} of {len(rows):,} {what}.")


def overall(result: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.get("metrics", {}).items() if k != "per_class"}


def summary_table(report: Mapping[str, Any]) -> Html:
    """Every result of an evaluate report with each overall metric, pooled [95% CI] (the page's
    summary, and `Evaluation._repr_html_` in a notebook)."""
    results = report["results"]
    metrics = list(dict.fromkeys(k for r in results for k in overall(r)))
    rows = [
        [
            name_of(r) + (" (best)" if r.get("comparison", {}).get("is_best") else ""),
            str(r.get("task", {}).get("name", "")),
            number(r.get("n")),
            number(r.get("n_patients")),
            *(interval(overall(r).get(m)) for m in metrics),
        ]
        for r in results
    ]
    metric = report["settings"].get("metric", "")
    return join(
        [
            tag("p", f"Pooled out-of-fold value [95% CI]; best by {metric}."),
            table(["result", "task", "images", "patients", *metrics], rows),
        ]
    )


def summary(doc: Document) -> Html:
    return summary_table(doc.data)


def comparisons(doc: Document) -> Html | None:
    rows = []
    for r in doc.data["results"]:
        c = r.get("comparison")
        if isinstance(c, dict) and not c.get("is_best"):
            ci = c.get("ci95") or [None, None]
            rows.append(
                [
                    name_of(r),
                    str(c.get("best", "")),
                    f"{number(c.get('difference'))} [{number(ci[0])}, {number(ci[-1])}]",
                    number(c.get("p")),
                    "yes" if c.get("indistinguishable") else "no",
                    number(c.get("n_paired")),
                ]
            )
    if not rows:
        return None
    headers = ["result", "against the best", "difference [95% CI]", "p", "indistinguishable"]
    return table([*headers, "paired units"], rows)


def validation(doc: Document) -> Html | None:
    rows = [
        [name_of(r), text(r["validation"]), text(r.get("cv", {}))]
        for r in doc.data["results"]
        if r.get("validation", {}).get("kind", "cross-validation") != "cross-validation"
    ]
    return table(["result", "validation", "protocol"], rows) if rows else None


def per_class(doc: Document) -> Html | None:
    parts: list[Html] = []
    for r in doc.data["results"]:
        classes = r.get("metrics", {}).get("per_class")
        if not isinstance(classes, dict) or not classes:
            continue
        names = list(dict.fromkeys(m for stats in classes.values() for m in stats))
        counts = r.get("class_counts", {})
        rows = [
            [c, number(counts.get(c)), *(interval(stats.get(m)) for m in names)]
            for c, stats in classes.items()
        ]
        parts += [tag("h3", name_of(r)), table(["class", "images", *names], rows)]
    return join(parts) if parts else None


def calibration(doc: Document) -> Html | None:
    rows = [
        [name_of(r), interval(overall(r).get("brier")), interval(overall(r).get("ece"))]
        for r in doc.data["results"]
        if "brier" in overall(r) or "ece" in overall(r)
    ]
    return table(["result", "Brier score", "ECE"], rows) if rows else None


def confounds(doc: Document) -> Html | None:
    found = doc.data.get("confounds") or []
    if not found:
        return None
    rows = [
        [
            c.get("column", ""),
            number(c.get("values")),
            number(c.get("cramers_v")),
            number(c.get("balanced_accuracy")),
            number(c.get("chance")),
            "yes" if c.get("warn") else "no",
        ]
        for c in found
    ]
    parts = [table(["column", "values", "Cramér's V", "bal. accuracy", "chance", "warns"], rows)]
    for c in found:
        counts = c.get("table")
        if isinstance(counts, dict) and counts:
            classes = list(dict.fromkeys(k for v in counts.values() for k in v))
            shown, note = capped(list(counts.items()), "values")
            body = [[value, *(number(n.get(k)) for k in classes)] for value, n in shown]
            parts += [
                tag("h3", f"{c.get('column', '')} by class"),
                table(["value", *classes], body),
                note,
            ]
    return join(parts)


def learning_curves(doc: Document) -> Html | None:
    curves = doc.data.get("learning_curves") or []
    parts: list[Html] = []
    for c in curves:
        title = f"{c.get('backbone', '')} + {c.get('head', '')} ({c.get('metric', '')})"
        rows = [
            [p.get("size", ""), number(p.get("value")), text(p.get("ci95")), number(p.get("draws"))]
            for p in c.get("points", [])
        ]
        parts += [tag("h3", title), table(["size per class", "value", "95% CI", "draws"], rows)]
        parts.append(tag("p", f"Within {c.get('margin', '')} of all data from: "
                          f"{c.get('within_margin_from') or 'none'}"))  # fmt: skip
    return join(parts) if parts else None


def gains(doc: Document) -> Html | None:
    rows = [
        [
            name_of(r),
            key,
            f"{number(g.get('difference'))} {text(g.get('ci95'))}",
            number(g.get("p")),
        ]
        for r in doc.data["results"]
        for key in ("covariate_gain", "region_gain")
        if isinstance(g := r.get(key), dict)
    ]
    return table(["result", "against", "difference [95% CI]", "p"], rows) if rows else None


def warnings(doc: Document) -> Html | None:
    found = doc.data.get("warnings") or []
    return items(found) if found else None


def figures(doc: Document) -> Html | None:
    """The figures the document's run recorded as written (`cxr.reporting.figures`)."""
    shown: list[Figure] = recorded(doc.data, doc.path)
    if not shown:
        return None
    return join(
        image(uri, f.name)
        if (uri := f.data_uri)
        else tag("p", f"{f.name}: {f.reason}", cls="missing")
        for f in shown
    )


def provenance(doc: Document) -> Html:
    p = doc.data["provenance"]
    keys = ("path", "rows_sha256", "constructor", "preprocessing", "resize", "region",
            "weights_file", "weights_sha256", "runtime", "created")  # fmt: skip
    stores = p.get("stores", {})
    rows = [[k, *(text(s.get(k, "")) for s in stores.values())] for k in keys]
    return join(
        [
            tag("p", p.get("disclaimer", "")),
            pairs(
                {"seed": p.get("seed"), "bootstrap": p.get("bootstrap"), **p.get("versions", {})}
            ),
            tag("h3", "Stores"),
            table(["", *stores], rows),
        ]
    )


def audit(doc: Document) -> Html:
    d = doc.data
    probes = [
        [
            column,
            p.get("same_as") or p.get("skipped") or "",
            number(p.get("rows")),
            number(p.get("balanced_accuracy")),
            number(p.get("chance_balanced_accuracy")),
        ]
        for column, p in d["probes"].items()
    ]
    shown, note = capped(d["clusters"], "clusters")
    clusters = [
        [
            number(c.get("size")),
            ", ".join(map(str, c.get("methods", []))),
            ", ".join(map(str, c.get("conflicts", []))) or "none",
            "; ".join(str(m.get("path", "")) for m in c.get("members", [])),
        ]
        for c in shown
    ]
    parts = [
        pairs({"store": d["store"], "backbone": d.get("backbone", ""), "rows": d.get("rows", "")}),
        tag("h3", "Counts"),
        pairs(d["counts"]),
        tag("h3", "Confound probes"),
        table(["column", "same as / skipped", "rows", "bal. accuracy", "chance"], probes),
        tag("h3", "Duplicate clusters"),
        table(["size", "methods", "conflicts", "members"], clusters),
        note,
    ]
    if d.get("notes"):
        parts += [tag("h3", "Notes"), items(d["notes"])]
    drawn = figures(doc)
    if drawn is not None:
        parts += [tag("h3", "Figures"), drawn]
    return join(parts)


# The evaluate sections in page order: (title, how it is drawn).
EVALUATE: tuple[tuple[str, Callable[[Document], Html | None]], ...] = (
    ("Summary", summary),
    ("Paired comparisons", comparisons),
    ("Held-out and external results", validation),
    ("Confounds", confounds),
    ("Per-class results", per_class),
    ("Calibration", calibration),
    ("Learning curves", learning_curves),
    ("Covariates and regions", gains),
    ("Warnings", warnings),
    ("Figures", figures),
    ("Provenance", provenance),
)


def sections_of(doc: Document) -> list[Section]:
    if doc.kind == "audit":
        return [Section(f"Audit of {doc.data['store']}", audit(doc))]
    drawn = ((title, draw(doc)) for title, draw in EVALUATE)
    return [Section(title, body) for title, body in drawn if body is not None]
