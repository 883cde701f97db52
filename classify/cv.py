"""Cross-validation: which splitter, the folds, and out-of-fold probabilities computed in parallel.

Determinism: every fold gets its own random_state derived from (seed, repeat, fold), and runs with
BLAS/OpenMP limited to one thread, so the numbers depend on the seed only, never on ``--jobs``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from joblib import Parallel, delayed
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, StratifiedKFold
from threadpoolctl import threadpool_limits

from cxr.classify.heads import Params, build_head, search_grid
from cxr.classify.tasks import TaskData
from cxr.errors import CxrError

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
    unit: str = "patient"

    @property
    def scheme(self) -> str:
        return "StratifiedGroupKFold" if self.grouped else "StratifiedKFold"

    def to_dict(self) -> dict:
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


@dataclass(frozen=True)
class OutOfFold:
    """Out-of-fold predictions of one head, pooled over all repeats (each row once per repeat)."""

    row: np.ndarray  # index into the task's rows
    y: np.ndarray
    proba: np.ndarray  # (len(row), n_classes)
    fold: np.ndarray  # global fold number: repeat * folds + fold
    best_params: list[dict]  # per fold, with --search
    warnings: list[str]  # distinct warnings raised while fitting, with the number of folds


def derive_seed(seed: int, *keys: int) -> int:
    """A 32-bit seed for one (repeat, fold, ...) that does not depend on execution order."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


def plan_cv(
    data: TaskData, group_by: str = "auto", folds: int = 10, repeats: int = 1, seed: int = 0
) -> tuple[CVPlan, list[str]]:
    """Choose the splitter and check that every class can fill every fold.

    ``auto`` groups by patient whenever all selected rows have a patient id. Returns the plan and
    warnings for the report (image-level CV is optimistic when one patient has several images).
    """
    if group_by not in GROUP_BY:
        raise CxrError(f"--group-by {group_by!r}: expected one of {', '.join(GROUP_BY)}")
    if folds < 2 or repeats < 1 or seed < 0:
        raise CxrError("--folds must be >= 2, --repeats >= 1 and --seed >= 0")
    if group_by == "patient" and not data.has_groups:
        missing = int(np.sum(data.groups == ""))
        raise CxrError(
            f"{data.source}: --group-by patient, but {missing} selected row(s) have no patient id"
        )
    grouped = group_by == "patient" or (group_by == "auto" and data.has_groups)
    unit = "patient" if grouped else "image"
    for index, name in enumerate(data.classes):
        members = data.groups[data.y == index] if grouped else np.flatnonzero(data.y == index)
        count = len(np.unique(members))
        if count < folds:
            raise CxrError(
                f"{data.source}: class {name!r} has {count} {unit}s, fewer than --folds {folds}"
            )
    notes = []
    if grouped and not data.patient_ids:
        notes.append(
            f"{data.source}: no patient ids; folds keep only the --exclude file's duplicate groups "
            "together, so images of one patient can still be split and scores are optimistic"
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
    return CVPlan(folds, repeats, seed, grouped, data.group_unit), notes


def _splitter(grouped: bool, folds: int, random_state: int):
    kind = StratifiedGroupKFold if grouped else StratifiedKFold
    return kind(n_splits=folds, shuffle=True, random_state=random_state)


def make_splits(plan: CVPlan, y: np.ndarray, groups: np.ndarray) -> list[Split]:
    """All (repeat, fold) train/test index pairs; with ``plan.grouped`` no group spans two sides."""
    splits = []
    for repeat in range(plan.repeats):
        splitter = _splitter(plan.grouped, plan.folds, derive_seed(plan.seed, repeat))
        parts = splitter.split(np.zeros(len(y)), y, groups if plan.grouped else None)
        splits.extend(Split(repeat, f, train, test) for f, (train, test) in enumerate(parts))
    return splits


def _check_inner(data: TaskData, plan: CVPlan, splits: list[Split]) -> None:
    """--search and SVM calibration cross-validate inside each training fold; they need room."""
    for split in splits:
        y, groups = data.y[split.train], data.groups[split.train]
        for index, name in enumerate(data.classes):
            members = groups[y == index] if plan.grouped else np.flatnonzero(y == index)
            if len(np.unique(members)) < INNER_FOLDS:
                raise CxrError(
                    f"{data.source}: class {name!r} has fewer than {INNER_FOLDS} "
                    f"{'patients' if plan.grouped else 'images'} in the training rows of fold "
                    f"{split.fold + 1}; --search and the svm head need {INNER_FOLDS} (use fewer "
                    "--folds or more data)"
                )


def _fit_fold(
    source: str,
    head: str,
    params: Params,
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    split: Split,
    n_classes: int,
    random_state: int,
    search: bool,
    grouped: bool,
) -> tuple[np.ndarray, dict | None, list[str]]:
    """Fit one head on one training fold; probabilities for the test fold (all classes)."""
    with threadpool_limits(1), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        estimator = build_head(head, params, random_state)
        train = split.train
        if search:
            estimator = GridSearchCV(
                estimator,
                search_grid(head, params),
                scoring="balanced_accuracy",
                cv=_splitter(grouped, INNER_FOLDS, random_state),
                n_jobs=1,
                error_score=np.nan,  # a candidate that cannot fit (k > rows) loses, with a warning
            )
        proba = np.zeros((len(split.test), n_classes))
        try:
            estimator.fit(X[train], y[train], **({"groups": groups[train]} if search else {}))
            proba[:, estimator.classes_] = estimator.predict_proba(X[split.test])
        except ValueError as exc:  # e.g. more neighbours than training rows
            message = str(exc).splitlines()[0]
            raise CxrError(
                f"{source}: head {head!r} failed in fold {split.fold + 1}: {message}"
            ) from None
    best = {k.rsplit("__", 1)[-1]: v for k, v in estimator.best_params_.items()} if search else None
    messages = sorted({f"{w.category.__name__}: {str(w.message).splitlines()[0]}" for w in caught})
    return proba, best, messages


def run_folds(
    data: TaskData,
    plan: CVPlan,
    heads: Mapping[str, Params],
    *,
    search: bool = False,
    jobs: int = 1,
) -> dict[str, OutOfFold]:
    """Out-of-fold probabilities of every head, all folds of all heads in one joblib pool."""
    splits = make_splits(plan, data.y, data.groups)
    if search or "svm" in heads:
        _check_inner(data, plan, splits)
    tasks = [(head, split) for head in heads for split in splits]
    outputs = Parallel(n_jobs=jobs)(
        delayed(_fit_fold)(
            str(data.source),
            head,
            heads[head],
            data.X,
            data.y,
            data.groups,
            split,
            len(data.classes),
            derive_seed(plan.seed, split.repeat, split.fold),
            search,
            plan.grouped,
        )
        for head, split in tasks
    )
    results = {}
    for head in heads:
        mine = [(split, out) for (h, split), out in zip(tasks, outputs, strict=True) if h == head]
        rows = np.concatenate([s.test for s, _ in mine])
        counts: dict[str, int] = {}
        for _, (_, _, messages) in mine:
            for message in messages:
                counts[message] = counts.get(message, 0) + 1
        results[head] = OutOfFold(
            row=rows,
            y=data.y[rows],
            proba=np.concatenate([proba for _, (proba, _, _) in mine]),
            fold=np.concatenate(
                [np.full(len(s.test), s.repeat * plan.folds + s.fold) for s, _ in mine]
            ),
            best_params=[best for _, (_, best, _) in mine if best is not None],
            warnings=[f"{head}: {m} (in {n} of {len(mine)} folds)" for m, n in counts.items()],
        )
    return results
