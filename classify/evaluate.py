"""`cxr evaluate`: every (backbone, head) cross-validated on one task, as one report.

The report's shape is defined here, once (``EvaluateReport`` and ``Result``); the JSON is exactly
these dicts, and the terminal report, the plots and the study read them by key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypedDict

import numpy as np

from cxr.classify.compare import Comparison, Scored, compare, row_keys
from cxr.classify.confounds import Confound, confounds
from cxr.classify.cv import INNER_FOLDS, OutOfFold, run_splits
from cxr.classify.heads import (
    HEADS,
    Params,
    effective_params,
    get_head,
    grids,
    search_grid,
)
from cxr.classify.metrics import overall_metric, summarize
from cxr.classify.provenance import DISCLAIMER, jsonable, library_versions
from cxr.classify.tasks import Condition, TaskData, TaskSpec
from cxr.classify.validation import design
from cxr.errors import CxrError
from cxr.progress import Silent, Steps
from cxr.store import find_stores, load
from cxr.store.schema import store_path


class Result(TypedDict, total=False):
    """One (backbone, head) on the task."""

    backbone: str
    head: str
    params: dict  # the classifier's effective parameters
    search: dict | None  # grid, inner_folds, scoring, best_params per fold (with --search)
    task: dict  # name and TaskSpec.to_dict()
    cv: dict  # CVPlan.to_dict()
    n: int
    n_patients: int | None
    classes: list[str]
    class_counts: dict[str, int]
    metrics: dict  # overall metric name -> Stat, and "per_class": {class: {name: Stat}}
    confusion_matrix: list[list[int]]  # summed over folds (rows: true, columns: predicted)
    bootstrap_unit: str  # patient, image, or duplicate groups
    validation: dict  # kind (cross-validation, leave-one-out, external) and its details
    comparison: Comparison  # against the best result of its group (paired bootstrap)
    plots: list[str]  # with --plots
    predictions: Predictions  # with --predictions: every out-of-fold prediction


class Predictions(TypedDict):
    """Out-of-fold predictions of one result, column-wise (one entry per test row and repeat)."""

    id: list[str]  # image sha256
    path: list[str]
    group: list[str]  # the bootstrap unit (patient id) of the row
    label: list[str]  # true class of the task
    split: list[int]  # the split that tested the row (CV: repeat * folds + fold)
    proba: dict[str, list[float]]  # class -> probability


class Provenance(TypedDict):
    versions: dict[str, str]
    stores: dict[str, dict]  # backbone -> path, rows_sha256 and every store attribute
    seed: int
    bootstrap: dict  # replicates, seed, percentiles
    disclaimer: str


class EvaluateReport(TypedDict, total=False):
    results: list[Result]
    confounds: list[Confound]  # metadata columns that predict the target, strongest first
    warnings: list[str]
    settings: dict  # metric (best and comparisons), operating_point
    provenance: Provenance
    plots: list[str]  # with --plots: the forest plot of each task


def evaluate(
    features_dir: Path = Path("features"),
    backbones: Sequence[str] = (),
    heads: Sequence[str] = (),
    task: TaskSpec | None = None,
    params: Mapping[str, Params] | None = None,
    *,
    group_by: str = "auto",
    leave_out: str | None = None,
    test_where: Sequence[Condition | str] = (),
    folds: int | None = None,
    repeats: int | None = None,
    seed: int = 0,
    jobs: int = 1,
    search: bool = False,
    n_boot: int = 1000,
    metric: str = "balanced_accuracy",
    operating_point: float = 0.95,
    confound_columns: Sequence[str] | None = None,
    plots: Path | None = None,
    predictions: bool = False,
    progress: Steps | None = None,
) -> EvaluateReport:
    """Validate heads on the stores' embeddings; ``{"results", "confounds", "warnings", ...}``.

    Cross-validation by default (``folds`` 10, ``repeats`` 1); ``leave_out`` holds out each
    value of a column in turn, ``test_where`` (conditions in the ``--where`` syntax) scores once
    on disjoint test rows. Every result is compared with the best of
    its group by ``metric`` (paired bootstrap over patients), and the task's metadata columns
    are checked for confounds (``confound_columns``: None for all, () for none). The result is
    deterministic for given inputs and seed (no timings, no job count), so two runs can be
    compared byte for byte. With ``plots``, writes PNGs there; with ``predictions``, every
    result carries its out-of-fold predictions per image (``Predictions``); ``progress``
    receives the stages (fits, bootstrap, comparisons).
    """
    task = task or TaskSpec()
    params = params or {}
    steps = progress or Silent()
    names = list(dict.fromkeys(heads)) or list(HEADS)
    for name in names:
        get_head(name)
        listed = grids(params.get(name))
        if listed and not search:
            key, values = next(iter(listed.items()))
            raise CxrError(
                f"--set {name}.{key} lists {len(values)} values: add --search to tune over them, "
                "or give one value"
            )
    if n_boot < 1:
        raise CxrError("--bootstrap must be >= 1")
    if jobs == 0:
        raise CxrError("--jobs must be a number of workers (1, 2, ...) or -1 for all cores")
    if not 0 < operating_point < 1:
        raise CxrError("--operating-point must be between 0 and 1, e.g. 0.95")
    try:
        chosen = overall_metric(metric)
    except ValueError as exc:
        raise CxrError(f"--metric: {exc}") from None
    conditions = tuple(
        c if isinstance(c, Condition) else Condition.parse(c, "--test-where") for c in test_where
    )
    if plots is not None:
        try:
            plots.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CxrError(f"--plots {plots}: cannot write plots there ({exc.strerror})") from None
    paths = [store_path(features_dir, b) for b in dict.fromkeys(backbones)]
    for path in paths:
        if not path.is_file():
            raise CxrError(
                f"{path}: no feature store for backbone {path.stem!r} (run `cxr features`)"
            )
    paths = paths or find_stores(features_dir)
    if not paths:
        raise CxrError(f"{features_dir}: no feature stores (run `cxr features` first)")
    results: list[Result] = []
    scored: list[tuple[str, Scored]] = []  # (comparison group, predictions) per result
    stores: dict[str, dict] = {}
    found: list[Confound] = []
    notes = [
        f"--set/--config for head {h!r} ignored: it is not among the selected heads"
        for h in params
        if h not in names
    ]
    splits_cache: dict = {}  # stores of one data set share their folds
    for path in paths:
        fs = load(path)
        plan = design(
            fs,
            task,
            group_by=group_by,
            leave_out=leave_out,
            test_where=conditions,
            folds=folds,
            repeats=repeats,
            seed=seed,
            splits_cache=splits_cache,
        )
        data = plan.data
        notes.extend(n for n in plan.notes if n not in notes)
        stores[fs.backbone] = {"path": str(path), "rows_sha256": data.rows_sha256(), **fs.attrs}
        if not found and confound_columns != ():
            found = _confounds(data, task.target, confound_columns, seed)
        fits = len(names) * len(plan.splits)
        with steps.step(
            f"{fs.backbone}: {len(names)} head(s) x {len(plan.splits)} fits", fits
        ) as done:
            oofs = run_splits(
                data,
                plan.splits,
                {h: params.get(h, {}) for h in names},
                groups=plan.inner_groups,
                seed=seed,
                search=search,
                jobs=jobs,
                advance=done,
            )
        scoring = f"{fs.backbone}: bootstrap CIs ({n_boot} replicates)"
        with steps.step(scoring, len(oofs) * len(plan.parts)) as scored_one:
            for head, oof in oofs.items():
                notes.extend(oof.warnings)
                if search:
                    edges = grid_edges(head, search_grid(head, params.get(head)), oof.best_params)
                    notes.extend(f"{fs.backbone}: {e}" for e in edges if e not in notes)
                for part in plan.parts:
                    mine = oof.only(part.folds)
                    entry = _entry(
                        fs.backbone, head, data, task, plan.protocol, mine, params, search
                    )
                    entry["validation"] = part.validation
                    entry.update(_scores(data, mine, n_boot, seed, operating_point))
                    if predictions:
                        entry["predictions"] = _predictions(data, mine)
                    results.append(entry)
                    value = entry["metrics"][chosen.name]["pooled"]
                    units = data.groups[mine.row] if data.has_groups else data.paths[mine.row]
                    keys = row_keys(data.paths[mine.row])
                    name = f"{fs.backbone} + {head}"
                    group = str(part.validation.get("held_out", part.validation["kind"]))
                    scored.append((group, Scored(name, keys, mine.y, mine.proba, units, value)))
                    if plots is not None:
                        from cxr.classify.report import write_plots  # lazy: matplotlib

                        entry["plots"] = write_plots(entry, mine.y, mine.proba, plots)
                    scored_one(1)
    groups = list(dict.fromkeys(g for g, _ in scored))
    with steps.step("paired comparisons with the best", len(groups)) as compared:
        for group in groups:
            members = [i for i, (g, _) in enumerate(scored) if g == group]
            comparisons = compare(
                [scored[i][1] for i in members],
                chosen,
                unit=results[members[0]]["bootstrap_unit"],
                n_boot=n_boot,
                seed=seed,
                operating_point=operating_point,
            )
            for i, comparison in zip(members, comparisons, strict=True):
                results[i]["comparison"] = comparison
            compared(1)
    report = jsonable(
        EvaluateReport(
            results=results,
            confounds=found,
            warnings=notes,
            settings={"metric": chosen.name, "operating_point": operating_point},
            provenance=Provenance(
                versions=library_versions(),
                stores=stores,
                seed=seed,
                bootstrap={"replicates": n_boot, "seed": seed, "percentiles": [2.5, 97.5]},
                disclaimer=DISCLAIMER,
            ),
        )
    )
    if plots is not None:
        from cxr.classify.report import write_forest_plots

        report["plots"] = write_forest_plots(report, plots)
    return report


def _confounds(
    data: TaskData, target: str, columns: Sequence[str] | None, seed: int
) -> list[Confound]:
    found = confounds(data, target, seed)
    if columns is None:
        return found
    missing = [c for c in columns if c not in data.columns]
    if missing:
        raise CxrError(
            f"{data.source}: --confounds: no column {', '.join(missing)}; "
            f"available: {', '.join(data.columns)}"
        )
    return [c for c in found if c["column"] in columns]


def grid_edges(head: str, grid: Mapping[str, list], chosen: Sequence[dict]) -> list[str]:
    """--search choices stuck at the edge of a numeric grid in most folds: the best value may
    lie beyond the grid, and only a wider grid can tell."""
    found = []
    for key, values in grid.items():
        name = key.rsplit("__", 1)[-1]
        numeric = sorted(
            {v for v in values if isinstance(v, int | float) and not isinstance(v, bool)}
        )
        if len(numeric) < 3 or not chosen:
            continue
        for edge, word in ((numeric[0], "smallest"), (numeric[-1], "largest")):
            hits = sum(best.get(name) == edge for best in chosen)
            if hits > len(chosen) / 2:
                wider = [edge / 10, edge] if word == "smallest" else [edge, edge * 10]
                suggestion = ",".join(f"{v:g}" for v in sorted({*numeric, *wider}))
                found.append(
                    f"--search: {head} {name}={edge:g} is the {word} value of its grid in {hits} "
                    f"of {len(chosen)} folds; the best may lie beyond it: widen the grid, e.g. "
                    f"--set {head}.{name}={suggestion}"
                )
    return found


def task_name(classes: Sequence[str], spec: TaskSpec) -> str:
    """Short human name, e.g. ``covid vs non-covid`` or ``bacterial / covid / normal``."""
    name = " vs ".join(reversed(classes)) if spec.binary else " / ".join(classes)
    where = "; ".join(map(str, spec.where))
    return f"{name} ({where})" if where else name


def _entry(
    backbone: str,
    head: str,
    data: TaskData,
    spec: TaskSpec,
    cv: dict,
    oof: OutOfFold,
    params: Mapping[str, Params],
    search: bool,
) -> Result:
    chosen = params.get(head, {})
    return Result(
        backbone=backbone,
        head=head,
        params=effective_params(head, chosen),
        search={
            "grid": search_grid(head, chosen),
            "inner_folds": INNER_FOLDS,
            "scoring": "balanced_accuracy",
            "best_params": oof.best_params,
        }
        if search
        else None,
        task={"name": task_name(data.classes, spec), **spec.to_dict()},
        cv=cv,
        n=len(np.unique(oof.row)),
        n_patients=len(np.unique(data.groups[oof.row])) if data.has_groups else None,
        classes=list(data.classes),
        class_counts={
            c: int(n)
            for c, n in zip(
                data.classes,
                np.bincount(data.y[np.unique(oof.row)], minlength=len(data.classes)),
                strict=True,
            )
        },
    )


def _predictions(data: TaskData, oof: OutOfFold) -> Predictions:
    return Predictions(
        id=data.ids[oof.row].tolist(),
        path=data.paths[oof.row].tolist(),
        group=data.groups[oof.row].tolist() if data.has_groups else data.paths[oof.row].tolist(),
        label=[data.classes[i] for i in oof.y],
        split=oof.fold.tolist(),
        proba={c: oof.proba[:, i].tolist() for i, c in enumerate(data.classes)},
    )


def _scores(data: TaskData, oof: OutOfFold, n_boot: int, seed: int, operating_point: float) -> dict:
    # Bootstrap over patients whenever ids are known (even with --group-by none): the patient is
    # the independent unit; otherwise over images.
    units = data.groups[oof.row] if data.has_groups else oof.row
    scores = summarize(
        oof.y,
        oof.proba,
        oof.fold,
        units,
        data.classes,
        n_boot=n_boot,
        seed=seed,
        operating_point=operating_point,
    )
    scores["bootstrap_unit"] = data.group_unit if data.has_groups else "image"
    return scores
