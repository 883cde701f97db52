"""The result contract of `cxr evaluate`: what a report holds, and how results and tasks are named.

The JSON `--json` writes is exactly these dicts; the terminal report, the plots, the Python API
and the study read them by key, never by position. `Evaluated` carries, beside the report, the
out-of-fold arrays each result was scored on, so that plots are drawn after the evaluation
without putting the predictions into the JSON.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from cxr.classify.compare import Comparison
from cxr.classify.confounds import Confound
from cxr.classify.curves import Curve
from cxr.classify.neighbours import Neighbourhood, Sample
from cxr.classify.records import Inputs

if TYPE_CHECKING:
    from cxr.classify.tasks import TaskSpec
    from cxr.reporting.figures import Figures


class Predictions(TypedDict):
    """Out-of-fold predictions of one result, column-wise (one entry per test row and repeat)."""

    id: list[str]  # image sha256
    path: list[str]
    group: list[str]  # the bootstrap unit (patient id) of the row
    label: list[str]  # true class of the task
    split: list[int]  # the split that tested the row (CV: repeat * folds + fold)
    proba: dict[str, list[float]]  # class -> probability


class Result(TypedDict, total=False):
    """One (backbone, head) on the task."""

    backbone: str
    head: str
    params: dict  # the classifier's effective parameters
    search: dict | None  # grid, inner_folds, scoring, best_params per fold (with --search)
    task: dict  # name and TaskSpec.to_dict()
    cv: dict  # `records.Protocol`'s JSON: the design's scheme and its settings
    n: int
    n_patients: int | None
    classes: list[str]
    class_counts: dict[str, int]
    metrics: dict  # overall metric name -> Stat, and "per_class": {class: {name: Stat}}
    confusion_matrix: list[list[int]]  # summed over folds (rows: true, columns: predicted)
    bootstrap_unit: str  # patient, image, or duplicate groups
    validation: dict  # `records.Validation`'s JSON: the design's kind and its part's details
    comparison: Comparison  # against the best result of its group (paired bootstrap)
    plots: list[str]  # with --plots
    predictions: Predictions  # with --predictions: every out-of-fold prediction
    inputs: str  # `records.Inputs` as text: embeddings; embeddings + age, sex; age, sex alone
    covariate_gain: dict  # with --covariates: this result minus the embeddings alone (paired)
    region_gain: dict  # on a store of masked films: this result minus the whole films (paired)


class Provenance(TypedDict):
    versions: dict[str, str]
    stores: dict[str, dict]  # backbone -> path, rows_sha256 and every store attribute
    seed: int
    bootstrap: dict  # replicates, seed, percentiles
    disclaimer: str


class Settings(TypedDict):
    metric: str  # picks the best result, is compared and plotted
    operating_point: float  # of the fixed-specificity (sensitivity) metrics


class EvaluateReport(TypedDict, total=False):
    results: list[Result]
    confounds: list[Confound]  # metadata columns that predict the target, strongest first
    neighbourhoods: list[Neighbourhood]  # per store: its films' nearest neighbours' shares
    warnings: list[str]
    settings: Settings
    provenance: Provenance
    plots: list[str]  # with --plots: the forest plot (and learning curves) of each task
    figures: Figures  # with --plots: every file written there (the report and tracking use it)
    learning_curves: list[Curve]  # with --train-sizes


@dataclass(frozen=True)
class Outcome:
    """The test rows one result was scored on: true classes and predicted probabilities, and
    which films they are (stored paths, and their source) for the galleries; ``groups``, the
    bootstrap unit of each row, lets a tracked run be compared paired with a later one;
    ``columns``, every stored column of the rows (source, view, ...), goes beside the API's
    predictions."""

    y: np.ndarray
    proba: np.ndarray
    paths: np.ndarray | None = None
    sources: np.ndarray | None = None
    groups: np.ndarray | None = None
    columns: Mapping[str, np.ndarray] | None = None  # the store's columns of these rows


@dataclass(frozen=True)
class Evaluated:
    """What `evaluate` returns: the report (the JSON) and, aligned with ``report["results"]``,
    each result's out-of-fold arrays (for plots; the JSON holds them only with --predictions);
    aligned with ``report["neighbourhoods"]``, the films each store's embedding map draws."""

    report: EvaluateReport
    outcomes: tuple[Outcome, ...]
    samples: tuple[Sample, ...] = ()  # each store's films asked for neighbours: the maps


def result_name(result: Mapping[str, Any]) -> str:
    """``mobilenet_v2 + mlp``, ``mobilenet_v2 & age, sex + mlp``, or ``age, sex alone + mlp``."""
    inputs = Inputs.of(result)
    if inputs.alone:
        return f"{result['backbone']} + {result['head']}"
    if inputs.embeddings:
        return f"{result['backbone']} & {inputs.covariates} + {result['head']}"
    return f"{inputs} + {result['head']}"


def task_name(classes: Sequence[str], spec: TaskSpec) -> str:
    """Short human name, e.g. ``covid vs non-covid`` or ``bacterial / covid / normal``."""
    name = " vs ".join(reversed(classes)) if spec.binary else " / ".join(classes)
    where = "; ".join(map(str, spec.where))
    return f"{name} ({where})" if where else name
