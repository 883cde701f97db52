"""Show results: Rich tables for people, JSON for programs, PNG plots (matplotlib, lazily)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from cxr.classify.metrics import overall_metrics, per_class_metrics
from cxr.classify.provenance import DISCLAIMER


def _fmt(stat: dict) -> str:
    """``mean ± std [lo, hi]``; ``n/a`` for undefined values."""

    def num(v):
        return "n/a" if v is None else f"{v:.3f}"

    lo, hi = stat["ci95"]
    return f"{num(stat['mean'])} ± {num(stat['std'])} [{num(lo)}, {num(hi)}]"


def best_result(report: dict) -> dict:
    """The configuration with the highest mean balanced accuracy."""
    return max(report["results"], key=lambda r: r["metrics"]["balanced_accuracy"]["mean"] or -1)


def _cv_line(r: dict) -> str:
    cv = r["cv"]
    unit = cv["unit"] if cv["grouped"] else "image (no patient grouping)"
    return (
        f"{cv['scheme']} by {unit}, {cv['folds']} folds x {cv['repeats']} repeat(s), "
        f"seed {cv['seed']}"
    )


def render(report: dict, console: Console) -> None:
    """Summary table, the best configuration's per-class table and confusion matrix, provenance."""
    results = report["results"]
    first = results[0]
    console.print(
        f"[bold]Task[/]: {first['task']['name']}   [bold]CV[/]: {_cv_line(first)}   "
        f"[bold]95% CI[/]: bootstrap, unit: {first['bootstrap_unit']} "
        f"({report['provenance']['bootstrap']['replicates']} replicates)",
        highlight=False,
    )
    table = Table(title="Cross-validated heads: mean ± std over folds [95% CI]")
    summary = overall_metrics()
    for col in ("backbone", "head", "n", *(m.label for m in summary)):
        table.add_column(col, justify="right" if col == "n" else "left")
    for r in results:
        cells = (_fmt(r["metrics"][m.name]) for m in summary)
        table.add_row(r["backbone"], r["head"], str(r["n"]), *cells)
    console.print(table)

    best = best_result(report)
    title = f"Best by balanced accuracy: {best['backbone']} + {best['head']}, per class"
    per_class = Table(title=title)
    columns = per_class_metrics()
    for col in ("class", "n", *(m.label for m in columns)):
        per_class.add_column(col)
    for cls, stats in best["metrics"]["per_class"].items():
        cells = (_fmt(stats[m.name]) for m in columns)
        per_class.add_row(cls, str(best["class_counts"][cls]), *cells)
    console.print(per_class)

    cm = Table(title="Confusion matrix, summed over folds (rows: true, columns: predicted)")
    cm.add_column("true \\ predicted")
    for cls in best["classes"]:
        cm.add_column(cls, justify="right")
    for cls, row in zip(best["classes"], best["confusion_matrix"], strict=True):
        cm.add_row(cls, *map(str, row))
    console.print(cm)

    for note in report["warnings"]:
        console.print(f"[yellow]warning:[/] {note}", highlight=False, soft_wrap=True)
    prov = report["provenance"]
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


def write_plots(result: dict, y: np.ndarray, proba: np.ndarray, out_dir: Path) -> list[str]:
    """A confusion-matrix PNG and a one-vs-rest ROC PNG (pooled out-of-fold) for one config."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    out_dir.mkdir(parents=True, exist_ok=True)
    task = re.sub(r"[^a-z0-9]+", "-", result["task"]["name"].lower()).strip("-")
    stem = f"{result['backbone']}-{result['head']}-{task}"  # one folder can hold many tasks
    classes, cm = result["classes"], np.asarray(result["confusion_matrix"])

    fig, ax = plt.subplots(figsize=(4 + 0.5 * len(classes), 3.5 + 0.5 * len(classes)))
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
        title=f"{stem}: confusion (summed over folds)",
    )
    confusion_png = out_dir / f"{stem}-confusion.png"
    fig.tight_layout()
    fig.savefig(confusion_png, dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 5))
    for c, cls in enumerate(classes):
        fpr, tpr, _ = roc_curve(y == c, proba[:, c])
        auc = result["metrics"]["per_class"][cls]["roc_auc"]["pooled"]
        ax.plot(fpr, tpr, label=f"{cls} (AUC {auc:.3f})" if auc is not None else cls)
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=f"{stem}: ROC, one-vs-rest")
    ax.legend(loc="lower right")
    roc_png = out_dir / f"{stem}-roc.png"
    fig.tight_layout()
    fig.savefig(roc_png, dpi=120)
    plt.close(fig)
    return [str(confusion_png), str(roc_png)]


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
