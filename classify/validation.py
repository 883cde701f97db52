"""How a task is validated: cross-validation, leave-one-value-out, or an external test set.

Each design turns a store and a task into the rows involved, the train/test splits, and how the
test rows of those splits form results: cross-validation pools all folds into one result,
``--leave-out COLUMN`` gives one result per held-out value, ``--test-where`` one result on the
disjoint test rows. Patients never sit on both sides of a split: leave-out drops from training
the other images of a held-out patient, and an external test that shares patients with its
training rows is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from cxr.classify.confounds import MAX_VALUES
from cxr.classify.cv import Split, make_splits, plan_cv
from cxr.classify.tasks import Condition, TaskData, TaskSpec, select
from cxr.errors import CxrError
from cxr.store import FeatureSet

SHOWN_PATIENTS = 5  # patient ids quoted in a refusal
FOLDS = 10  # the paper's 10-fold cross-validation


@dataclass(frozen=True)
class Part:
    """The splits whose test rows make one result, and what the result says about them."""

    folds: tuple[int, ...]
    validation: dict  # the result's "validation" entry in the JSON


@dataclass(frozen=True)
class Design:
    data: TaskData  # every row any split uses
    splits: list[Split]
    parts: list[Part]
    protocol: dict  # the results' "cv" entry: scheme and its settings
    inner_groups: np.ndarray | None  # groups of --search's inner folds (None: images)
    notes: list[str] = field(default_factory=list)


def design(
    fs: FeatureSet,
    task: TaskSpec,
    *,
    group_by: str = "auto",
    leave_out: str | None = None,
    test_where: tuple[Condition, ...] = (),
    folds: int | None = None,
    repeats: int | None = None,
    seed: int = 0,
    splits_cache: dict | None = None,
) -> Design:
    """The validation the options ask for (CxrError for contradictory or impossible ones).

    ``folds`` and ``repeats`` (default 10 and 1) belong to cross-validation only.
    """
    if leave_out and test_where:
        raise CxrError("--leave-out and --test-where are two designs; choose one")
    if (leave_out or test_where) and (
        group_by not in ("auto", "patient") or folds is not None or repeats is not None
    ):
        raise CxrError(
            "--group-by, --folds and --repeats set cross-validation folds; they do not combine "
            "with --leave-out or --test-where, whose splits are given by the rows"
        )
    if test_where:
        return _external(fs, task, test_where, seed)
    data = select(fs, task)
    if leave_out:
        return _leave_out(data, leave_out, seed)
    return _cross_validation(data, group_by, folds or FOLDS, repeats or 1, seed, splits_cache)


def _cross_validation(
    data: TaskData, group_by: str, folds: int, repeats: int, seed: int, cache: dict | None
) -> Design:
    plan, notes = plan_cv(data, group_by, folds, repeats, seed)
    splits = make_splits(plan, data.y, cache)
    part = Part(tuple(range(len(splits))), {"kind": "cross-validation"})
    inner = plan.groups if plan.grouped else None
    return Design(data, splits, [part], plan.to_dict(), inner, notes)


def _patients(data: TaskData) -> np.ndarray | None:
    return data.groups if data.has_groups else None


def _missing(data: TaskData, rows: np.ndarray) -> list[str]:
    present = set(data.y[rows].tolist())
    return [c for i, c in enumerate(data.classes) if i not in present]


def _leave_out(data: TaskData, column: str, seed: int) -> Design:
    values = data.column(column, "--leave-out")
    patients = _patients(data)
    held = sorted(v for v in set(values.tolist()) if v)
    if len(held) < 2:
        raise CxrError(f"{data.source}: --leave-out {column}: needs 2+ values, found {held}")
    if len(held) > MAX_VALUES or len(held) > len(values) / 2:
        raise CxrError(
            f"{data.source}: --leave-out {column}: {len(held)} values for {len(values)} rows "
            "looks like an identifier; hold out a column that groups rows (dataset, source, "
            "site, view, ...)"
        )
    splits, parts, notes = [], [], []
    empty = int(np.sum(values == ""))
    if empty:
        notes.append(
            f"{data.source}: {empty} row(s) have no {column} value: they are never held out "
            "and train every split"
        )
    for value in held:
        test = np.flatnonzero(values == value)
        train = np.flatnonzero(values != value)
        dropped = 0
        if patients is not None:  # a held-out patient's other images leave training too
            shared = np.isin(patients[train], patients[test])
            dropped, train = int(shared.sum()), train[~shared]
        if len(set(data.y[train].tolist())) < 2:
            notes.append(
                f"{data.source}: {column}={value} is not held out: without it, too few training "
                f"rows are left ({len(train)}, classes: "
                f"{', '.join(sorted({data.classes[i] for i in data.y[train]})) or 'none'})"
            )
            continue
        fold = len(splits)
        splits.append(Split(0, fold, train, test, name=f"{column}={value}"))
        lacking, untrained = _missing(data, test), _missing(data, train)
        parts.append(
            Part(
                (fold,),
                {
                    "kind": "leave-one-out",
                    "column": column,
                    "held_out": value,
                    "n_train": len(train),
                    "n_test": len(test),
                    "train_rows_dropped_shared_patients": dropped,
                    "test_lacks_classes": lacking,
                    "train_lacks_classes": untrained,
                },
            )
        )
        if lacking:
            notes.append(
                f"{data.source}: held-out {column}={value} has no {', '.join(lacking)} images: "
                "their sensitivity is undefined there, balanced accuracy averages over the "
                "classes present, and AUC needs two classes"
            )
        if untrained:
            notes.append(
                f"{data.source}: without {column}={value} the training rows have no "
                f"{', '.join(untrained)} images: the head cannot predict them there"
            )
        if dropped:
            notes.append(
                f"{data.source}: {dropped} training row(s) of patients also under "
                f"{column}={value} were left out of its training set"
            )
    if not splits:
        raise CxrError(
            f"{data.source}: --leave-out {column}: no value can be held out (see above)"
            f": {'; '.join(notes)}"
        )
    if patients is None:
        notes.append(
            f"{data.source}: no patient ids, so a patient under two {column} values could sit on "
            "both sides of a split"
        )
    protocol = {
        "scheme": f"leave one {column} out",
        "column": column,
        "seed": seed,
        "grouped": True,
        "unit": column,
    }
    return Design(data, splits, parts, protocol, patients, notes)


def _external(
    fs: FeatureSet, task: TaskSpec, test_where: tuple[Condition, ...], seed: int
) -> Design:
    """Fit on the task's rows that are not test rows; score once on the test rows."""
    is_test = np.logical_and.reduce([c.mask(fs) for c in test_where])
    is_train = ~is_test
    if task.where:
        is_train &= np.logical_and.reduce([c.mask(fs) for c in task.where])
    shown = "; ".join(map(str, test_where))
    if not is_test.any():
        raise CxrError(f"{fs.path}: no rows match --test-where {shown}")
    if not is_train.any():
        raise CxrError(f"{fs.path}: no training rows are left outside --test-where {shown}")
    data = select(fs.take(np.flatnonzero(is_train | is_test)), replace(task, where=()))
    test_paths = set(fs.rows["path"][is_test].tolist())
    test = np.flatnonzero(np.isin(data.paths, list(test_paths)))
    train = np.flatnonzero(~np.isin(data.paths, list(test_paths)))
    if not len(test) or not len(train):
        side = "test" if not len(test) else "training"
        raise CxrError(f"{fs.path}: the task keeps no {side} rows with --test-where {shown}")
    patients = _patients(data)
    notes = []
    if patients is not None:
        both = sorted(set(patients[train].tolist()) & set(patients[test].tolist()))
        if both:
            raise CxrError(
                f"{fs.path}: {len(both)} patient(s) have images on both sides of --test-where "
                f"{shown} (e.g. {', '.join(both[:SHOWN_PATIENTS])}); a test set must hold unseen "
                "patients: narrow --where or --test-where"
            )
    else:
        notes.append(
            f"{fs.path}: no patient ids, so nothing shows that the test patients are unseen"
        )
    lacking, untrained = _missing(data, test), _missing(data, train)
    if len(data.classes) - len(untrained) < 2:
        raise CxrError(
            f"{fs.path}: the training rows outside --test-where {shown} hold only "
            f"{', '.join(c for c in data.classes if c not in untrained)}: a head needs two classes"
        )
    if untrained:
        notes.append(
            f"{fs.path}: the training rows have no {', '.join(untrained)} images: the head "
            "cannot predict them on the test rows"
        )
    if lacking:
        notes.append(
            f"{fs.path}: the test rows have no {', '.join(lacking)} images: their sensitivity "
            "is undefined, balanced accuracy averages over the classes present, and AUC needs "
            "two classes"
        )
    part = Part(
        (0,),
        {
            "kind": "external",
            "test_where": [str(c) for c in test_where],
            "n_train": len(train),
            "n_test": len(test),
            "test_lacks_classes": lacking,
            "train_lacks_classes": untrained,
        },
    )
    protocol = {
        "scheme": "external test set",
        "test_where": [str(c) for c in test_where],
        "seed": seed,
        "grouped": patients is not None,  # no patient on both sides
        "unit": "patient" if patients is not None else "image",
    }
    split = Split(0, 0, train, test, name="the external test rows")
    return Design(data, [split], [part], protocol, patients, notes)
