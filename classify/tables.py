"""Show results to people: Rich tables of the evaluate, train, predict and explain reports.

Read from the JSON documents only (the plots are `cxr.classify.plots`). Everything that came
from a user, a file or a store (names, labels, paths, attributes) is printed as text, never as
Rich markup: a label like ``[left]`` stays on screen, and ``[/b]`` cannot break the report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from cxr.classify.confounds import finer_note
from cxr.classify.confounds import warnings as confound_warnings
from cxr.classify.heads import changed_params, setting_text
from cxr.classify.metric_table import Metric, overall_metric, overall_metrics, per_class_metrics
from cxr.classify.neighbours import MEASURES, Neighbourhood, chance, percent
from cxr.classify.presentation import presentation_of
from cxr.classify.provenance import DISCLAIMER
from cxr.classify.records import Inputs, Validation
from cxr.classify.results import EvaluateReport, Provenance, Result
from cxr.classify.results import result_name as _name
from cxr.classify.settings import flag

if TYPE_CHECKING:
    from cxr.classify.compare import Comparison
    from cxr.classify.confounds import Confound
    from cxr.classify.curves import Curve
    from cxr.classify.explain import ExplainReport
    from cxr.classify.model import PredictReport, TrainSummary

PER_CLASS_COLUMNS = 4  # intervals per table at most (a wide terminal)
INTERVAL_CELL = len(" 0.000 [0.000, 0.000] ")  # an interval column: its cell and padding
SHOWN_TABLES = 2  # contingency tables printed for the strongest confounds; --json has all


def number(v: float | None) -> str:
    """A metric for people: three decimals, or n/a where it is undefined."""
    return "n/a" if v is None else f"{v:.3f}"


def pooled(stat: Mapping[str, Any]) -> str:
    """``pooled [lo, hi]``: a metric and its 95% interval, as every table shows it."""
    lo, hi = stat["ci95"]
    return f"{number(stat['pooled'])} [{number(lo)}, {number(hi)}]"


def versus(comparison: Comparison | None, replicates: int) -> str:
    """The summary table's verdict against the best result of the group (one line)."""
    if not comparison:
        return ""
    if comparison["is_best"]:
        return "best"
    if comparison["difference"] is None:
        return "n/a"
    lo, hi = comparison["ci95"]
    mark = "≈ " if comparison["indistinguishable"] else ""
    shown = p_text(comparison["p"], replicates)
    return f"{mark}{comparison['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}] {shown}"


def p_text(p: float | None, replicates: int) -> str:
    """A bootstrap p-value for people: ``p 0.013``, or ``p < 1e-03`` when no replicate of
    ``replicates`` crossed (never ``0.000``)."""
    if p is None:
        return "p n/a"
    return f"p < {1 / max(replicates, 1):.0e}" if p == 0 else f"p {p:.2g}"


def result_settings(result: Mapping[str, Any]) -> str:
    """What tells a result apart from its head's defaults: the parameters ``--set`` or
    ``--config`` changed (``alpha=0.001``) and what ``--search`` tuned; ``defaults`` if none."""
    changed = changed_params(result["head"], result.get("params") or {})
    parts = [f"{key}={setting_text(value)}" for key, value in changed.items()]
    grid = (result.get("search") or {}).get("grid") or {}
    if grid:
        parts.append("searched " + ",".join(key.rsplit("__", 1)[-1] for key in grid))
    return ", ".join(parts) or "defaults"


def best_words(report: EvaluateReport) -> tuple[str, str]:
    """The best result of a run and its score: (``mobilenet_v2 + mlp``, ``bal. accuracy 0.787
    [0.770, 0.803]``); the first group's with --leave-out."""
    settings = report["settings"]
    chosen = overall_metric(settings["metric"])
    results = report["results"]
    best = next((r for r in results if r.get("comparison", {}).get("is_best")), results[0])
    score = pooled(best["metrics"][chosen.name])
    return _name(best), f"{chosen.title(settings['operating_point'])} {score}"


def _warning(text: str) -> Text:
    """A warning line: the word in yellow, the text as it is."""
    if text.startswith("caution: "):
        return Text(text, style="yellow")
    return Text.assemble(("warning: ", "yellow"), text)


def report_table(title: str, caption: str | None = None) -> Table:
    """A report table: rules under the header only, so that 120 columns hold the intervals."""
    return Table(
        title=escape(title),
        caption=escape(caption) if caption else None,
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )


def _cell(value: object) -> Text:
    """A table cell shown as it is (Rich parses plain strings as markup)."""
    return Text(str(value))


def render(report: EvaluateReport, console: Console) -> None:
    """Confounds, the summary with paired comparisons, each group's best per class, provenance."""
    results = report["results"]
    first = results[0]
    settings = report["settings"]
    op = settings["operating_point"]
    chosen = overall_metric(settings["metric"])
    design = presentation_of(first)
    console.print(
        f"[bold]Task[/]: {escape(first['task']['name'])}   [bold]Validation[/]: "
        f"{escape(design.describe(first))}   [bold]95% CI[/]: bootstrap, unit: "
        f"{escape(first['bootstrap_unit'])} "
        f"({report['provenance']['bootstrap']['replicates']} replicates)",
        highlight=False,
    )
    found = report.get("confounds", [])
    target = first["task"].get("target", "label")
    confound_lines = confound_warnings(found, target, design.held_out_column(first))
    shown = [w for w in report["warnings"] if w in confound_lines]
    _render_confounds(found, shown, first, console)
    render_neighbourhoods(report.get("neighbourhoods", []), console)
    summary = [m for m in overall_metrics() if m.summary or m is chosen]
    held = [design.part_header] if design.part_header else []
    mixed = any(not Inputs.of(r).alone for r in results)
    shown_inputs = ["inputs"] if mixed else []
    replicates = report["provenance"]["bootstrap"]["replicates"]
    sizes: dict[object, int] = {}  # results per comparison group (a held-out value, or the run)
    for r in results:
        group = Validation.of(r).held_out
        sizes[group] = sizes.get(group, 0) + 1
    columns = ["#", "backbone", "head", *shown_inputs, *held, "n", chosen.title(op)]
    columns.append(f"vs best ({chosen.title(op)})")
    rows = []
    for i, r in enumerate(results, 1):
        validation, inputs = Validation.of(r), Inputs.of(r)
        extra = [str(validation.held_out)] if held else []
        extra = ([str(inputs)] if mixed else []) + extra
        alone = sizes[validation.held_out] == 1
        verdict = "(only result)" if alone else versus(r.get("comparison"), replicates)
        backbone = r["backbone"] if inputs.embeddings else "-"
        row = [i, backbone, r["head"], *extra, r["n"], pooled(r["metrics"][chosen.name])]
        rows.append([*row, verdict, result_settings(r)])
    caption = _comparison_caption(chosen, op, first["bootstrap_unit"])
    caption += (
        "; settings: what differs from the head's defaults "
        f"({flag('params')}, {flag('config')}, {flag('search')})"
    )
    table = _summary(design.summary_title, caption, [*columns, "settings"], rows)
    unbounded = console.options.update_width(10 * console.width)
    inline = console.measure(table, options=unbounded).maximum <= console.width
    if not inline:  # long settings: a line each below, so that no cell wraps
        table = _summary(design.summary_title, caption, columns, [r[:-1] for r in rows])
    console.print(table)
    if not inline:
        for row in rows:
            console.print(f"#{row[0]} settings: {row[-1]}", markup=False, highlight=False)
    others = report_table("Every summary metric of each result (# above): pooled [95% CI]")
    others.add_column("#", justify="right", no_wrap=True)
    for m in summary:  # never cut: a truncated interval is a wrong interval
        others.add_column(m.title(op), no_wrap=True)
    for i, r in enumerate(results, 1):
        others.add_row(*map(_cell, [i, *(pooled(r["metrics"][m.name]) for m in summary)]))
    console.print(others)
    _render_gains(results, chosen.title(op), replicates, console)
    _render_search(results, console)
    _render_curves(report.get("learning_curves", []), chosen.title(op), console)
    for best in (r for r in results if r.get("comparison", {}).get("is_best")):
        _render_best(best, chosen.title(op), op, console)
    for note in report["warnings"]:
        if note not in shown:
            console.print(_warning(note), highlight=False)
    _render_provenance(report["provenance"], console)


def _summary(title: str, caption: str, columns: list[str], rows: list[list[object]]) -> Table:
    """The summary table: every cell on one line (the caller checks that it fits)."""
    table = report_table(title, caption)
    for col in columns:
        table.add_column(col, justify="right" if col in ("#", "n") else "left", no_wrap=True)
    for row in rows:
        table.add_row(*map(_cell, row))
    return table


def gain_text(gain: Mapping[str, Any], replicates: int) -> str:
    """A paired difference (covariates, a region): ``+0.005 [+0.001, +0.009] p 0.008``."""
    if gain["difference"] is None:
        return "n/a"
    lo, hi = gain["ci95"]
    return f"{gain['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}] {p_text(gain['p'], replicates)}"


def _render_gains(
    results: Sequence[Result], metric: str, replicates: int, console: Console
) -> None:
    """What adding --covariates, or keeping only a region of the films, changed: paired on the
    same images and folds."""
    for r in results:
        held = Validation.of(r).held_out
        where = f" (held out: {held})" if held is not None else ""
        covariates, region = r.get("covariate_gain"), r.get("region_gain")
        for gain, line in (
            (covariates, f"Covariates: {_name(r)}{where} vs {r['backbone']} + {r['head']} alone"),
            (region, f"Regions: {_name(r)}{where} vs {(region or {}).get('versus')}"),
        ):
            if not gain:
                continue
            console.print(
                f"{line}: {metric} {gain_text(gain, replicates)} (paired bootstrap)",
                markup=False,
                highlight=False,
            )


def _render_curves(curves: Sequence[Curve], metric: str, console: Console) -> None:
    """--train-sizes: one table per task, a row per size, a column per (inputs, head)."""
    if not curves:
        return
    sizes = list(dict.fromkeys(p["size"] for c in curves for p in c["points"]))
    table = Table(
        title=escape(
            f"Learning curves: {metric} [95% CI] by training images per class "
            f"(mean of {curves[0]['points'][0]['draws']} nested, patient-grouped draws)"
        ),
    )
    table.add_column("training size", no_wrap=True)
    for c in curves:
        held = f" | {c['held_out']}" if c["held_out"] is not None else ""
        table.add_column(_cell(f"{_name(c)}{held}"), overflow="fold")
    for size in sizes:
        cells = []
        for c in curves:
            point = next(p for p in c["points"] if p["size"] == size)
            cells.append(pooled({"pooled": point["value"], "ci95": point["ci95"]}))
        counts = next(p for p in curves[0]["points"] if p["size"] == size)["train_per_class"]
        mean = sum(counts.values()) / max(len(counts), 1)
        table.add_row(*map(_cell, [f"{size} (~{mean:.0f}/class)", *cells]))
    console.print(table)
    for c in curves:
        full = c["points"][-1]["value"]
        name = _name(c)
        if c["within_margin_from"] is None or full is None:
            continue
        console.print(
            f"{name}: within {c['margin']:g} of its full-data {metric} ({full:.3f}) from "
            + size_words(c["within_margin_from"]),
            markup=False,
            highlight=False,
        )


def size_words(size: str) -> str:
    """A learning-curve size in words: ``200 training images per class``."""
    if size == "all":
        return "all training images only"
    if "." in size:
        return f"{float(size):.0%} of the training images"
    return f"{size} training images per class"


def _render_search(results: Sequence[Result], console: Console) -> None:
    """What --search chose, per fold, counted: ``logreg C: 10 (9 folds), 1 (1 fold)``."""
    for r in results:
        chosen = (r.get("search") or {}).get("best_params") or []
        if not chosen:
            continue
        parts = []
        for name in chosen[0]:
            counts: dict[str, int] = {}
            for best in chosen:
                counts[str(best.get(name))] = counts.get(str(best.get(name)), 0) + 1
            shown = ", ".join(
                f"{v} ({n} fold{'s' if n > 1 else ''})"
                for v, n in sorted(counts.items(), key=lambda kv: -kv[1])
            )
            parts.append(f"{name}: {shown}")
        console.print(
            f"{flag('search')} chose for {_name(r)}: {'; '.join(parts)}",
            markup=False,
            highlight=False,
        )


def _comparison_caption(chosen: Metric, op: float, unit: str) -> str:
    better = "higher" if chosen.higher_is_better else "lower"
    return (
        f"vs best: difference in pooled {chosen.title(op)} ({better} is better) from the best "
        f"result on the same images, [95% CI] of a paired bootstrap (unit: {unit}); ≈ marks "
        "results not distinguishable from the best"
    )


def _render_confounds(
    found: Sequence[Confound], shown: Sequence[str], first: Result, console: Console
) -> None:
    """The confound warnings (``shown``: their text, as the report's warnings hold it) first,
    with the contingency tables of the strongest."""
    warned = [c for c in found if c.get("warn")]
    finer = finer_note(found)
    if finer is not None:
        console.print(Text.assemble(("note: ", "cyan"), finer), highlight=False)
    for line in shown:
        console.print(_warning(line), highlight=False)
    target = first["task"].get("target", "label")
    for c in warned[:SHOWN_TABLES]:
        classes = list(next(iter(c["table"].values())))
        table = report_table(f"{c['column']} x {target} (rows)")
        table.add_column(_cell(c["column"]))
        for cls in classes:
            table.add_column(_cell(cls), justify="right")
        for value, counts in c["table"].items():
            table.add_row(*map(_cell, [value, *(counts[cls] for cls in classes)]))
        console.print(table)
    if len(warned) > SHOWN_TABLES:
        rest = ", ".join(c["column"] for c in warned[SHOWN_TABLES:])
        console.print(
            f"Tables of the other confounds ({rest}) are in {flag('json')}.",
            markup=False,
            highlight=False,
        )


def neighbour_cells(group: Mapping[str, Any], measures: Sequence[str]) -> list[str]:
    """``70% [69%, 72%] (27%)`` per measure of a group of films: the share, its 95% CI and,
    in brackets, the share by chance."""
    return [f"{percent(group[m])} ({chance(group[m])})" if m in group else "" for m in measures]


def neighbour_columns(entry: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The measures of a neighbourhood that exist, and their column names for people."""
    column = entry.get("column")
    if column is None:
        return ["same_label"], ["same label"]
    return list(MEASURES), ["same label", f"own {column}", f"own {column}, within its class"]


def render_neighbourhoods(entries: Sequence[Neighbourhood], console: Console) -> None:
    """Each store's neighbour shares per class, in one table (per value: --json, cxr report)."""
    if not entries:
        return
    first = entries[0]
    measures, names = neighbour_columns(first)
    table = report_table(
        f"Neighbours in the embedding: of each film's {first['k']} nearest by cosine among "
        "other patients' films, the share with its label and from its own "
        f"{first.get('column') or 'source'}: mean [95% CI] (by chance)",
        f"CI: bootstrap, unit: {first['unit']} ({first['replicates']} replicates); films: "
        f"{first['sample']}; within its class: neighbours among its class's films only, "
        f"and below each class, its films by their own {first.get('column') or 'value'}",
    )
    stores = len(entries) > 1
    for name in (["store"] if stores else []) + ["class", "films", *names]:
        table.add_column(_cell(name), no_wrap=True, justify="right" if name == "films" else "left")
    for entry in entries:
        store = [entry["backbone"]] if stores else []
        for cls, group in {"all films": entry["all"], **entry["classes"]}.items():
            table.add_row(
                *map(_cell, [*store, cls, group["films"], *neighbour_cells(group, measures)])
            )
            values = group.get("by_value", {})
            for value, part in values.items() if len(values) > 1 else ():
                cells = [f"  {value}", part["films"], *neighbour_cells(part, measures)]
                table.add_row(*map(_cell, [*store, *cells]))
    console.print(table)


def _render_best(best: Result, metric: str, op: float, console: Console) -> None:
    where = Validation.of(best).held_out
    title = f"Best by {metric}: {_name(best)}"
    title += f" (held out: {where})" if where is not None else ""
    columns = per_class_metrics()
    # As many intervals side by side as the terminal holds beside the class and its count, so
    # that no cell is cut (at 100 columns a class name and its n were, to "bacteri…  8…").
    counts = best["class_counts"]
    beside = max(map(len, ["class", *counts])) + max(len(str(n)) for n in counts.values()) + 6
    per_table = max(1, min(PER_CLASS_COLUMNS, (console.width - beside) // INTERVAL_CELL))
    for start in range(0, len(columns), per_table):
        part_metrics = columns[start : start + per_table]
        part = "" if start == 0 else " (continued)"
        per_class = report_table(f"{title}, per class: pooled [95% CI]{part}")
        per_class.add_column("class", no_wrap=True)
        per_class.add_column("n", justify="right", no_wrap=True)
        for m in part_metrics:
            per_class.add_column(_cell(m.title(op)), no_wrap=True)
        for cls, stats in best["metrics"]["per_class"].items():
            cells = (pooled(stats[m.name]) for m in part_metrics)
            per_class.add_row(*map(_cell, [cls, best["class_counts"][cls], *cells]))
        console.print(per_class)
    others = [m for m in overall_metrics() if not m.summary]
    if others:
        shown = "; ".join(f"{m.title(op)} {pooled(best['metrics'][m.name])}" for m in others)
        console.print(f"Calibration and other metrics: {shown}", markup=False, highlight=False)
    cm = report_table("Confusion matrix of the test rows (rows: true, columns: predicted)")
    cm.add_column(_cell("true \\ predicted"))
    for cls in best["classes"]:
        cm.add_column(_cell(cls), justify="right")
    for cls, row in zip(best["classes"], best["confusion_matrix"], strict=True):
        cm.add_row(*map(_cell, [cls, *row]))
    console.print(cm)


def _render_provenance(prov: Provenance, console: Console) -> None:
    console.print("[bold]Provenance[/]", highlight=False)
    for backbone, attrs in prov["stores"].items():
        console.print(
            f"  {backbone}: {attrs['path']}, weights {attrs.get('weights')} "
            f"{attrs.get('weights_file', '')} sha256 {str(attrs.get('weights_sha256', ''))[:12]}, "
            f"input {attrs.get('input_size')} ({attrs.get('resize')}), "
            f"rows sha256 {attrs['rows_sha256'][:12]}",
            markup=False,
            highlight=False,
        )
    versions = ", ".join(f"{k} {v}" for k, v in prov["versions"].items())
    console.print(f"  seed {prov['seed']}; {versions}", markup=False, highlight=False)
    console.print(f"[italic]{DISCLAIMER}[/]")


def render_training(summary: TrainSummary, console: Console) -> None:
    counts = ", ".join(f"{k} {v}" for k, v in summary["class_counts"].items())
    console.print(
        f"Saved {summary['head']} on {summary['backbone']} ({summary['n']} rows: {counts}) to "
        f"{summary['model']}",
        markup=False,
        highlight=False,
    )
    for note in summary["warnings"]:
        console.print(f"[yellow]warning:[/] {escape(note)}", highlight=False)
    console.print(f"[italic]{DISCLAIMER}[/]")


def render_predictions(result: PredictReport, console: Console) -> None:
    table = Table(title=escape(f"{result['model']}: {result['head']} on {result['backbone']}"))
    for col in ("image", "predicted", *result["classes"]):
        table.add_column(_cell(col))
    for p in result["predictions"]:
        probabilities = (f"{p['probabilities'][c]:.3f}" for c in result["classes"])
        table.add_row(*map(_cell, [p["path"], p["predicted"], *probabilities]))
    console.print(table)
    for r in result["rejected"]:
        console.print(
            f"[yellow]rejected:[/] {escape(r['path'])}: {escape(r['reason'])}", highlight=False
        )
    for note in result["warnings"]:
        console.print(f"[yellow]warning:[/] {escape(note)}", highlight=False)
    console.print(f"[italic]{DISCLAIMER}[/]")


def render_explanation(report: ExplainReport, console: Console) -> None:
    """Per film, then per class and per source: the share of the evidence outside the box."""
    box = report["box"]
    films = Table(
        title=escape(
            f"{report['backbone']} + {report['head']}: evidence ({report['method']}) outside the "
            f"central box ({box:.0%} of each side)"
        )
    )
    for col in ("film", "class", "source", "predicted", "mapped", "outside the box"):
        films.add_column(_cell(col), overflow="fold")
    for f in report["films"]:
        share = "n/a" if f["share_outside"] is None else f"{f['share_outside']:.0%}"
        row = [f["path"], f["label"], f["source"], f["predicted"], f["target"], share]
        films.add_row(*map(_cell, row))
    console.print(films)
    for groups, title in ((report["by_class"], "class"), (report["by_source"], "source")):
        table = Table(
            title=f"Share of the evidence outside the box, by {title}: mean [95% CI] (evidence "
            f"spread evenly: {report['uniform_outside']:.0%})"
        )
        for col in (title, "films", "outside the box"):
            table.add_column(_cell(col))
        for group, stat in groups.items():
            lo, hi = stat["ci95"]
            shown = pooled({"pooled": stat["mean"], "ci95": [lo, hi]})
            table.add_row(*map(_cell, [group, stat["n"], shown]))
        console.print(table)
    for r in report["rejected"]:
        console.print(
            f"[yellow]rejected:[/] {escape(r['path'])}: {escape(r['reason'])}", highlight=False
        )
    console.print(f"[italic]{DISCLAIMER}[/]")
