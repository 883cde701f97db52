"""The PNG figures of an evaluation, drawn after it from what it returned (matplotlib, lazily).

Per result a confusion matrix, a ROC plot and a reliability diagram; per task and design run a
forest plot of the chosen metric; per task the learning curves; per store the embedding map.
File names come from the design (`Design.slug`) and from names made safe here: whatever a
store's attributes or a label hold, a plot lands in the folder it was asked for, under a name
the file system takes.
"""

from __future__ import annotations

import hashlib
import io
import re
import textwrap
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from cxr.classify.layout import Layout, layout
from cxr.classify.metric_table import overall_metric
from cxr.classify.neighbours import Neighbourhood, Sample, chance, percent
from cxr.classify.outcomes import ECE_BINS
from cxr.classify.presentation import presentation_of, slug
from cxr.classify.records import Inputs, Validation
from cxr.classify.results import Evaluated, EvaluateReport, Result, result_name
from cxr.classify.tables import number
from cxr.files import replace_file
from cxr.reporting.figures import written as figures_written

MAX_STEM = 160  # characters of a file name before its suffix (file systems take 255 bytes)


Thumbnail = Callable[[Path], "np.ndarray | None"]  # a film -> a small gray picture


def write_plots(
    evaluated: Evaluated, out_dir: Path, thumbnail: Thumbnail | None = None
) -> list[str]:
    """Every figure of the report into ``out_dir``; the paths are added to the report (each
    result's ``plots``, the report's ``plots``, and the record of what was written, its
    ``figures``) and returned. With ``thumbnail`` (stage 1's `cxr.extract.images.thumbnail`,
    handed in at the edge), galleries of the films too."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report = evaluated.report
    written = []
    op = report["settings"]["operating_point"]
    # The maps' layouts (t-SNE, seconds each) run in a thread while matplotlib draws the other
    # figures on the other core: its gradient releases the GIL, and drawing keeps one core busy.
    with ThreadPoolExecutor(max_workers=1) as pool:
        seed = report["provenance"]["seed"]
        laid = {s.name: pool.submit(layout, s.X, seed) for s in evaluated.samples}
        for result, outcome in zip(report["results"], evaluated.outcomes, strict=True):
            result["plots"] = result_plots(result, outcome.y, outcome.proba, out_dir, op)
            written += result["plots"]
        report["plots"] = forest_plots(report, out_dir) + curve_plots(report, out_dir)
        report["plots"] += confound_plots(report, out_dir)
        if thumbnail is not None:
            report["plots"] += wrong_galleries(evaluated, out_dir, thumbnail)
        report["plots"] += map_plots(evaluated, out_dir, laid)
    written += report["plots"]
    report["figures"] = figures_written(out_dir, written)
    return written


def safe_name(text: str) -> str:
    """A file-name part from any text: letters, digits, dot, dash and underscore kept, the rest
    a dash, no leading dot (so no hidden file and no ``..``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).lstrip(".-") or "x"


def _file(out_dir: Path, stem: str, suffix: str) -> Path:
    """``out_dir/<stem><suffix>``, the stem cut to MAX_STEM with a digest of the whole, so that
    long names stay distinct."""
    if len(stem) > MAX_STEM:
        digest = hashlib.sha256(stem.encode()).hexdigest()[:12]
        stem = f"{stem[: MAX_STEM - 13]}-{digest}"
    return out_dir / f"{stem}{suffix}"


def _title(ax, text: str, width: int) -> None:
    """A title wrapped to the figure's width (about ``width`` characters a line)."""
    ax.set_title("\n".join(textwrap.wrap(text, width)), fontsize=9)


def roc_classes(classes: list[str], y: np.ndarray) -> list[int]:
    """Classes whose one-vs-rest ROC curve is drawn: those with positive and negative rows; of
    two classes only the positive (last) one, since the other curve is its mirror image."""
    drawable = [c for c in range(len(classes)) if 0 < np.sum(y == c) < len(y)]
    return drawable[-1:] if len(classes) == 2 else drawable


def result_plots(
    result: Result, y: np.ndarray, proba: np.ndarray, out_dir: Path, operating_point: float
) -> list[str]:
    """Confusion matrix (counts and each true class's share), one-vs-rest ROC (with the
    operating point) and reliability diagram PNGs of one result."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    inputs = Inputs.of(result)
    extra = "" if inputs.alone else f"-{slug(str(inputs))}"
    backbone, head = safe_name(result["backbone"]), safe_name(result["head"])
    stem = f"{backbone}-{head}{extra}-{presentation_of(result).slug(result)}"
    name = f"{result_name(result)}, {result['task']['name']}"
    held = Validation.of(result).held_out
    name += f", held out: {held}" if held is not None else ""
    classes, cm = result["classes"], np.asarray(result["confusion_matrix"])
    written = []

    size = 4 + 0.5 * len(classes)
    fig, ax = plt.subplots(figsize=(size, size - 0.5))
    totals = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, totals, out=np.zeros(cm.shape), where=totals > 0)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)  # the colour is the row's share
    for (i, j), count in np.ndenumerate(cm):
        color = "white" if share[i, j] > 0.5 else "black"
        shown = f"{count}\n{share[i, j]:.0%}" if totals[i, 0] else str(count)
        ax.text(j, i, shown, ha="center", va="center", color=color, fontsize=9)
    ax.set(
        xticks=range(len(classes)),
        yticks=range(len(classes)),
        xticklabels=classes,
        yticklabels=classes,
        xlabel="predicted",
        ylabel="true",
    )
    _title(
        ax,
        f"{name}: confusion matrix of the test rows (count, and its share of the true class)",
        int(9 * size),
    )
    written.append(_save(fig, _file(out_dir, stem, "-confusion.png")))

    drawable = roc_classes(classes, y)
    if drawable:  # a ROC curve needs positive and negative rows
        fig, ax = plt.subplots(figsize=(5, 5))
        for c in drawable:
            fpr, tpr, _ = roc_curve(y == c, proba[:, c])
            auc = result["metrics"]["per_class"][classes[c]]["roc_auc"]["pooled"]
            line = ax.plot(fpr, tpr, label=f"{classes[c]} (AUC {number(auc)})")
            allowed = fpr <= 1 - operating_point + 1e-9
            at = np.flatnonzero(allowed)[np.argmax(tpr[allowed])]  # fpr 0 always qualifies
            ax.plot(
                fpr[at],
                tpr[at],
                "o",
                color=line[0].get_color(),
                label=f"{classes[c]}: sensitivity {tpr[at]:.2f} at specificity "
                f">= {operating_point:.0%}",
            )
        ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
        ax.set(xlabel="1 - specificity", ylabel="sensitivity")
        ax.legend(loc="lower right", fontsize=8)
        kind = f"{classes[-1]} vs {classes[0]}" if len(classes) == 2 else "one-vs-rest"
        _title(ax, f"{name}: ROC, {kind}", 45)
        written.append(_save(fig, _file(out_dir, stem, "-roc.png")))

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
        above = acc < 0.9  # above the marker, unless that leaves the axes: then below it
        ax.annotate(
            str(n),
            (x, acc),
            textcoords="offset points",
            xytext=(0, 7 if above else -8),
            fontsize=7,
            ha="center",
            va="bottom" if above else "top",
            bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "edgecolor": "none"},
        )
    ece = result["metrics"]["ece"]["pooled"]
    ax.set(xlabel="confidence of the predicted class", ylabel="share correct", xlim=(0, 1))
    ax.set_ylim(0, 1.02)
    ax.legend(loc="upper left", fontsize=8)
    _title(ax, f"{name}: reliability (ECE {number(ece)}; images per bin by the points)", 45)
    written.append(_save(fig, _file(out_dir, stem, "-reliability.png")))
    return written


def forest_plots(report: EvaluateReport, out_dir: Path) -> list[str]:
    """One forest plot per task and design run: the chosen metric of every result, pooled with
    its 95% CI, grouped by what it is compared within (a held-out value, or the whole run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = report["settings"]
    chosen = overall_metric(settings["metric"])
    label = chosen.title(settings["operating_point"])
    colours = {"best": "black", "tied": "tab:blue", "worse": "tab:grey"}
    written = []
    forest_slug = lambda r: presentation_of(r).forest_slug(r)  # noqa: E731
    for design in dict.fromkeys(forest_slug(r) for r in report["results"]):
        results = [r for r in report["results"] if forest_slug(r) == design]
        groups = list(dict.fromkeys(Validation.of(r).held_out for r in results))
        rows: list[Result] = []
        names: list[str] = []
        starts: list[int] = []
        for group in groups:  # each held-out value's results together, top to bottom
            starts.append(len(rows))
            for r in (r for r in results if Validation.of(r).held_out == group):
                rows.append(r)
                names.append(result_name(r) + (f" | {group}" if group is not None else ""))
        n = len(rows)
        fig, ax = plt.subplots(figsize=(6.5, 1.6 + 0.35 * n))
        for i, r in enumerate(rows):
            y = n - 1 - i
            stat, comparison = r["metrics"][chosen.name], r.get("comparison", {})
            if stat["pooled"] is None:
                continue
            lo, hi = (v if v is not None else stat["pooled"] for v in stat["ci95"])
            kind = (
                "best"
                if comparison.get("is_best")
                else "tied"
                if comparison.get("indistinguishable")
                else "worse"
            )
            ax.plot([lo, hi], [y, y], color=colours[kind], linewidth=1.5)
            ax.plot(stat["pooled"], y, "o", color=colours[kind], fillstyle="full")
        for start in starts[1:]:  # a line between held-out values: compared within, not across
            ax.axhline(n - start - 0.5, color="lightgrey", linewidth=0.8)
        ax.set_yticks(range(n), names[::-1], fontsize=8)
        ax.set_xlabel(f"{label}: pooled, 95% CI (bootstrap over patients)")
        within = "its held-out value (between the grey lines)" if len(groups) > 1 else "the run"
        _title(
            ax,
            f"{rows[0]['task']['name']}: {label} of every result. Black: the best of {within}; "
            "blue: not distinguishable from that best; grey: worse (paired bootstrap)",
            52,  # the axes' width: the names on the left take the rest
        )
        written.append(_save(fig, _file(out_dir, design, f"-forest-{chosen.name}.png")))
    return written


def curve_plots(report: EvaluateReport, out_dir: Path) -> list[str]:
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
            value = np.asarray([p["value"] for p in points], dtype=float)
            lo = np.asarray([p["ci95"][0] for p in points], dtype=float)  # None: NaN
            hi = np.asarray([p["ci95"][1] for p in points], dtype=float)
            lo, hi = np.where(np.isnan(lo), value, lo), np.where(np.isnan(hi), value, hi)
            held = f" | {c['held_out']}" if c["held_out"] is not None else ""
            line = ax.plot(x, value, marker="o", label=f"{result_name(c)}{held}")
            ax.fill_between(x, lo, hi, alpha=0.2, color=line[0].get_color())
        ax.set_xscale("log")
        ax.minorticks_off()  # the sizes themselves are the ticks
        ax.set_xticks(x, [f"{p['size']}\n({v:.0f})" for p, v in zip(points, x, strict=True)])
        ax.set(xlabel="training images per class (mean over splits and classes)", ylabel=label)
        ax.legend(fontsize=7, loc="lower right")
        _title(ax, f"{task}: learning curves, pooled test rows, 95% CI", 70)
        written.append(_save(fig, _file(out_dir, slug(task), "-learning-curves.png")))
    return written


def _save(fig, path: Path, palette: bool = False) -> str:
    """``palette``: 256 colours (photographs in a figure: a quarter of the bytes). Drawn in
    memory and written by `cxr.files.replace_file`: a link planted under a figure's name in a
    shared folder is replaced, never written through."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    image = io.BytesIO()
    if palette:
        from PIL import Image

        fig.set_dpi(120)
        fig.canvas.draw()
        rgb = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())).convert("RGB")
        rgb.quantize(256).save(image, format="PNG", optimize=True)
    else:
        fig.savefig(image, format="png", dpi=120)
    plt.close(fig)
    replace_file(path, image.getbuffer())
    return str(path)


SHEET = 16  # films per contact sheet


def explanation_plots(explained: Any, out_dir: Path) -> list[str]:
    """`cxr explain`'s figures: each film with its evidence over it and the central box drawn,
    and a contact sheet per class and per source; the paths go into the report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    report = explained.report
    box = report["box"]
    written = []

    def draw(ax, i: int) -> None:
        film, found = report["films"][i], explained.maps[i]
        image = explained.images[i]
        size = image.shape[0]
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        positive = np.maximum(found, 0)
        peak = positive.max() or 1.0
        ax.imshow(positive / peak, cmap="jet", alpha=0.45, vmin=0, vmax=1,
                  extent=(0, size, size, 0), interpolation="bilinear")  # fmt: skip
        edge = size * (1 - box) / 2
        ax.add_patch(
            plt.Rectangle((edge, edge), size * box, size * box, fill=False, color="white",
                          linestyle="--", linewidth=1)
        )  # fmt: skip
        share = film["share_outside"]
        outside = "n/a" if share is None else f"{share:.0%}"
        truth = film["label"] or "?"
        ax.set_title(
            f"{truth} -> {film['predicted']} ({film['probabilities'][film['predicted']]:.2f})\n"
            f"evidence for {film['target']}: {outside} outside the box",
            fontsize=7,
        )
        ax.axis("off")

    for i, film in enumerate(report["films"]):
        fig, ax = plt.subplots(figsize=(3.4, 3.8))
        draw(ax, i)
        stem = safe_name(Path(film["path"]).stem)
        film["overlay"] = _save(
            fig, _file(out_dir, f"{stem}-{safe_name(film['target'])}", "-cam.png")
        )
        written.append(film["overlay"])
    for key, title in (("label", "class"), ("source", "source")):
        groups = sorted({f[key] for f in report["films"] if f[key]})
        for group in groups:
            members = [i for i, f in enumerate(report["films"]) if f[key] == group][:SHEET]
            cols = min(4, len(members))
            rows = -(-len(members) // cols)
            fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.9 * rows), squeeze=False)
            for ax in axes.flat:
                ax.axis("off")
            for ax, i in zip(axes.flat, members, strict=False):
                draw(ax, i)
            stat = report["by_class" if key == "label" else "by_source"][group]
            mean = "n/a" if stat["mean"] is None else f"{stat['mean']:.0%}"
            fig.suptitle(
                f"{title} {group}: {report['backbone']} + {report['head']} ({report['method']}); "
                f"mean share of the evidence outside the central box {mean}",
                fontsize=9,
            )
            name = f"sheet-{title}-{slug(group)}"
            written.append(_save(fig, _file(out_dir, name, ".png"), palette=True))
    report["plots"] = written
    return written


GALLERY = 8  # films per gallery


def wrong_galleries(evaluated: Evaluated, out_dir: Path, thumbnail: Thumbnail) -> list[str]:
    """For each group's best result, per true class, the out-of-fold films it called wrong
    with the most confidence: the picture, the true class, the predicted probability, the
    source. What a head gets wrong, and how sure it was, is often the shortcut in plain view."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = evaluated.report
    written = []
    for result, outcome in zip(report["results"], evaluated.outcomes, strict=True):
        if not result.get("comparison", {}).get("is_best") or outcome.paths is None:
            continue
        root = Path(str(report["provenance"]["stores"][result["backbone"]].get("data_root", "")))
        classes = result["classes"]
        predicted = outcome.proba.argmax(axis=1)
        for k, name in enumerate(classes):
            wrong = np.flatnonzero((outcome.y == k) & (predicted != k))
            if not len(wrong):
                continue
            worst = wrong[np.argsort(-outcome.proba[wrong, predicted[wrong]], kind="stable")]
            worst = worst[:GALLERY]
            cols = min(4, len(worst))
            rows = -(-len(worst) // cols)
            fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.8 * rows), squeeze=False)
            for ax in axes.flat:
                ax.axis("off")
            for ax, i in zip(axes.flat, worst, strict=False):
                picture = thumbnail(root / str(outcome.paths[i]))
                if picture is not None:
                    ax.imshow(picture, cmap="gray", vmin=0, vmax=255)
                source = str(outcome.sources[i]) if outcome.sources is not None else ""
                call = classes[predicted[i]]
                ax.set_title(
                    f"called {call} ({outcome.proba[i, predicted[i]]:.2f})\n{source}"[:60],
                    fontsize=7,
                )
            fig.suptitle(
                f"{result_name(result)}: {name} films called something else, most confident "
                f"first ({len(wrong)} in all)",
                fontsize=9,
            )
            stem = f"{safe_name(result['backbone'])}-{safe_name(result['head'])}-"
            stem += f"{presentation_of(result).slug(result)}-wrong-{slug(name)}"
            written.append(_save(fig, _file(out_dir, stem, ".png")))
    return written


def confound_plots(report: EvaluateReport, out_dir: Path) -> list[str]:
    """The strongest confound's contingency table as a heatmap: each value's rows by class, the
    colour the value's share of each class."""
    warned = [c for c in report.get("confounds", []) if c.get("warn")]
    if not warned:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = warned[0]
    values = list(c["table"])
    classes = list(next(iter(c["table"].values())))
    counts = np.asarray([[c["table"][v][k] for k in classes] for v in values], dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(classes), 1.2 + 0.45 * len(values)))
    ax.imshow(share, cmap="Reds", vmin=0, vmax=1, aspect="auto")
    for (i, j), n in np.ndenumerate(counts):
        ax.text(j, i, f"{int(n)}", ha="center", va="center", fontsize=8,
                color="white" if share[i, j] > 0.6 else "black")  # fmt: skip
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(values)), [str(v)[:30] for v in values])
    ax.set(xlabel="class", ylabel=c["column"])
    first = report["results"][0]
    _title(
        ax,
        f"{c['column']} x class, {first['task']['name']}: Cramér's V {c['cramers_v']:.2f} "
        "(rows: how each value's films split by class)",
        50,
    )
    stem = f"{presentation_of(first).slug(first)}-confound-{safe_name(c['column'])}"
    return [_save(fig, _file(out_dir, stem, ".png"))]


MAP_COLOURS = 9  # values in a panel of the embedding map: 8 coloured (Dark2 has 8), 1 "other"


def map_plots(
    evaluated: Evaluated, out_dir: Path, laid: Mapping[str, Future[tuple[np.ndarray, Layout]]]
) -> list[str]:
    """Each store's embedding map (`embedding_map`) from its layout (``laid``, by store),
    named after the store, task and design."""
    report = evaluated.report
    entries = {n["backbone"]: n for n in report.get("neighbourhoods", [])}
    first = report["results"][0]
    written = []
    for sample in evaluated.samples:
        if sample.name in entries:
            stem = f"{safe_name(sample.name)}-{presentation_of(first).slug(first)}-embedding-map"
            entry, what = entries[sample.name], first["task"]["name"]
            placed = laid[sample.name].result()
            written.append(embedding_map(sample, entry, out_dir, stem, what, placed))
    return written


def embedding_map(
    sample: Sample,
    entry: Neighbourhood,
    out_dir: Path,
    stem: str,
    what: str,
    placed: tuple[np.ndarray, Layout] | None = None,
) -> str:
    """A store's films laid out in 2-D (``placed``, or `cxr.classify.layout.layout` now), side
    by side coloured by label and by the column of the neighbour shares, each panel titled with
    its share beside chance; how they were laid out goes into ``entry["map"]``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    coords, laid = placed if placed is not None else layout(sample.X, entry["seed"])
    k, everyone = entry["k"], entry["all"]
    label = everyone["same_label"]
    panels = [
        (
            sample.labels,
            f"by label: {percent(label)} of each film's {k} nearest neighbours (cosine, other "
            f"patients' films) carry its label; by chance {chance(label)}",
        )
    ]
    column = entry.get("column")
    if column is not None and sample.values is not None:
        mine, inside = everyone["same_value"], everyone["same_value_in_class"]
        panels.append(
            (
                sample.values,
                f"by {column}: {percent(mine)} of them come from its own {column} (by chance "
                f"{chance(mine)}); among its own class's films {percent(inside)} (by chance "
                f"{chance(inside)})",
            )
        )
    size = float(np.clip(12000 / max(len(coords), 1), 3, 30))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 6.8), squeeze=False)
    for ax, (values, title) in zip(axes[0], panels, strict=True):
        shown = np.asarray(values, dtype=object).astype(str)
        shown[shown == ""] = "(empty)"
        names, counts = np.unique(shown, return_counts=True)
        order = list(names[np.argsort(-counts, kind="stable")])
        if len(order) > MAP_COLOURS:  # the largest keep a colour, the rest are one grey
            rest = set(order[MAP_COLOURS - 1 :])
            shown = np.where(np.isin(shown, list(rest)), f"other ({len(rest)} values)", shown)
            order = [*order[: MAP_COLOURS - 1], f"other ({len(rest)} values)"]
        palette = plt.get_cmap("tab10" if values is sample.labels else "Dark2")
        for i, value in enumerate(order):  # the largest first, so the smallest stay visible
            inside = shown == value
            colour = "lightgrey" if value.startswith("other (") else palette(i % palette.N)
            ax.scatter(coords[inside, 0], coords[inside, 1], s=size, color=colour, alpha=0.75,
                       linewidths=0, label=f"{value[:30]} ({int(inside.sum()):,})")  # fmt: skip
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=min(3, len(order)),
                  fontsize=8, frameon=False, markerscale=max(1.0, 30 / size) ** 0.5)  # fmt: skip
        _title(ax, title, 62)
    laid_out = f"{laid['detail']}; {entry['sample']}"
    fig.suptitle(
        "\n".join(
            textwrap.wrap(f"{sample.name}, {what}: embedding map, {laid_out}", 60 * len(panels))
        ),
        fontsize=9,
    )
    laid["figure"] = _save(fig, _file(out_dir, stem, ".png"))
    entry["map"] = laid
    return laid["figure"]
