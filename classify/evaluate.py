"""`cxr evaluate`: every (backbone, head) validated on one task, as one report.

``evaluate(features, config)`` runs in two phases. First every store's rows (not its
embeddings) are checked against the configuration: the task, the design's splits, the confound
and covariate columns, the room --search needs; any impossible request is a CxrError before a
worker starts. Then each store's embeddings are loaded in turn and every head is fitted on every
split, scored with bootstrap intervals and compared with the best of its group. The report's
shape is `cxr.classify.results`; plots are drawn from the returned `Evaluated` afterwards
(`cxr.classify.plots`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cxr.classify import compare as comparing
from cxr.classify import confounds as confounding
from cxr.classify import neighbours as neighbouring
from cxr.classify.compare import Scored, caution, compare, paired_difference, row_keys
from cxr.classify.config import EvaluateConfig
from cxr.classify.confounds import Confound, confounds, strongest
from cxr.classify.confounds import warnings as confound_warnings
from cxr.classify.covariates import Covariates, with_covariates
from cxr.classify.curves import Curve, curve, curve_splits
from cxr.classify.designs import Part, Plan
from cxr.classify.fitcache import FOLDER, FitCache, content_key, remember, scores_key
from cxr.classify.fitting import INNER_FOLDS, cache_keys, check_inner, run_splits
from cxr.classify.heads import effective_params, needs_inner_cv, search_grid
from cxr.classify.metrics import summarize
from cxr.classify.neighbours import Neighbourhood, Sample, neighbourhood
from cxr.classify.neighbours import sample as neighbours_sample
from cxr.classify.predictions import OutOfFold
from cxr.classify.presentation import presentation_of
from cxr.classify.provenance import DISCLAIMER, jsonable, library_versions
from cxr.classify.records import Inputs, Protocol, Validation
from cxr.classify.results import (
    Evaluated,
    EvaluateReport,
    Outcome,
    Predictions,
    Provenance,
    Result,
    Settings,
    result_name,
    task_name,
)
from cxr.classify.settings import flag
from cxr.classify.tasks import TaskData
from cxr.classify.workers import pool, start_workers
from cxr.cluster import on_cluster
from cxr.errors import CxrError
from cxr.progress import Progress, Silent
from cxr.store import find_stores, load
from cxr.store.schema import store_path


def evaluate(
    features: Path | str, config: EvaluateConfig, *, progress: Progress | None = None
) -> Evaluated:
    """Validate ``config.heads`` on the embeddings of the stores in ``features``.

    Deterministic for given inputs and seed (no timings, no job count in the report), so two
    runs can be compared byte for byte; ``progress`` receives the stages (fits, bootstrap,
    comparisons).
    """
    paths = _stores(Path(features), config.backbones)
    cache: dict = {}  # stores of one data set share their folds
    for path in paths:
        _check(path, config, cache)
    fits = FitCache(Path(features) / FOLDER) if config.cache else None
    run = _Run(config, progress or Silent(), notes=config.notes, fits=fits)
    with on_cluster(config.scheduler):  # joblib's Dask backend for every Parallel call below
        for path in paths:
            run.store(path, first=path == paths[0], cache=cache)
        run.compare()
        if config.covariates:
            run.covariate_gains()
        run.region_gains()
    return run.evaluated()


def _stores(features: Path, backbones: Sequence[str]) -> list[Path]:
    paths = [store_path(features, b) for b in backbones]
    for path in paths:
        if not path.is_file():
            here = ", ".join(p.stem for p in find_stores(features)) or "none"
            raise CxrError(
                f"{path}: no feature store for backbone {path.stem!r} (stores here: {here}; "
                "`cxr features -b NAME` builds one, `cxr backbones` lists the names)"
            )
    paths = paths or find_stores(features)
    if not paths:
        raise CxrError(f"{features}: no feature stores (run `cxr features` first)")
    return paths


def _check(path: Path, config: EvaluateConfig, cache: dict) -> None:
    """Everything the configuration asks of one store, on its rows only."""
    plan = config.design.plan(
        load(path, embeddings=False), config.task, seed=config.seed, cache=cache
    )
    data = plan.data
    if config.confounds:
        missing = [c for c in config.confounds if c not in data.columns]
        if missing:
            raise CxrError(
                f"{data.source}: `confounds`: no column {', '.join(missing)}; "
                f"available: {', '.join(data.columns)}"
            )
    if config.covariates:
        with_covariates(data, config.covariates, config.task.target)
    if needs_inner_cv(config.heads, config.search):
        check_inner(data, plan.inner_groups, plan.splits)


@dataclass
class _Run:
    """One evaluation's settings and what it has produced so far, so that each (store, inputs)
    variant is added by one call."""

    config: EvaluateConfig
    steps: Progress
    notes: list[str]
    fits: FitCache | None = None  # out-of-fold predictions kept between runs (None: --no-cache)
    results: list[Result] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    scored: list[tuple[str, Scored]] = field(default_factory=list)  # (comparison group, ...)
    curves: list[Curve] = field(default_factory=list)
    stores: dict[str, dict] = field(default_factory=dict)
    confounds: list[Confound] = field(default_factory=list)
    column: str | None = None  # the strongest confound: the map's and the neighbours' column
    neighbourhoods: list[Neighbourhood] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)

    def store(self, path: Path, *, first: bool, cache: dict) -> None:
        """Every head on one store: the embeddings, then with covariates if asked."""
        config = self.config
        fs = load(path)
        plan = config.design.plan(fs, config.task, seed=config.seed, cache=cache)
        data = plan.data
        self._warn(plan.notes)
        if config.task.exclude is not None:
            self.notes.append(
                f"{path}: {flag('exclude')} {config.task.exclude}: {data.excluded} image(s) "
                f"dropped, {data.regrouped} kept in one group with their copies"
            )
        self.stores[fs.name] = {
            "path": str(path),
            "rows_sha256": data.rows_sha256(),
            **fs.attrs,
        }
        if first and config.scheduler is None and self._fits_ahead(plan):
            start_workers(config.jobs, config.heads)  # importing while this process checks
        if not self.confounds and config.confounds != ():
            wanted = config.confounds
            whole = {**fs.rows.columns, **fs.meta.columns}  # finer labels: on every stored row
            target, seed = config.task.target, config.seed
            key = content_key(
                "confounds",
                confounding.CACHE_VERSION,
                dict(data.columns),
                data.y,
                list(data.classes),
                data.patients,
                target,
                seed,
                whole,
                None if wanted is None else list(wanted),
            )
            found = remember(
                self.fits,
                key,
                lambda: confounds(data, target, seed, store=whole, asked=wanted),
            )
            self.confounds = [c for c in found if wanted is None or c["column"] in wanted]
        if first:
            self.column = strongest(self.confounds, data.columns)
        self.neighbours(fs.name, data)
        variants: list[tuple[Inputs, TaskData, Covariates | None]] = [(Inputs(), data, None)]
        if config.covariates:
            target = config.task.target
            with_data, layout = with_covariates(data, config.covariates, target)
            variants.append((Inputs(True, layout.label), with_data, layout))
            if config.covariates_only and first:  # the same for every store: fit once
                only_data, only = with_covariates(data, config.covariates, target, embeddings=False)
                variants.append((Inputs(False, only.label), only_data, only))
        for inputs, variant, columns in variants:
            self.variant(fs.name, plan, variant, inputs, columns)

    def _fits_ahead(self, plan: Plan) -> bool:
        """Whether a head will be fitted on this store's embeddings (no cache, or a head not in
        it): only then are worker processes worth starting early."""
        if self.fits is None:
            return True
        heads = {h: self.config.head_params(h) for h in self.config.heads}
        keys = cache_keys(
            plan.data,
            plan.splits,
            heads,
            groups=plan.inner_groups,
            seed=self.config.seed,
            search=self.config.search,
        )
        return not all(self.fits.has(key) for key in keys.values())

    def neighbours(self, name: str, data: TaskData) -> None:
        """The store's neighbourhood shares (JSON) and the films they asked (for the map); the
        shares from the cache when these rows, embeddings and settings were searched before."""
        units, unit = (data.groups, data.group_unit) if data.has_groups else (data.ids, "image")
        values = data.columns.get(self.column) if self.column else None
        column = self.column if values is not None else None
        seed, replicates = self.config.seed, self.config.scoring.replicates
        rows = data.rows_sha256()
        key = content_key(
            "neighbourhood",
            neighbouring.CACHE_VERSION,
            name,
            data.X,
            data.y,
            list(data.classes),
            units,
            column,
            values,
            unit,
            seed,
            replicates,
            rows,
        )
        found: Neighbourhood | None = self.fits.get_json(key) if self.fits else None
        if found is None:
            found, sample = neighbourhood(
                name,
                data.X,
                data.y,
                data.classes,
                units,
                column,
                values,
                unit=unit,
                seed=seed,
                replicates=replicates,
                rows_sha256=rows,
            )
            if self.fits:
                self.fits.put_json(key, found)
        else:
            sample = neighbours_sample(
                name, data.X, data.y, data.classes, column, values, seed=seed
            )
        self.neighbourhoods.append(found)
        self.samples.append(sample)

    def variant(
        self, backbone: str, plan: Plan, data: TaskData, inputs: Inputs, layout: Covariates | None
    ) -> None:
        """Fit, score and record every head on one store with one choice of inputs."""
        config = self.config
        shown = backbone if layout is None else f"{backbone}, {inputs}"
        oofs = self._fit(
            f"{shown}: {len(config.heads)} head(s) x {len(plan.splits)} fits",
            data,
            plan.splits,
            layout,
            groups=plan.inner_groups,
            search=config.search,
        )
        for head, oof in oofs.items():
            self._warn(oof.warnings)
            if config.search:
                grid = search_grid(head, config.params.get(head))
                self._warn(f"{backbone}: {e}" for e in grid_edges(head, grid, oof.best_params))
        pending = [
            (h, part, oof.only(part.folds)) for h, oof in oofs.items() for part in plan.parts
        ]
        with self.steps.step(
            f"{shown}: bootstrap CIs ({config.scoring.replicates} replicates)", len(pending)
        ) as scored_one:
            for (head, part, mine), score in zip(pending, self._scores(data, pending), strict=True):
                self._result(backbone, head, plan, data, inputs, part, mine, score)
                scored_one(1)
        if config.train_sizes:
            self._curves(backbone, plan, data, inputs, layout)

    def _scores(self, data: TaskData, pending: list) -> Iterable:
        """Each pending result's scores: from the cache, or bootstrapped (in order)."""
        config = self.config
        inputs = [
            (
                mine.y,
                mine.proba,
                mine.fold,
                data.groups[mine.row] if data.has_groups else mine.row,
                data.classes,
                config.scoring,
            )
            for _, _, mine in pending
        ]
        keys = [
            scores_key(*a[:4], classes=list(a[4]), settings=a[5]) if self.fits else ""
            for a in inputs
        ]
        known = [self.fits.get_json(k) if self.fits else None for k in keys]
        todo = [a for a, found in zip(inputs, known, strict=True) if found is None]
        if not todo:  # every score from the cache: no pool, no joblib
            yield from known
            return
        from joblib import delayed

        # The fitting pool would idle while the main process bootstraps: it bootstraps.
        computed = pool(config.workers, return_as="generator")(delayed(summarize)(*a) for a in todo)
        for key, found in zip(keys, known, strict=True):
            if found is None:
                found = next(computed)
                if self.fits:
                    self.fits.put_json(key, found)
            yield found
        for _ in computed:  # exhausted: lets joblib close the generator without a warning
            pass

    def _fit(self, label, data, splits, layout, *, groups, search) -> dict[str, OutOfFold]:
        """Every head on every split, in one joblib pool, with a progress step."""
        heads = {h: self.config.head_params(h) for h in self.config.heads}
        with self.steps.step(label, len(heads) * len(splits)) as done:
            return run_splits(
                data,
                splits,
                heads,
                groups=groups,
                seed=self.config.seed,
                search=search,
                jobs=self.config.workers,
                advance=done,
                inputs=layout,
                cache=self.fits,
            )

    def _warn(self, messages: Iterable[str]) -> None:
        self.notes.extend(m for m in messages if m not in self.notes)

    def _result(self, backbone, head, plan, data, inputs, part: Part, mine, scores) -> None:
        entry = _entry(backbone, head, data, self.config, plan.protocol, mine)
        entry["inputs"] = str(inputs)
        entry["validation"] = part.validation.to_dict()
        entry["metrics"], entry["confusion_matrix"] = scores["metrics"], scores["confusion_matrix"]
        # Bootstrap over patients whenever ids are known (even with --group-by none): the
        # patient is the independent unit; otherwise over images.
        entry["bootstrap_unit"] = data.group_unit if data.has_groups else "image"
        if self.config.predictions:
            entry["predictions"] = _predictions(data, mine)
        self.results.append(entry)
        sources = data.columns.get("source")
        units = data.groups[mine.row] if data.has_groups else data.paths[mine.row]
        self.outcomes.append(
            Outcome(
                mine.y,
                mine.proba,
                data.paths[mine.row],
                sources[mine.row] if sources is not None else None,
                units,
                {name: values[mine.row] for name, values in data.columns.items()},
            )
        )
        value = entry["metrics"][self.config.metric]["pooled"]
        keys = row_keys(data.paths[mine.row])
        held = part.validation.held_out
        group = part.validation.kind if held is None else str(held)
        self.scored.append(
            (group, Scored(result_name(entry), keys, mine.y, mine.proba, units, value))
        )

    def _curves(self, backbone, plan: Plan, data: TaskData, inputs, layout) -> None:
        config = self.config
        groups = data.groups if data.has_groups else data.paths
        curve_plan = curve_splits(
            plan.splits, data.y, groups, config.train_sizes, config.seed, config.curve_draws
        )
        oofs = self._fit(
            f"{backbone}, {inputs}: learning curves, {len(curve_plan)} fits per head",
            data,
            [c.split for c in curve_plan],
            layout,
            groups=None,
            search=False,
        )
        for head, oof in oofs.items():
            for part in plan.parts:
                indices = [i for i, c in enumerate(curve_plan) if c.origin in part.folds]
                points, within = curve(
                    oof,
                    [curve_plan[i] for i in indices],
                    indices,
                    data.y,
                    data.classes,
                    groups,
                    config.chosen_metric,
                    config.scoring,
                    margin=config.curve_margin,
                )
                full = points[-1]["train_per_class"]
                self._warn(
                    f"{flag('train_sizes')} {point['size']}: every class has fewer training images "
                    "than that, so it is the same as 'all'"
                    for point in points[:-1]
                    if point["train_per_class"] == full
                )
                self.curves.append(
                    Curve(
                        backbone=backbone,
                        head=head,
                        inputs=str(inputs),
                        held_out=part.validation.held_out,
                        task=task_name(data.classes, config.task),
                        metric=config.metric,
                        points=points,
                        margin=config.curve_margin,
                        within_margin_from=within,
                    )
                )

    def compare(self) -> None:
        """Each result against the best of its group (a held-out value, or the design), and a
        caution for each best picked among several."""
        groups = list(dict.fromkeys(g for g, _ in self.scored))
        metric = self.config.chosen_metric
        cautions = []
        with self.steps.step("paired comparisons with the best", len(groups)) as compared:
            for group in groups:
                members = [i for i, (g, _) in enumerate(self.scored) if g == group]
                comparisons = self._compared([self.scored[i][1] for i in members], members[0])
                for i, comparison in zip(members, comparisons, strict=True):
                    self.results[i]["comparison"] = comparison
                others = [
                    (self.scored[i][1].name, c["indistinguishable"])
                    for i, c in zip(members, comparisons, strict=True)
                    if not c["is_best"]
                ]
                if others and any(c["is_best"] for c in comparisons):
                    validation = Validation.of(self.results[members[0]])
                    where = (
                        f"held out: {validation.column}={validation.held_out}"
                        if validation.held_out is not None
                        else ""
                    )
                    title = metric.title(self.config.scoring.operating_point)
                    cautions.append(caution(others, title, where))
                compared(1)
        first = self.results[0]
        held_out = presentation_of(first).held_out_column(first)
        found = confound_warnings(self.confounds, self.config.task.target, held_out)
        self.notes[:] = [*found, *self.notes, *cautions]

    def _compared(self, items: list[Scored], first: int) -> list:
        """`compare` of one group, or its result kept by an earlier run on the same results."""
        metric, scoring = self.config.chosen_metric, self.config.scoring
        unit = self.results[first]["bootstrap_unit"]
        key = content_key(
            "comparisons",
            comparing.CACHE_VERSION,
            [[i.name, i.keys, i.y, i.proba, i.units, i.value] for i in items],
            metric.name,
            repr(scoring),
            unit,
        )
        return remember(self.fits, key, lambda: compare(items, metric, scoring, unit=unit))

    def covariate_gains(self) -> None:
        """Each embeddings + covariates result against the embeddings alone, paired."""
        alone = {
            (r["backbone"], r["head"], Validation.of(r)): i
            for i, r in enumerate(self.results)
            if Inputs.of(r).alone
        }
        for i, r in enumerate(self.results):
            key = (r["backbone"], r["head"], Validation.of(r))
            inputs = Inputs.of(r)
            if inputs.alone or not inputs.embeddings or key not in alone:
                continue
            diff, ci, p, n = paired_difference(
                self.scored[i][1],
                self.scored[alone[key]][1],
                self.config.chosen_metric,
                self.config.scoring,
            )
            r["covariate_gain"] = {
                "metric": self.config.metric,
                "versus": "embeddings alone",
                "difference": diff,
                "ci95": ci,
                "p": p,
                "n_paired": n,
            }

    def region_gains(self) -> None:
        """Each result on a store of masked films against the same head on the whole films of
        its backbone (same images, same folds), paired: what the region took away."""

        def key(r: Result, store: str) -> tuple:
            return (store, r["head"], Inputs.of(r), Validation.of(r))

        whole = {}
        for i, r in enumerate(self.results):
            attrs = self.stores.get(r["backbone"], {})
            if str(attrs.get("region") or "full") == "full" and "backbone" in attrs:
                whole[key(r, str(attrs["backbone"]))] = i
        for i, r in enumerate(self.results):
            attrs = self.stores.get(r["backbone"], {})
            region = str(attrs.get("region") or "full")
            j = whole.get(key(r, str(attrs.get("backbone"))))
            if region == "full" or j is None:
                continue
            diff, ci, p, n = paired_difference(
                self.scored[i][1], self.scored[j][1], self.config.chosen_metric, self.config.scoring
            )
            r["region_gain"] = {
                "metric": self.config.metric,
                "region": region,
                "versus": result_name(self.results[j]) + " (whole films)",
                "difference": diff,
                "ci95": ci,
                "p": p,
                "n_paired": n,
            }

    def evaluated(self) -> Evaluated:
        config, scoring = self.config, self.config.scoring
        report = jsonable(
            EvaluateReport(
                results=self.results,
                confounds=self.confounds,
                neighbourhoods=self.neighbourhoods,
                warnings=self.notes,
                settings=Settings(metric=config.metric, operating_point=scoring.operating_point),
                provenance=Provenance(
                    versions=library_versions(),
                    stores=self.stores,
                    seed=config.seed,
                    bootstrap={
                        "replicates": scoring.replicates,
                        "seed": scoring.seed,
                        "percentiles": [2.5, 97.5],
                    },
                    disclaimer=DISCLAIMER,
                ),
            )
        )
        if config.train_sizes:
            report["learning_curves"] = jsonable(self.curves)
        return Evaluated(report, tuple(self.outcomes), tuple(self.samples))


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
                    f"{flag('search')}: {head} {name}={edge:g} is the {word} value of its grid in "
                    f"{hits} of {len(chosen)} folds; the best may lie beyond it: widen the grid, "
                    f"e.g. {flag('params')} {head}.{name}={suggestion}"
                )
    return found


def _entry(
    backbone: str,
    head: str,
    data: TaskData,
    config: EvaluateConfig,
    protocol: Protocol,
    oof: OutOfFold,
) -> Result:
    chosen = config.head_params(head)
    rows = np.unique(oof.row)
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
        if config.search
        else None,
        task={"name": task_name(data.classes, config.task), **config.task.to_dict()},
        cv=protocol.to_dict(),
        n=len(rows),
        n_patients=len(np.unique(data.groups[oof.row])) if data.has_groups else None,
        classes=list(data.classes),
        class_counts={
            c: int(n)
            for c, n in zip(
                data.classes, np.bincount(data.y[rows], minlength=len(data.classes)), strict=True
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
