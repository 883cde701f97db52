"""`cxr evaluate`: every (backbone, head) cross-validated on one task, as one report.

The report's shape is defined here, once (``EvaluateReport`` and ``Result``); the JSON is exactly
these dicts, and the terminal report, the plots and the study read them by key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypedDict

import numpy as np

from cxr.classify.cv import INNER_FOLDS, OutOfFold, plan_cv, run_folds
from cxr.classify.heads import HEADS, Params, effective_params, get_head, search_grid
from cxr.classify.metrics import summarize
from cxr.classify.provenance import DISCLAIMER, jsonable, library_versions
from cxr.classify.tasks import TaskData, TaskSpec, select
from cxr.errors import CxrError
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
    plots: list[str]  # with --plots


class Provenance(TypedDict):
    versions: dict[str, str]
    stores: dict[str, dict]  # backbone -> path, rows_sha256 and every store attribute
    seed: int
    bootstrap: dict  # replicates, seed, percentiles
    disclaimer: str


class EvaluateReport(TypedDict):
    results: list[Result]
    warnings: list[str]
    provenance: Provenance


def evaluate(
    features_dir: Path = Path("features"),
    backbones: Sequence[str] = (),
    heads: Sequence[str] = (),
    task: TaskSpec | None = None,
    params: Mapping[str, Params] | None = None,
    *,
    group_by: str = "auto",
    folds: int = 10,
    repeats: int = 1,
    seed: int = 0,
    jobs: int = 1,
    search: bool = False,
    n_boot: int = 1000,
    plots: Path | None = None,
) -> EvaluateReport:
    """Cross-validate heads on the stores' embeddings; ``{"results", "warnings", "provenance"}``.

    The result is deterministic for given inputs and seed (no timings, no job count), so two runs
    can be compared byte for byte. With ``plots``, writes a confusion-matrix and a ROC PNG per
    configuration there.
    """
    task = task or TaskSpec()
    params = params or {}
    names = list(dict.fromkeys(heads)) or list(HEADS)
    for name in names:
        get_head(name)
    if n_boot < 1:
        raise CxrError("--bootstrap must be >= 1")
    if jobs == 0:
        raise CxrError("--jobs must be a number of workers (1, 2, ...) or -1 for all cores")
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
    stores: dict[str, dict] = {}
    notes = [
        f"--set/--config for head {h!r} ignored: it is not among the selected heads"
        for h in params
        if h not in names
    ]
    for path in paths:
        fs = load(path)
        data = select(fs, task)
        plan, plan_notes = plan_cv(data, group_by, folds, repeats, seed)
        notes.extend(plan_notes)
        stores[fs.backbone] = {"path": str(path), "rows_sha256": data.rows_sha256(), **fs.attrs}
        oofs = run_folds(
            data, plan, {h: params.get(h, {}) for h in names}, search=search, jobs=jobs
        )
        for head, oof in oofs.items():
            entry = _entry(fs.backbone, head, data, task, plan.to_dict(), oof, params, search)
            entry.update(_scores(data, oof, n_boot, seed))
            if plots is not None:
                from cxr.classify.report import write_plots  # lazy: matplotlib

                entry["plots"] = write_plots(entry, oof.y, oof.proba, plots)
            notes.extend(oof.warnings)
            results.append(entry)
    return jsonable(
        EvaluateReport(
            results=results,
            warnings=notes,
            provenance=Provenance(
                versions=library_versions(),
                stores=stores,
                seed=seed,
                bootstrap={"replicates": n_boot, "seed": seed, "percentiles": [2.5, 97.5]},
                disclaimer=DISCLAIMER,
            ),
        )
    )


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
        n=len(data.y),
        n_patients=len(np.unique(data.groups)) if data.has_groups else None,
        classes=list(data.classes),
        class_counts=data.class_counts,
    )


def _scores(data: TaskData, oof: OutOfFold, n_boot: int, seed: int) -> dict:
    # Bootstrap over patients whenever ids are known (even with --group-by none): the patient is
    # the independent unit; otherwise over images.
    units = data.groups[oof.row] if data.has_groups else oof.row
    scores = summarize(oof.y, oof.proba, oof.fold, units, data.classes, n_boot=n_boot, seed=seed)
    scores["bootstrap_unit"] = data.group_unit if data.has_groups else "image"
    return scores
