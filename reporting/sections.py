"""The sections of the page, each drawn from one document's keys (absent keys: no section).

Every value a document holds reaches the page through `cxr.reporting.html`, which escapes it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cxr.classify.confounds import finer_note
from cxr.classify.metric_table import metric_title
from cxr.classify.presentation import part_name, presentation_of
from cxr.classify.records import CROSS_VALIDATION, Validation
from cxr.classify.tables import neighbour_cells, neighbour_columns, p_text
from cxr.reporting.documents import Document
from cxr.reporting.figures import Figure, recorded
from cxr.reporting.html import Html, image, interval, items, join, number, table, tag

ROW_LIMIT = 200  # rows of one table (a confound's values, an audit's clusters)


@dataclass(frozen=True)
class Section:
    title: str
    body: Html


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


def design_words(report: Mapping[str, Any]) -> str:
    """How the run was validated, in words (folds, grouping, repeats, seed, the held-out or
    external part) and how its intervals were made: said before any number."""
    results = report["results"]
    first = results[0]
    try:
        design = presentation_of(first).describe(first)
    except (KeyError, TypeError, ValueError, AttributeError):  # a document of another version
        design = f"{text(Validation.of(first).to_dict())} {text(first.get('cv', {}))}"
    held = [str(v.held_out) for v in map(Validation.of, results) if v.held_out is not None]
    words = f"Validation: {design}."
    if held:
        words += f" Held out in turn: {', '.join(dict.fromkeys(held))}."
    replicates = report.get("provenance", {}).get("bootstrap", {}).get("replicates")
    words += (
        f" 95% CIs: bootstrap, unit: {first.get('bootstrap_unit', 'image')} "
        f"({number(replicates)} replicates); paired comparisons with the best by the same draws."
    )
    return words


def operating_point(report: Mapping[str, Any]) -> float:
    value = report.get("settings", {}).get("operating_point", 0.95)
    return value if isinstance(value, (int, float)) else 0.95


def summary_table(report: Mapping[str, Any]) -> Html:
    """The design in words, then every result of an evaluate report with each overall metric,
    pooled [95% CI] (the page's summary, and `Evaluation._repr_html_` in a notebook)."""
    results = report["results"]
    op = operating_point(report)
    metrics = list(dict.fromkeys(k for r in results for k in overall(r)))
    rows = [
        [
            part_name(r) + (" (best)" if r.get("comparison", {}).get("is_best") else ""),
            str(r.get("task", {}).get("name", "")),
            number(r.get("n")),
            number(r.get("n_patients")),
            *(interval(overall(r).get(m)) for m in metrics),
        ]
        for r in results
    ]
    metric = metric_title(str(report["settings"].get("metric", "")), op)
    titles = [metric_title(m, op) for m in metrics]
    return join(
        [
            tag("p", design_words(report)),
            tag("p", f"Pooled out-of-fold value [95% CI]; best by {metric}."),
            table(["result", "task", "images", "patients", *titles], rows),
        ]
    )


def summary(doc: Document) -> Html:
    return summary_table(doc.data)


def replicates_of(doc: Document) -> int:
    value = doc.data.get("provenance", {}).get("bootstrap", {}).get("replicates")
    return value if isinstance(value, int) and not isinstance(value, bool) else 1000


def p_value(value: object, replicates: int) -> str:
    """A p-value as the terminal prints it (``p < 1e-03``, never ``0.000``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return number(value)
    return p_text(float(value), replicates).removeprefix("p ")


def comparisons(doc: Document) -> Html | None:
    replicates = replicates_of(doc)
    rows = []
    for r in doc.data["results"]:
        c = r.get("comparison")
        if isinstance(c, dict) and not c.get("is_best"):
            ci = c.get("ci95") or [None, None]
            rows.append(
                [
                    part_name(r),
                    str(c.get("best", "")),
                    f"{number(c.get('difference'))} [{number(ci[0])}, {number(ci[-1])}]",
                    p_value(c.get("p"), replicates),
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
        [part_name(r), text(r["validation"]), text(r.get("cv", {}))]
        for r in doc.data["results"]
        if Validation.of(r).kind != CROSS_VALIDATION
    ]
    return table(["result", "validation", "protocol"], rows) if rows else None


def per_class(doc: Document) -> Html | None:
    op = operating_point(doc.data)
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
        titles = [metric_title(m, op, per_class=True) for m in names]
        parts += [tag("h3", part_name(r)), table(["class", "images", *titles], rows)]
    return join(parts) if parts else None


def calibration(doc: Document) -> Html | None:
    rows = [
        [part_name(r), interval(overall(r).get("brier")), interval(overall(r).get("ece"))]
        for r in doc.data["results"]
        if "brier" in overall(r) or "ece" in overall(r)
    ]
    return table(["result", "Brier score", "ECE"], rows) if rows else None


def confounds(doc: Document) -> Html | None:
    everything = doc.data.get("confounds") or []
    found = [c for c in everything if not c.get("refines")]  # finer labels: said once, above
    finer = finer_note(everything)
    if not found and finer is None:
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
    parts = [tag("p", f"{finer}.")] if finer is not None else []
    parts.append(
        table(["column", "values", "Cramér's V", "bal. accuracy", "chance", "warns"], rows)
    )
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
    replicates = replicates_of(doc)
    rows = [
        [
            part_name(r),
            key,
            f"{number(g.get('difference'))} {text(g.get('ci95'))}",
            p_value(g.get("p"), replicates),
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
    """The figures the document's run recorded as written (`cxr.reporting.figures`), but the
    embedding maps, which are shown beside their numbers."""
    maps = map_names(doc)
    found = [f for f in recorded(doc.data, doc.path) if Path(f.name).name not in maps]
    return shown(found) if found else None


def shown(found: Sequence[Figure]) -> Html:
    return join(
        image(uri, f.name)
        if (uri := f.data_uri)
        else tag("p", f"{f.name}: {f.reason}", cls="missing")
        for f in found
    )


def map_names(doc: Document) -> set[str]:
    """The file names of the document's embedding maps (shown with their numbers)."""
    entries = doc.data.get("neighbourhoods") or [doc.data.get("neighbourhood") or {}]
    return {Path(m).name for m in map(map_figure, entries) if m}


def map_figure(entry: Mapping[str, Any]) -> str | None:
    figure = (entry.get("map") or {}).get("figure")
    return figure if isinstance(figure, str) else None


def neighbourhood(entry: Mapping[str, Any], doc: Document) -> Html:
    """One store's neighbour shares per class and per value within it, and its map (from the
    figures the run recorded)."""
    measures, names = neighbour_columns(entry)
    column = entry.get("column") or "value"
    rows = []
    for cls, group in {"all films": entry["all"], **entry["classes"]}.items():
        rows.append([cls, number(group.get("films")), *neighbour_cells(group, measures)])
        for value, part in (group.get("by_value") or {}).items():
            cells = neighbour_cells(part, measures)
            rows.append([f"{cls}, {column} {value}", number(part.get("films")), *cells])
    intro = (
        f"Of each film's {number(entry.get('k'))} nearest neighbours by {entry.get('metric')} "
        f"among other patients' films: the share that carry its label, that come from its own "
        f"{column}, and that come from its own {column} when only its own class's films are "
        f"searched (the label cannot explain that one). Mean over films [95% CI: bootstrap, "
        f"unit: {entry.get('unit')}, {number(entry.get('replicates'))} replicates] and, in "
        f"brackets, the share by chance: a neighbour drawn at random from the films searched. "
        f"Films asked: {entry.get('sample')}."
    )
    parts = [tag("h3", str(entry.get("backbone", ""))), tag("p", intro)]
    parts.append(table(["films", "n", *names], rows))
    figure = map_figure(entry)
    if figure is not None:
        mine = [f for f in recorded(doc.data, doc.path) if Path(f.name).name == Path(figure).name]
        parts += [tag("p", str(entry["map"].get("detail", ""))), shown(mine)]
    return join(parts)


def neighbourhoods(doc: Document) -> Html | None:
    entries = doc.data.get("neighbourhoods") or []
    return join(neighbourhood(e, doc) for e in entries) if entries else None


def provenance(doc: Document) -> Html:
    p = doc.data["provenance"]
    keys = ("path", "rows_sha256", "constructor", "preprocessing", "resize", "region", "decode",
            "weights_file", "weights_sha256", "runtimes", "created")  # fmt: skip
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
    if d.get("neighbourhood"):
        parts += [tag("h3", "Neighbours in the embedding"), neighbourhood(d["neighbourhood"], doc)]
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
    ("Neighbours in the embedding", neighbourhoods),
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
