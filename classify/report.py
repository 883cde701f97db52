"""Show results: Rich tables for people, JSON for programs, PNG plots (matplotlib, lazily)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from cxr.classify.metrics import (
    ECE_BINS,
    overall_metric,
    overall_metrics,
    per_class_metrics,
)
from cxr.classify.provenance import DISCLAIMER

SHOWN_TABLES = 2  # contingency tables printed for the strongest confounds; --json has all


def _num(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _pooled(stat: dict) -> str:
    """``pooled [lo, hi]``, for results scored on one test set."""
    lo, hi = stat["ci95"]
    return f"{_num(stat['pooled'])} [{_num(lo)}, {_num(hi)}]"


def _versus(comparison: dict | None, replicates: int) -> str:
    """The summary table's verdict against the best result of the group."""
    if not comparison:
        return ""
    if comparison["is_best"]:
        return "best"
    if comparison["difference"] is None:
        return "n/a"
    lo, hi = comparison["ci95"]
    mark = "≈ " if comparison["indistinguishable"] else ""
    p = comparison["p"]
    shown = f"p < {1 / replicates:.0e}" if p == 0 else f"p {p:.2g}"
    return f"{mark}{comparison['difference']:+.3f}\n[{lo:+.3f}, {hi:+.3f}] {shown}"


def _validation_line(r: dict) -> str:
    cv, validation = r["cv"], r.get("validation", {"kind": "cross-validation"})
    if validation["kind"] == "leave-one-out":
        return f"leave one {validation['column']} out (train on the others, test on each)"
    if validation["kind"] == "external":
        return (
            f"external test set ({'; '.join(validation['test_where'])}): "
            f"{validation['n_train']} training rows, {validation['n_test']} test rows"
        )
    unit = cv["unit"] if cv["grouped"] else "image (no patient grouping)"
    return (
        f"{cv['scheme']} by {unit}, {cv['folds']} folds x {cv['repeats']} repeat(s), "
        f"seed {cv['seed']}; CIs of pooled out-of-fold values"
    )


def render(report: dict, console: Console) -> None:
    """Confounds, the summary with paired comparisons, each group's best per class, provenance."""
    results = report["results"]
    first = results[0]
    settings = report.get("settings", {"metric": "balanced_accuracy", "operating_point": 0.95})
    op = settings["operating_point"]
    chosen = overall_metric(settings["metric"])
    console.print(
        f"[bold]Task[/]: {first['task']['name']}   [bold]Validation[/]: "
        f"{_validation_line(first)}   [bold]95% CI[/]: bootstrap, unit: "
        f"{first['bootstrap_unit']} ({report['provenance']['bootstrap']['replicates']} replicates)",
        highlight=False,
    )
    _render_confounds(report.get("confounds", []), first, console)
    cv = first.get("validation", {}).get("kind", "cross-validation") == "cross-validation"
    leave_out = first.get("validation", {}).get("kind") == "leave-one-out"
    title = (
        "Cross-validated heads: pooled out-of-fold [95% CI] (per fold: --json)"
        if cv
        else "Heads on held-out rows: pooled [95% CI]"
    )
    table = Table(title=title, caption=_comparison_caption(chosen, op, first["bootstrap_unit"]))
    summary = [m for m in overall_metrics() if m.summary or m is chosen]
    held = ["held out"] if leave_out else []
    mixed = any(r.get("inputs", "embeddings") != "embeddings" for r in results)
    shown_inputs = ["inputs"] if mixed else []
    for col in ("backbone", "head", *shown_inputs, *held, "n"):
        table.add_column(col, justify="right" if col == "n" else "left", no_wrap=True)
    for m in summary:  # fold, never cut: a truncated interval is a wrong interval
        table.add_column(m.title(op), overflow="fold")
    table.add_column(f"vs best ({chosen.title(op)})", overflow="fold")
    replicates = report["provenance"]["bootstrap"]["replicates"]
    for r in results:
        cells = [_pooled(r["metrics"][m.name]) for m in summary]
        extra = [str(r["validation"]["held_out"])] if leave_out else []
        extra = ([r.get("inputs", "embeddings")] if mixed else []) + extra
        versus = _versus(r.get("comparison"), replicates)
        backbone = r["backbone"] if r.get("inputs", "embeddings").startswith("embeddings") else "-"
        table.add_row(backbone, r["head"], *extra, str(r["n"]), *cells, versus)
    console.print(table)
    _render_gains(results, chosen.title(op), replicates, console)
    _render_search(results, console)
    _render_curves(report.get("learning_curves", []), chosen.title(op), console)
    for best in (r for r in results if r.get("comparison", {}).get("is_best")):
        _render_best(best, chosen.title(op), op, console)
        _caution(best, results, chosen.title(op), console)
    for note in report["warnings"]:
        console.print(f"[yellow]warning:[/] {note}", highlight=False, soft_wrap=True)
    _render_provenance(report["provenance"], console)


def _name(r: dict) -> str:
    from cxr.classify.evaluate import result_name  # the one naming rule

    return result_name(r)


def _render_gains(results: list[dict], metric: str, replicates: int, console: Console) -> None:
    """--covariates: what adding them changed, paired on the same images."""
    for r in results:
        gain = r.get("covariate_gain")
        if not gain:
            continue
        held = r.get("validation", {}).get("held_out")
        where = f" (held out: {held})" if held is not None else ""
        if gain["difference"] is None:
            shown = "n/a"
        else:
            lo, hi = gain["ci95"]
            p = gain["p"]
            p_text = f"p < {1 / replicates:.0e}" if p == 0 else f"p {p:.2g}"
            shown = f"{gain['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}] {p_text}"
        console.print(
            f"Covariates: {_name(r)}{where} vs {r['backbone']} + {r['head']} alone: {metric} "
            f"{shown} (paired bootstrap)",
            highlight=False,
            soft_wrap=True,
        )


def _render_curves(curves: list[dict], metric: str, console: Console) -> None:
    """--train-sizes: one table per task, a row per size, a column per (inputs, head)."""
    if not curves:
        return
    sizes = list(dict.fromkeys(p["size"] for c in curves for p in c["points"]))
    table = Table(
        title=f"Learning curves: {metric} [95% CI] by training images per class "
        f"(mean of {curves[0]['points'][0]['draws']} nested, patient-grouped draws)",
    )
    table.add_column("training size", no_wrap=True)
    for c in curves:
        held = f" | {c['held_out']}" if c["held_out"] is not None else ""
        table.add_column(f"{_name(c)}{held}", overflow="fold")
    for size in sizes:
        cells = []
        for c in curves:
            point = next(p for p in c["points"] if p["size"] == size)
            cells.append(_pooled({"pooled": point["value"], "ci95": point["ci95"]}))
        counts = next(p for p in curves[0]["points"] if p["size"] == size)["train_per_class"]
        mean = sum(counts.values()) / max(len(counts), 1)
        table.add_row(f"{size} (~{mean:.0f}/class)", *cells)
    console.print(table)
    for c in curves:
        full = c["points"][-1]["value"]
        name = _name(c)
        if c["within_margin_from"] is None or full is None:
            continue
        console.print(
            f"{name}: within {c['margin']:g} of its full-data {metric} ({full:.3f}) from "
            + _size_words(c["within_margin_from"]),
            highlight=False,
            soft_wrap=True,
        )


def _size_words(size: str) -> str:
    if size == "all":
        return "all training images only"
    if "." in size:
        return f"{float(size):.0%} of the training images"
    return f"{size} training images per class"


def _render_search(results: list[dict], console: Console) -> None:
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
            f"--search chose for {_name(r)}: {'; '.join(parts)}",
            highlight=False,
            soft_wrap=True,
        )


def _comparison_caption(chosen, op: float, unit: str) -> str:
    better = "higher" if chosen.higher_is_better else "lower"
    return (
        f"vs best: difference in pooled {chosen.title(op)} ({better} is better) from the best "
        f"result on the same images, [95% CI] of a paired bootstrap (unit: {unit}); ≈ marks "
        "results not distinguishable from the best"
    )


def _render_confounds(found: list[dict], first: dict, console: Console) -> None:
    warned = [c for c in found if c.get("warn")]
    if not warned:
        return
    target = first["task"].get("target", "label")
    held_out = first.get("validation", {}).get("column")
    for c in warned:
        twins = [t["column"] for t in found if t.get("same_as") == c["column"]]
        same = f" (and {', '.join(twins)}, which groups the rows the same way)" if twins else ""
        console.print(
            f"[yellow]warning: confound:[/] [bold]{c['column']}[/]{same} predicts the {target} "
            f"(Cramér's V {c['cramers_v']:.2f}; the column alone gives balanced accuracy "
            f"{c['balanced_accuracy']:.2f} vs {c['chance']:.2f} by chance): a head can score by "
            f"recognising {c['column']}. "
            + (
                f"This run holds each {c['column']} out."
                if held_out == c["column"]
                else f"Test it with the same command and --leave-out {c['column']}, or "
                f"`cxr audit --probe {c['column']}`."
            ),
            highlight=False,
            soft_wrap=True,
        )
    for c in warned[:SHOWN_TABLES]:
        classes = list(next(iter(c["table"].values())))
        table = Table(title=f"{c['column']} x {target} (rows)")
        table.add_column(c["column"])
        for cls in classes:
            table.add_column(cls, justify="right")
        for value, counts in c["table"].items():
            table.add_row(value, *(str(counts[cls]) for cls in classes))
        console.print(table)
    if len(warned) > SHOWN_TABLES:
        rest = ", ".join(c["column"] for c in warned[SHOWN_TABLES:])
        console.print(f"Tables of the other confounds ({rest}) are in --json.", highlight=False)


def _render_best(best: dict, metric: str, op: float, console: Console) -> None:
    where = best.get("validation", {}).get("held_out")
    title = f"Best by {metric}: {_name(best)}"
    title += f" (held out: {where})" if where is not None else ""
    per_class = Table(title=f"{title}, per class: pooled [95% CI]")
    columns = per_class_metrics()
    for col in ("class", "n", *(m.title(op) for m in columns)):
        per_class.add_column(col, overflow="fold")
    for cls, stats in best["metrics"]["per_class"].items():
        cells = (_pooled(stats[m.name]) for m in columns)
        per_class.add_row(cls, str(best["class_counts"][cls]), *cells)
    console.print(per_class)
    others = [m for m in overall_metrics() if not m.summary]
    if others:
        shown = "; ".join(f"{m.title(op)} {_pooled(best['metrics'][m.name])}" for m in others)
        console.print(f"Calibration and other metrics: {shown}", highlight=False)
    cm = Table(title="Confusion matrix of the test rows (rows: true, columns: predicted)")
    cm.add_column("true \\ predicted")
    for cls in best["classes"]:
        cm.add_column(cls, justify="right")
    for cls, row in zip(best["classes"], best["confusion_matrix"], strict=True):
        cm.add_row(cls, *map(str, row))
    console.print(cm)


def _caution(best: dict, results: list[dict], metric: str, console: Console) -> None:
    """The best of several results scored on the same rows is not a finding by itself."""
    group = [
        r
        for r in results
        if r.get("validation", {}).get("held_out") == best.get("validation", {}).get("held_out")
    ]
    if len(group) < 2:
        return
    tied = [
        r for r in group if r is not best and (r.get("comparison") or {}).get("indistinguishable")
    ]
    text = (
        f"caution: the best of {len(group)} results picked on the same test rows; its "
        f"{metric} is optimistic as an estimate for new data (selection), "
    )
    if tied:
        names = ", ".join(_name(r) for r in tied[:4])
        more = f" and {len(tied) - 4} more" if len(tied) > 4 else ""
        text += f"and it is not distinguishable from {names}{more} (≈ above)."
    else:
        text += "though every other result is distinguishably worse."
    text += " Confirm a choice on an external test set (--test-where) before reporting it."
    console.print(f"[yellow]{text}[/]", highlight=False, soft_wrap=True)


def _render_provenance(prov: dict, console: Console) -> None:
    console.print("[bold]Provenance[/]", highlight=False)
    for backbone, attrs in prov["stores"].items():
        console.print(
            f"  {backbone}: {attrs['path']}, weights {attrs.get('weights')} "
            f"{attrs.get('weights_file', '')} sha256 {str(attrs.get('weights_sha256', ''))[:12]}, "
            f"input {attrs.get('input_size')} ({attrs.get('resize')}), "
            f"rows sha256 {attrs['rows_sha256'][:12]}",
            highlight=False,
        )
    versions = ", ".join(f"{k} {v}" for k, v in prov["versions"].items())
    console.print(f"  seed {prov['seed']}; {versions}", highlight=False)
    console.print(f"[italic]{DISCLAIMER}[/]")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def run_slug(result: dict) -> str:
    """Names the task and its validation, so runs that differ in either never share a file:
    ``<task>[-without-<value>|-test-<where>|-by-<column>]``."""
    validation, cv = result.get("validation", {}), result["cv"]
    slug = _slug(result["task"]["name"])
    if validation.get("kind") == "leave-one-out":
        return f"{slug}-without-{_slug(str(validation['held_out']))}"
    if validation.get("kind") == "external":
        return f"{slug}-test-{_slug(' '.join(validation['test_where']))}"
    if cv.get("grouped") and cv.get("unit") not in ("patient", None):
        return f"{slug}-by-{_slug(cv['unit'])}"
    return slug if cv.get("grouped", True) else f"{slug}-by-image"


def _title(ax, text: str, width: int) -> None:
    """A title wrapped to the figure's width (about ``width`` characters a line)."""
    ax.set_title("\n".join(textwrap.wrap(text, width)), fontsize=9)


def roc_classes(classes: list[str], y: np.ndarray) -> list[int]:
    """Classes whose one-vs-rest ROC curve is drawn: those with positive and negative rows; of
    two classes only the positive (last) one, since the other curve is its mirror image."""
    drawable = [c for c in range(len(classes)) if 0 < np.sum(y == c) < len(y)]
    return drawable[-1:] if len(classes) == 2 else drawable


def write_plots(result: dict, y: np.ndarray, proba: np.ndarray, out_dir: Path) -> list[str]:
    """Confusion matrix, one-vs-rest ROC and reliability diagram PNGs of one result."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    out_dir.mkdir(parents=True, exist_ok=True)
    inputs = result.get("inputs", "embeddings")
    extra = "" if inputs == "embeddings" else f"-{_slug(inputs)}"
    stem = f"{result['backbone']}-{result['head']}{extra}-{run_slug(result)}"
    name = f"{_name(result)}, {result['task']['name']}"
    held = result.get("validation", {}).get("held_out")
    name += f", held out: {held}" if held is not None else ""
    classes, cm = result["classes"], np.asarray(result["confusion_matrix"])
    written = []

    size = 4 + 0.5 * len(classes)
    fig, ax = plt.subplots(figsize=(size, size - 0.5))
    ax.imshow(cm, cmap="Blues")
    for (i, j), count in np.ndenumerate(cm):
        color = "white" if count > cm.max() / 2 else "black"
        ax.text(j, i, str(count), ha="center", va="center", color=color)
    ax.set(
        xticks=range(len(classes)),
        yticks=range(len(classes)),
        xticklabels=classes,
        yticklabels=classes,
        xlabel="predicted",
        ylabel="true",
    )
    _title(ax, f"{name}: confusion matrix of the test rows", int(9 * size))
    written.append(_save(fig, out_dir / f"{stem}-confusion.png"))

    drawable = roc_classes(classes, y)
    if drawable:  # a ROC curve needs positive and negative rows
        fig, ax = plt.subplots(figsize=(5, 5))
        for c in drawable:
            fpr, tpr, _ = roc_curve(y == c, proba[:, c])
            auc = result["metrics"]["per_class"][classes[c]]["roc_auc"]["pooled"]
            ax.plot(fpr, tpr, label=f"{classes[c]} (AUC {_num(auc)})")
        ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
        ax.set(xlabel="1 - specificity", ylabel="sensitivity")
        ax.legend(loc="lower right", fontsize=8)
        kind = f"{classes[-1]} vs {classes[0]}" if len(classes) == 2 else "one-vs-rest"
        _title(ax, f"{name}: ROC, {kind}", 45)
        written.append(_save(fig, out_dir / f"{stem}-roc.png"))

    fig, ax = plt.subplots(figsize=(5, 5))
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y
    bins = np.minimum((confidence * ECE_BINS).astype(int), ECE_BINS - 1)
    centres, accuracy, counts = [], [], []
    for b in range(ECE_BINS):
        inside = bins == b
        if inside.any():
            centres.append(confidence[inside].mean())
            accuracy.append(correct[inside].mean())
            counts.append(int(inside.sum()))
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfectly calibrated")
    ax.plot(centres, accuracy, marker="o", label="observed")
    for x, acc, n in zip(centres, accuracy, counts, strict=True):
        right = x > 0.85  # keep the label inside the axes
        offset = (-4, -10) if right else (4, -10)
        ax.annotate(
            str(n),
            (x, acc),
            textcoords="offset points",
            xytext=offset,
            fontsize=7,
            ha="right" if right else "left",
        )
    ece = result["metrics"]["ece"]["pooled"]
    ax.set(xlabel="confidence of the predicted class", ylabel="share correct", xlim=(0, 1))
    ax.set_ylim(0, 1.02)
    ax.legend(loc="upper left", fontsize=8)
    _title(ax, f"{name}: reliability (ECE {_num(ece)}; images per bin beside the points)", 45)
    written.append(_save(fig, out_dir / f"{stem}-reliability.png"))
    return written


def write_forest_plots(report: dict, out_dir: Path) -> list[str]:
    """One forest plot per task: the chosen metric, pooled with its 95% CI, every result."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = report["settings"]
    chosen = overall_metric(settings["metric"])
    label = chosen.title(settings["operating_point"])
    written = []
    for design in dict.fromkeys(_forest_slug(r) for r in report["results"]):
        rows = [r for r in report["results"] if _forest_slug(r) == design][::-1]
        task = rows[0]["task"]["name"]
        fig, ax = plt.subplots(figsize=(6.5, 1.2 + 0.35 * len(rows)))
        for i, r in enumerate(rows):
            stat, comparison = r["metrics"][chosen.name], r.get("comparison", {})
            if stat["pooled"] is None:
                continue
            lo, hi = (v if v is not None else stat["pooled"] for v in stat["ci95"])
            best, tied = comparison.get("is_best"), comparison.get("indistinguishable")
            color = "black" if best else ("tab:blue" if tied else "tab:grey")
            ax.plot([lo, hi], [i, i], color=color, linewidth=1.5)
            ax.plot(stat["pooled"], i, "o", color=color, fillstyle="full" if tied else "none")
        names = []
        for r in rows:
            held = r.get("validation", {}).get("held_out")
            names.append(_name(r) + (f" | {held}" if held else ""))
        ax.set_yticks(range(len(rows)), names, fontsize=8)
        ax.set_xlabel(f"{label}: pooled, 95% CI (bootstrap over patients)")
        _title(
            ax,
            f"{task}: filled = best or indistinguishable from it (paired bootstrap), "
            "hollow = worse",
            70,
        )
        written.append(_save(fig, out_dir / f"{design}-forest-{chosen.name}.png"))
    return written


def write_curve_plots(report: dict, out_dir: Path) -> list[str]:
    """One learning-curve figure per task: a line per (inputs, backbone, head), shaded 95% CIs."""
    curves = report.get("learning_curves", [])
    if not curves:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    label = overall_metric(report["settings"]["metric"]).title(
        report["settings"]["operating_point"]
    )
    written = []
    for task in dict.fromkeys(c["task"] for c in curves):
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for c in (c for c in curves if c["task"] == task):
            points = [p for p in c["points"] if p["value"] is not None]
            x = [sum(p["train_per_class"].values()) / len(p["train_per_class"]) for p in points]
            lo = [p["ci95"][0] if p["ci95"][0] is not None else p["value"] for p in points]
            hi = [p["ci95"][1] if p["ci95"][1] is not None else p["value"] for p in points]
            held = f" | {c['held_out']}" if c["held_out"] is not None else ""
            line = ax.plot(x, [p["value"] for p in points], marker="o", label=f"{_name(c)}{held}")
            ax.fill_between(x, lo, hi, alpha=0.2, color=line[0].get_color())
        ax.set_xscale("log")
        ax.minorticks_off()  # the sizes themselves are the ticks
        ax.set_xticks(x, [f"{p['size']}\n({v:.0f})" for p, v in zip(points, x, strict=True)])
        ax.set(xlabel="training images per class (mean over splits and classes)", ylabel=label)
        ax.legend(fontsize=7, loc="lower right")
        _title(ax, f"{task}: learning curves, pooled test rows, 95% CI", 70)
        written.append(_save(fig, out_dir / f"{_slug(task)}-learning-curves.png"))
    return written


def _forest_slug(result: dict) -> str:
    """One forest plot per task and design (all held-out values of a leave-out together)."""
    validation = result.get("validation", {})
    if validation.get("kind") == "leave-one-out":
        return f"{_slug(result['task']['name'])}-leave-out-{_slug(validation['column'])}"
    return run_slug(result)


def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def render_training(summary: dict, console: Console) -> None:
    counts = ", ".join(f"{k} {v}" for k, v in summary["class_counts"].items())
    console.print(
        f"Saved {summary['head']} on {summary['backbone']} ({summary['n']} rows: {counts}) to "
        f"{summary['model']}",
        highlight=False,
    )
    for note in summary["warnings"]:
        console.print(f"[yellow]warning:[/] {note}", highlight=False, soft_wrap=True)
    console.print(f"[italic]{DISCLAIMER}[/]")


def render_predictions(result: dict, console: Console) -> None:
    table = Table(title=f"{result['model']}: {result['head']} on {result['backbone']}")
    for col in ("image", "predicted", *result["classes"]):
        table.add_column(col)
    for p in result["predictions"]:
        probabilities = (f"{p['probabilities'][c]:.3f}" for c in result["classes"])
        table.add_row(p["path"], p["predicted"], *probabilities)
    console.print(table)
    for r in result["rejected"]:
        console.print(f"[yellow]rejected:[/] {r['path']}: {r['reason']}", highlight=False)
    for note in result["warnings"]:
        console.print(f"[yellow]warning:[/] {note}", highlight=False, soft_wrap=True)
    console.print(f"[italic]{DISCLAIMER}[/]")
