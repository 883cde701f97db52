"""`cxr evaluate`: every (backbone, head) cross-validated on one task, as one report.

The report's shape is defined here, once (``EvaluateReport`` and ``Result``); the JSON is exactly
these dicts, and the terminal report, the plots and the study read them by key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import numpy as np
from joblib import Parallel, delayed

from cxr.classify.compare import Comparison, Scored, compare, paired_difference, row_keys
from cxr.classify.confounds import Confound, confounds
from cxr.classify.covariates import Covariates, with_covariates
from cxr.classify.curves import MARGIN, SEEDS, Curve, Size, curve, curve_splits, parse_sizes
from cxr.classify.cv import INNER_FOLDS, OutOfFold, run_splits
from cxr.classify.heads import (
    HEADS,
    Params,
    effective_params,
    get_head,
    grids,
    search_grid,
)
from cxr.classify.metrics import Metric, overall_metric, summarize
from cxr.classify.provenance import DISCLAIMER, jsonable, library_versions
from cxr.classify.tasks import Condition, TaskData, TaskSpec
from cxr.classify.validation import Design, design
from cxr.cluster import on_cluster
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
    inputs: str  # "embeddings", "embeddings + age, sex", or "age, sex alone"
    covariate_gain: dict  # with --covariates: this result minus the embeddings alone (paired)


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
    plots: list[str]  # with --plots: the forest plot (and learning curves) of each task
    learning_curves: list[Curve]  # with --train-sizes


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
    train_sizes: str | Sequence[Size | int | float | str] = (),
    curve_draws: int = SEEDS,
    curve_margin: float = MARGIN,
    covariates: str | Sequence[str] = (),
    covariates_only: bool = False,
    progress: Steps | None = None,
    scheduler: str | None = None,
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

    ``train_sizes`` (``"25,50,all"``, ``[25, 50, "all"]`` or `Size` values) adds learning
    curves: every head refitted on nested, stratified, patient-grouped subsamples of each
    training split (``curve_draws`` draws per size) and scored on the untouched test rows
    (`cxr.classify.curves`). ``covariates`` (stored columns, a list or ``"a,b"``) adds results
    on embeddings + covariates, each with its paired difference from the embeddings alone;
    ``covariates_only`` adds the covariates alone (`cxr.classify.covariates`).

    ``scheduler`` (a Dask address or ``local:N``) runs every fit and bootstrap through joblib's
    Dask backend on that cluster, ``jobs`` then ignored; the report is the same as a local run's.
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
    if scheduler is not None:
        jobs = -1  # every thread of the cluster's workers
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
            here = ", ".join(p.stem for p in find_stores(features_dir)) or "none"
            raise CxrError(
                f"{path}: no feature store for backbone {path.stem!r} (stores here: {here}; "
                "`cxr features -b NAME` builds one, `cxr backbones` lists the names)"
            )
    paths = paths or find_stores(features_dir)
    if not paths:
        raise CxrError(f"{features_dir}: no feature stores (run `cxr features` first)")
    stores: dict[str, dict] = {}
    found: list[Confound] = []
    notes = [
        f"--set/--config for head {h!r} ignored: it is not among the selected heads"
        for h in params
        if h not in names
    ]
    sizes = parse_sizes(train_sizes) if train_sizes else []
    if isinstance(covariates, str):  # the CLI's a,b,c
        covariates = [c.strip() for c in covariates.split(",") if c.strip()]
    if covariates_only and not covariates:
        raise CxrError("--covariates-only: name the columns with --covariates, e.g. view,age")
    run = _Run(
        task=task,
        heads={h: params.get(h, {}) for h in names},
        params=params,
        search=search,
        seed=seed,
        jobs=jobs,
        n_boot=n_boot,
        metric=chosen,
        operating_point=operating_point,
        predictions=predictions,
        plots=plots,
        sizes=sizes,
        curve_draws=curve_draws,
        curve_margin=curve_margin,
        steps=steps,
        notes=notes,
    )
    results, scored = run.results, run.scored
    splits_cache: dict = {}  # stores of one data set share their folds
    with on_cluster(scheduler):  # joblib's Dask backend for every Parallel call below
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
            if task.exclude is not None:
                notes.append(
                    f"{path}: --exclude {task.exclude}: {data.excluded} image(s) dropped, "
                    f"{data.regrouped} kept in one group with their copies"
                )
            stores[fs.backbone] = {"path": str(path), "rows_sha256": data.rows_sha256(), **fs.attrs}
            if not found and confound_columns != ():
                found = _confounds(data, task.target, confound_columns, seed)
            variants: list[tuple[str, TaskData, Covariates | None]] = [("embeddings", data, None)]
            if covariates:
                with_data, layout = with_covariates(data, covariates, task.target)
                variants.append((f"embeddings + {layout.label}", with_data, layout))
                if covariates_only and path == paths[0]:  # the same for every store: fit once
                    only_data, only = with_covariates(
                        data, covariates, task.target, embeddings=False
                    )
                    variants.append((f"{only.label} alone", only_data, only))
            for inputs, variant, layout in variants:
                run.variant(fs.backbone, plan, variant, inputs, layout)
        groups = list(dict.fromkeys(g for g, _ in run.scored))
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
        if covariates:
            run.covariate_gains()
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
    if sizes:
        report["learning_curves"] = jsonable(run.curves)
    if plots is not None:
        from cxr.classify.report import write_curve_plots, write_forest_plots

        report["plots"] = write_forest_plots(report, plots) + write_curve_plots(report, plots)
    return report


@dataclass
class _Run:
    """One evaluation's settings and what it has produced so far, so that each (store, inputs)
    variant is added by one call."""

    task: TaskSpec
    heads: dict[str, Params]
    params: Mapping[str, Params]
    search: bool
    seed: int
    jobs: int
    n_boot: int
    metric: Metric
    operating_point: float
    predictions: bool
    plots: Path | None
    sizes: list[Size]
    curve_draws: int
    curve_margin: float
    steps: Steps
    notes: list[str]
    results: list[Result] = field(default_factory=list)
    scored: list[tuple[str, Scored]] = field(default_factory=list)  # (comparison group, ...)
    curves: list[Curve] = field(default_factory=list)

    def variant(
        self, backbone: str, plan: Design, data: TaskData, inputs: str, layout: Covariates | None
    ) -> None:
        """Fit, score and record every head on one store with one choice of inputs."""
        shown = backbone if layout is None else f"{backbone}, {inputs}"
        splits = plan.splits
        oofs = self._fit(
            f"{shown}: {len(self.heads)} head(s) x {len(splits)} fits",
            data,
            splits,
            layout,
            groups=plan.inner_groups,
            search=self.search,
        )
        for head, oof in oofs.items():
            self._warn(oof.warnings)
            if self.search:
                grid = search_grid(head, self.params.get(head))
                self._warn(f"{backbone}: {e}" for e in grid_edges(head, grid, oof.best_params))
        pending = [
            (h, part, oof.only(part.folds)) for h, oof in oofs.items() for part in plan.parts
        ]
        with self.steps.step(
            f"{shown}: bootstrap CIs ({self.n_boot} replicates)", len(pending)
        ) as scored_one:
            # The fitting pool would idle while the main process bootstraps: it bootstraps.
            scores = Parallel(n_jobs=self.jobs, return_as="generator")(
                delayed(summarize)(
                    mine.y,
                    mine.proba,
                    mine.fold,
                    data.groups[mine.row] if data.has_groups else mine.row,
                    data.classes,
                    n_boot=self.n_boot,
                    seed=self.seed,
                    operating_point=self.operating_point,
                )
                for _, _, mine in pending
            )
            for (head, part, mine), score in zip(pending, scores, strict=True):
                self._result(backbone, head, plan, data, inputs, part, mine, score)
                scored_one(1)
        if self.sizes:
            self._curves(backbone, plan, data, inputs, layout)

    def _fit(self, label, data, splits, layout, *, groups, search) -> dict[str, OutOfFold]:
        """Every head on every split, in one joblib pool, with a progress step."""
        with self.steps.step(label, len(self.heads) * len(splits)) as done:
            return run_splits(
                data,
                splits,
                self.heads,
                groups=groups,
                seed=self.seed,
                search=search,
                jobs=self.jobs,
                advance=done,
                inputs=layout,
            )

    def _warn(self, messages) -> None:
        self.notes.extend(m for m in messages if m not in self.notes)

    def _result(self, backbone, head, plan, data, inputs, part, mine, scores) -> None:
        entry = _entry(
            backbone, head, data, self.task, plan.protocol, mine, self.params, self.search
        )
        entry["inputs"] = inputs
        entry["validation"] = part.validation
        # Bootstrap over patients whenever ids are known (even with --group-by none): the
        # patient is the independent unit; otherwise over images.
        entry.update(scores, bootstrap_unit=data.group_unit if data.has_groups else "image")
        if self.predictions:
            entry["predictions"] = _predictions(data, mine)
        self.results.append(entry)
        value = entry["metrics"][self.metric.name]["pooled"]
        units = data.groups[mine.row] if data.has_groups else data.paths[mine.row]
        keys = row_keys(data.paths[mine.row])
        group = str(part.validation.get("held_out", part.validation["kind"]))
        self.scored.append(
            (group, Scored(result_name(entry), keys, mine.y, mine.proba, units, value))
        )
        if self.plots is not None:
            from cxr.classify.report import write_plots  # lazy: matplotlib

            entry["plots"] = write_plots(entry, mine.y, mine.proba, self.plots)

    def _curves(self, backbone, plan, data, inputs, layout) -> None:
        groups = data.groups if data.has_groups else data.paths
        curve_plan = curve_splits(
            plan.splits, data.y, groups, self.sizes, self.seed, self.curve_draws
        )
        oofs = self._fit(
            f"{backbone}, {inputs}: learning curves, {len(curve_plan)} fits per head",
            data,
            [c.split for c in curve_plan],
            layout,
            groups=None,
            search=False,
        )
        units = data.groups if data.has_groups else data.paths
        for head, oof in oofs.items():
            for part in plan.parts:
                indices = [i for i, c in enumerate(curve_plan) if c.origin in part.folds]
                points, within = curve(
                    oof,
                    [curve_plan[i] for i in indices],
                    indices,
                    data.y,
                    data.classes,
                    units,
                    self.metric,
                    n_boot=self.n_boot,
                    seed=self.seed,
                    operating_point=self.operating_point,
                    margin=self.curve_margin,
                )
                full = points[-1]["train_per_class"]
                for point in points[:-1]:
                    if point["train_per_class"] == full:
                        self._warn(
                            [
                                f"--train-sizes {point['size']}: every class has fewer training "
                                "images than that, so it is the same as 'all'"
                            ]
                        )
                self.curves.append(
                    Curve(
                        backbone=backbone,
                        head=head,
                        inputs=inputs,
                        held_out=part.validation.get("held_out"),
                        task=task_name(data.classes, self.task),
                        metric=self.metric.name,
                        points=points,
                        margin=self.curve_margin,
                        within_margin_from=within,
                    )
                )

    def covariate_gains(self) -> None:
        """Each embeddings + covariates result against the embeddings alone, paired."""
        alone = {
            (r["backbone"], r["head"], str(r["validation"])): i
            for i, r in enumerate(self.results)
            if r["inputs"] == "embeddings"
        }
        for i, r in enumerate(self.results):
            key = (r["backbone"], r["head"], str(r["validation"]))
            if not r["inputs"].startswith("embeddings + ") or key not in alone:
                continue
            j = alone[key]
            diff, ci, p, n = paired_difference(
                self.scored[i][1],
                self.scored[j][1],
                self.metric,
                n_boot=self.n_boot,
                seed=self.seed,
                operating_point=self.operating_point,
            )
            r["covariate_gain"] = {
                "metric": self.metric.name,
                "versus": "embeddings alone",
                "difference": diff,
                "ci95": ci,
                "p": p,
                "n_paired": n,
            }


def result_name(result: Result) -> str:
    """``mobilenet_v2 + mlp``, ``mobilenet_v2 & age, sex + mlp``, or ``age, sex alone + mlp``."""
    inputs = result.get("inputs", "embeddings")
    if inputs == "embeddings":
        return f"{result['backbone']} + {result['head']}"
    if inputs.startswith("embeddings + "):
        return f"{result['backbone']} & {inputs.removeprefix('embeddings + ')} + {result['head']}"
    return f"{inputs} + {result['head']}"


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
