"""Cross-validation: which splitter, the folds, and out-of-fold probabilities computed in parallel.

Determinism: every fold gets its own random_state derived from (seed, repeat, fold), and runs with
BLAS/OpenMP limited to one thread, so the numbers depend on the seed only, never on ``--jobs``.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from joblib import Parallel, delayed
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, StratifiedKFold
from threadpoolctl import threadpool_limits

from cxr.classify.folds import stratified_group_folds
from cxr.classify.heads import Params, build_head, get_head, search_grid
from cxr.classify.tasks import TaskData
from cxr.errors import CxrError

if TYPE_CHECKING:
    from cxr.classify.covariates import Covariates

# --group-by: these words, or the name of any stored column (dataset, source, view, ...).
GROUP_BY = ("auto", "patient", "none")
# Inner folds of --search, and of the SVM head's probability calibration.
INNER_FOLDS = 3


@dataclass(frozen=True)
class CVPlan:
    """The cross-validation protocol of one run; recorded verbatim in the report."""

    folds: int
    repeats: int
    seed: int
    grouped: bool
    unit: str = "patient"  # what a group is: patient, or the column folds are grouped by
    groups: np.ndarray | None = None  # the group of every row when grouped

    @property
    def scheme(self) -> str:
        return "StratifiedGroupKFold" if self.grouped else "StratifiedKFold"

    def to_dict(self) -> dict:
        """The JSON form (without the groups themselves)."""
        return {
            "scheme": self.scheme,
            "folds": self.folds,
            "repeats": self.repeats,
            "seed": self.seed,
            "grouped": self.grouped,
            "unit": self.unit if self.grouped else "image",
        }


@dataclass(frozen=True)
class Split:
    repeat: int
    fold: int
    train: np.ndarray
    test: np.ndarray
    name: str = ""  # what the test rows are, when not a CV fold (a held-out value, "external")

    @property
    def label(self) -> str:
        return self.name or f"fold {self.fold + 1}"


@dataclass(frozen=True)
class OutOfFold:
    """Out-of-fold predictions of one head, pooled over all repeats (each row once per repeat)."""

    row: np.ndarray  # index into the task's rows
    y: np.ndarray
    proba: np.ndarray  # (len(row), n_classes)
    fold: np.ndarray  # index of the split that tested the row (CV: repeat * folds + fold)
    best_params: list[dict]  # per fold, with --search
    warnings: list[str]  # distinct warnings raised while fitting, with the number of folds

    def only(self, folds: Sequence[int]) -> OutOfFold:
        """The predictions of some splits only (one held-out value, say)."""
        keep = np.isin(self.fold, list(folds))
        return OutOfFold(
            self.row[keep],
            self.y[keep],
            self.proba[keep],
            self.fold[keep],
            self.best_params,
            self.warnings,
        )


def derive_seed(seed: int, *keys: int) -> int:
    """A 32-bit seed for one (repeat, fold, ...) that does not depend on execution order."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


def plan_cv(
    data: TaskData, group_by: str = "auto", folds: int = 10, repeats: int = 1, seed: int = 0
) -> tuple[CVPlan, list[str]]:
    """Choose the splitter and check that every class can fill every fold.

    ``auto`` groups by patient whenever all selected rows have a patient id; any other word than
    auto/patient/none names a column whose values group the folds (e.g. ``dataset``: no source is
    split over training and test folds). Returns the plan and warnings for the report.
    """
    if folds < 2 or repeats < 1 or seed < 0:
        raise CxrError("--folds must be >= 2, --repeats >= 1 and --seed >= 0")
    if group_by == "patient" and not data.has_groups:
        missing = int(np.sum(data.groups == ""))
        raise CxrError(
            f"{data.source}: --group-by patient, but {missing} selected row(s) have no patient id"
        )
    if group_by in GROUP_BY:
        grouped = group_by == "patient" or (group_by == "auto" and data.has_groups)
        groups, unit = data.groups, data.group_unit
    else:
        groups, unit, grouped = data.column(group_by, "--group-by"), group_by, True
        if np.any(groups == ""):
            raise CxrError(
                f"{data.source}: --group-by {group_by}: {int(np.sum(groups == ''))} selected "
                "row(s) have no value"
            )
    for index, name in enumerate(data.classes):
        members = groups[data.y == index] if grouped else np.flatnonzero(data.y == index)
        count = len(np.unique(members))
        if count < folds:
            what = (
                "patients"
                if unit.startswith("patient")
                else "images"
                if unit.startswith("image")
                else f"{unit} values"
            )
            raise CxrError(
                f"{data.source}: class {name!r} has {count} {what}, fewer than --folds {folds}"
            )
    notes = []
    if grouped and unit == data.group_unit and data.missing_ids == len(data.y):
        notes.append(
            f"{data.source}: no patient ids; folds keep only the --exclude file's duplicate groups "
            "together, so images of one patient can still be split and scores are optimistic"
        )
    elif grouped and unit == data.group_unit and data.missing_ids:
        notes.append(
            f"{data.source}: {data.missing_ids} row(s) have no patient id; each is its own group, "
            "so if some of them are one patient's images, those can be split and scores are "
            "optimistic"
        )
    elif not grouped and not data.has_groups:
        notes.append(
            f"{data.source}: no patient ids, so folds split images, not patients; if a patient "
            "has several images, these scores are optimistic"
        )
    elif not grouped:
        notes.append(
            f"{data.source}: --group-by none although patient ids exist: images of one patient "
            "can be in both training and test folds, so these scores are optimistic"
        )
    elif unit not in ("patient", data.group_unit) and data.has_groups:
        split = _groups_split_patients(groups, data.groups)
        if split:
            notes.append(
                f"{data.source}: --group-by {unit}: {split} patient(s) have images under two "
                f"{unit} values, so they can sit in training and test folds"
            )
    return CVPlan(folds, repeats, seed, grouped, unit, groups if grouped else None), notes


def _groups_split_patients(groups: np.ndarray, patients: np.ndarray) -> int:
    """How many patients have rows in more than one group."""
    pairs = {(p, g) for p, g in zip(patients.tolist(), groups.tolist(), strict=True)}
    seen: dict[str, int] = {}
    for patient, _ in pairs:
        seen[patient] = seen.get(patient, 0) + 1
    return sum(n > 1 for n in seen.values())


def _splitter(grouped: bool, folds: int, random_state: int):
    kind = StratifiedGroupKFold if grouped else StratifiedKFold
    return kind(n_splits=folds, shuffle=True, random_state=random_state)


def make_splits(plan: CVPlan, y: np.ndarray, cache: dict | None = None) -> list[Split]:
    """All (repeat, fold) train/test index pairs; with ``plan.grouped`` no group spans two sides.

    ``cache`` (a dict the caller keeps for one run) returns the same splits for stores whose
    rows, classes and groups are the same: StratifiedGroupKFold costs about a second per call
    on 2k rows, identical for every backbone of a data set.
    """
    key = None
    if cache is not None:
        digest = hashlib.sha256(np.ascontiguousarray(y).tobytes())
        if plan.groups is not None:
            digest.update("\0".join(map(str, plan.groups)).encode())
        key = (plan.folds, plan.repeats, plan.seed, plan.grouped, digest.hexdigest())
        if key in cache:
            return cache[key]
    splits = []
    for repeat in range(plan.repeats):
        seed = derive_seed(plan.seed, repeat)
        parts = (
            stratified_group_folds(y, plan.groups, plan.folds, seed)  # scikit-learn's, faster
            if plan.grouped
            else _splitter(False, plan.folds, seed).split(np.zeros(len(y)), y)
        )
        splits.extend(Split(repeat, f, train, test) for f, (train, test) in enumerate(parts))
    if cache is not None:
        cache[key] = splits
    return splits


def _check_inner(data: TaskData, groups: np.ndarray | None, splits: list[Split]) -> None:
    """--search and SVM calibration cross-validate inside each training fold; they need room."""
    for split in splits:
        y = data.y[split.train]
        for index, name in enumerate(data.classes):
            rows = split.train[y == index]
            members = groups[rows] if groups is not None else rows
            if 0 < len(np.unique(members)) < INNER_FOLDS:
                raise CxrError(
                    f"{data.source}: class {name!r} has fewer than {INNER_FOLDS} "
                    f"{'groups' if groups is not None else 'images'} in the training rows of "
                    f"{split.label}; --search and the svm head need {INNER_FOLDS} (use fewer "
                    "--folds or more data)"
                )


def _fit_fold(
    source: str,
    head: str,
    params: Params,
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray | None,
    split: Split,
    n_classes: int,
    random_state: int,
    search: bool,
    inputs: Covariates | None = None,
) -> tuple[np.ndarray, dict | None, list[str]]:
    """Fit one head on one training fold; probabilities for the test fold (all classes)."""
    with threadpool_limits(1), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        transformer = inputs.transformer() if inputs is not None else None
        estimator = build_head(head, params, random_state, transformer)
        train = split.train
        if search:
            estimator = GridSearchCV(
                estimator,
                search_grid(head, params),
                scoring="balanced_accuracy",
                cv=_splitter(groups is not None, INNER_FOLDS, random_state),
                n_jobs=1,
                error_score=np.nan,  # a candidate that cannot fit (k > rows) loses, with a warning
            )
        proba = np.zeros((len(split.test), n_classes))
        fit_groups = {"groups": groups[train]} if search and groups is not None else {}
        try:
            estimator.fit(X[train], y[train], **fit_groups)
            proba[:, estimator.classes_] = estimator.predict_proba(X[split.test])
        except ValueError as exc:  # e.g. more neighbours than training rows
            message = str(exc).splitlines()[0]
            raise CxrError(f"{source}: head {head!r} failed in {split.label}: {message}") from None
    best = {k.rsplit("__", 1)[-1]: v for k, v in estimator.best_params_.items()} if search else None
    messages = sorted({f"{w.category.__name__}: {str(w.message).splitlines()[0]}" for w in caught})
    return proba, best, messages


def run_splits(
    data: TaskData,
    splits: list[Split],
    heads: Mapping[str, Params],
    *,
    groups: np.ndarray | None,
    seed: int,
    search: bool = False,
    jobs: int = 1,
    advance: Callable[[int], None] = lambda n: None,
    inputs: Covariates | None = None,
) -> dict[str, OutOfFold]:
    """Test-row probabilities of every head on every split, all in one joblib pool.

    ``groups`` group the inner folds of --search (None: images). A row's ``fold`` in the result
    is the index of its split, so one pool serves CV folds, held-out values and external tests.
    """
    if search or "svm" in heads:
        _check_inner(data, groups, splits)
    tasks = [(head, index, split) for head in heads for index, split in enumerate(splits)]
    tasks.sort(key=lambda t: -get_head(t[0]).cost)  # slow fits first; results do not depend on it
    fits = Parallel(n_jobs=jobs, return_as="generator")(
        delayed(_fit_fold)(
            str(data.source),
            head,
            heads[head],
            data.X,
            data.y,
            groups,
            split,
            len(data.classes),
            derive_seed(seed, split.repeat, split.fold),
            search,
            inputs,
        )
        for head, _, split in tasks
    )
    outputs = []
    for output in fits:  # in task order, as each finishes
        outputs.append(output)
        advance(1)
    results = {}
    for head in heads:
        mine = [(i, s, out) for (h, i, s), out in zip(tasks, outputs, strict=True) if h == head]
        rows = np.concatenate([s.test for _, s, _ in mine])
        counts: dict[str, int] = {}
        for _, _, (_, _, messages) in mine:
            for message in messages:
                counts[message] = counts.get(message, 0) + 1
        results[head] = OutOfFold(
            row=rows,
            y=data.y[rows],
            proba=np.concatenate([proba for _, _, (proba, _, _) in mine]),
            fold=np.concatenate([np.full(len(s.test), i) for i, s, _ in mine]),
            best_params=[best for _, _, (_, best, _) in mine if best is not None],
            warnings=[f"{head}: {m} (in {n} of {len(mine)} fits)" for m, n in counts.items()],
        )
    return results
