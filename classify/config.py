"""One evaluation's configuration, checked once: `EvaluateConfig`.

The CLI builds it from its options, the Python API from Python values; nothing below re-parses
or re-checks. Construction fails with a one-line CxrError for any setting that cannot work,
before a store is opened or a worker started; what needs the stores (columns, values, fold
counts) is checked by `cxr.classify.evaluate` before any fit.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from cxr.classify.curves import Size, parse_sizes
from cxr.classify.designs import CrossValidation, Design, choose
from cxr.classify.heads import HEADS, Params, grids, parse_params, validate_params
from cxr.classify.metric_table import Metric, overall_metric
from cxr.classify.metrics import Bootstrap
from cxr.classify.settings import EVALUATE, default, flag
from cxr.classify.tasks import TaskSpec
from cxr.errors import CxrError
from cxr.settings import listed, unknown

MAX_DRAWS = 100
# The settings that make a record of the configuration; every other setting is its field.
TASK = ("classes", "merge", "binary", "where", "exclude", "target")
DESIGN = ("folds", "repeats", "group_by", "leave_out", "test_where")
JOBS_PER_CORE = 4  # more parallel fits than this per core only adds waiting


def max_jobs() -> int:
    return JOBS_PER_CORE * (os.cpu_count() or 1)


def check_jobs(jobs: int) -> None:
    """--jobs: a number of workers this machine can use, or -1 (-2, ...) for all cores (but
    one, ...); checked before any worker starts."""
    if jobs == 0 or not -(os.cpu_count() or 1) <= jobs <= max_jobs():
        raise CxrError(
            f"`jobs` {jobs}: give a number of workers, 1..{max_jobs()} here "
            f"({JOBS_PER_CORE} per core), or -1 for all cores"
        )


@dataclass(frozen=True)
class EvaluateConfig:
    """What `cxr evaluate` does: stores x heads on one task, validated by one design.

    ``backbones``/``heads`` empty mean every store / every head. ``params`` maps a head to its
    parameters (a list where one value belongs is a grid for ``search``). ``confounds``: None
    checks every metadata column, () none. ``bootstrap`` defaults to 1,000 replicates seeded
    with ``seed``. ``train_sizes`` (``[25, 50, "all"]`` or `Size` values) adds learning curves,
    ``covariates`` (stored columns) results on embeddings + covariates, ``covariates_only`` the
    covariates alone. ``scheduler`` (a Dask address or ``local:N``) runs the fits on Dask; then
    ``jobs`` is the cluster's. ``cache`` reuses out-of-fold predictions kept in
    ``features/.fits/`` by earlier runs (`cxr.classify.fitcache`); False fits everything.
    """

    backbones: tuple[str, ...] = ()
    heads: tuple[str, ...] = ()
    task: TaskSpec = field(default_factory=TaskSpec)
    params: Mapping[str, Params] = field(default_factory=dict)
    design: Design = field(default_factory=CrossValidation)
    search: bool = default("search")
    metric: str = default("metric")
    seed: int = default("seed")
    bootstrap: Bootstrap | None = None
    confounds: tuple[str, ...] | None = None
    predictions: bool = default("predictions")
    train_sizes: tuple[Size, ...] = ()
    curve_draws: int = default("curve_draws")
    curve_margin: float = default("curve_margin")
    covariates: tuple[str, ...] = ()
    covariates_only: bool = default("covariates_only")
    jobs: int = default("jobs")
    scheduler: str | None = default("scheduler")
    cache: bool = default("cache")

    @classmethod
    def of(
        cls, settings: Mapping[str, Any], design: Design | None = None, caller: str = "evaluate"
    ) -> EvaluateConfig:
        """The configuration from settings by name (`cxr.classify.settings`; the others at
        their defaults): Python values, or the CLI's text where it has its own syntax (``a,b``
        for a list, ``--set`` assignments for ``params``, ``auto``/``none`` for ``confounds``).
        The one place the CLI and the API build it, so a setting that is a field of this class
        reaches it from both without a line of its own. ``design`` replaces the one the
        design settings ask for."""
        unknown(EVALUATE, settings, caller)
        value = {name: entry.default for name, entry in EVALUATE.items()} | dict(settings)
        params = value["params"] or {}
        confounds = value["confounds"]
        if confounds in ("auto", "none"):
            confounds = None if confounds == "auto" else ()
        records: dict[str, Any] = {
            "backbones": listed(value["backbones"], "backbones"),
            "heads": listed(value["heads"], "heads"),
            "task": TaskSpec.from_options(**{name: value[name] for name in TASK}),
            "design": design or choose(**{name: value[name] for name in DESIGN}),
            "params": {h: dict(p) for h, p in params.items()}
            if isinstance(params, Mapping)
            else parse_params(listed(params, "params")),
            "bootstrap": Bootstrap(value["bootstrap"], value["seed"], value["operating_point"]),
            "confounds": None if confounds is None else listed(confounds, "confounds"),
            "train_sizes": listed(value["train_sizes"], "train_sizes"),
            "covariates": listed(value["covariates"], "covariates"),
        }
        plain = {f.name for f in fields(cls)} & set(EVALUATE) - set(records)
        return cls(**records, **{name: value[name] for name in plain})

    def __post_init__(self) -> None:
        if not isinstance(self.task, TaskSpec):
            raise CxrError(f"task must be a TaskSpec, not {type(self.task).__name__}")
        if not isinstance(self.design, Design):
            raise CxrError(f"design must be a validation design, not {type(self.design).__name__}")
        heads = tuple(dict.fromkeys(self.heads)) or tuple(HEADS)
        params = {head: validate_params(head, dict(values)) for head, values in self.params.items()}
        for head in heads:
            if head not in HEADS:
                raise CxrError(f"unknown head {head!r}; available: {', '.join(HEADS)}")
            grid = grids(params.get(head))
            if grid and not self.search:
                key, values = next(iter(grid.items()))
                raise CxrError(
                    f"`params` {head}.{key} lists {len(values)} values: add `search` to tune over "
                    "them, or give one value"
                )
        if self.seed < 0 or self.seed >= 2**32:
            raise CxrError("`seed` must be 0..2**32-1")
        try:
            overall_metric(self.metric)
        except ValueError as exc:
            raise CxrError(f"`metric`: {exc}") from None
        check_jobs(self.jobs)
        if not isinstance(self.cache, bool):
            raise CxrError(f"cache must be True or False, not {self.cache!r}")
        if not 1 <= self.curve_draws <= MAX_DRAWS:
            raise CxrError(f"`curve_draws` must be 1..{MAX_DRAWS}")
        if self.curve_margin < 0:
            raise CxrError("`curve_margin` must be >= 0")
        covariates = tuple(dict.fromkeys(c.strip() for c in self.covariates if c.strip()))
        if self.covariates_only and not covariates:
            raise CxrError("`covariates_only`: name the columns with `covariates`, e.g. view,age")
        if self.scheduler is not None:
            from cxr.cluster import local_workers  # Dask itself is imported only to connect

            local_workers(self.scheduler)
        sizes = tuple(parse_sizes(list(self.train_sizes))) if self.train_sizes else ()  # sorted
        _set(self, "backbones", tuple(dict.fromkeys(self.backbones)))
        _set(self, "heads", heads)
        _set(self, "params", params)
        _set(self, "bootstrap", self.bootstrap or Bootstrap(seed=self.seed))
        _set(self, "confounds", None if self.confounds is None else tuple(self.confounds))
        _set(self, "train_sizes", sizes)
        _set(self, "covariates", covariates)

    @property
    def scoring(self) -> Bootstrap:
        """The bootstrap settings (never None after construction)."""
        assert self.bootstrap is not None
        return self.bootstrap

    @property
    def chosen_metric(self) -> Metric:
        """The metric that picks the best result and is compared."""
        return overall_metric(self.metric)

    @property
    def workers(self) -> int:
        """joblib's n_jobs: every thread of the cluster's workers with a scheduler."""
        return -1 if self.scheduler is not None else self.jobs

    @property
    def notes(self) -> list[str]:
        """Settings that are valid but do nothing, said in the report."""
        return [
            f"{flag('params')}/{flag('config')} for head {h!r} ignored: it is not among the "
            "selected heads"
            for h in self.params
            if h not in self.heads
        ]

    def head_params(self, head: str) -> Params:
        return dict(self.params.get(head, {}))


def _set(config: EvaluateConfig, name: str, value: Any) -> None:
    """Store the checked, normalised form of a field (the dataclass is frozen)."""
    object.__setattr__(config, name, value)
