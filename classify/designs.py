"""Validation designs: cross-validation, leave-one-value-out, an external test set.

A design is an object taken as a parameter, as scikit-learn's ``cross_validate`` takes ``cv=``:
its settings are checked when it is made, ``plan`` turns a store and a task into the rows
involved, the train/test splits, how the test rows of those splits form results (`Part`, with its
`Validation` record) and the protocol (`Protocol`). That is all a design does, as scikit-learn's
splitters only split: how its results are described, laid out and named in files is
`cxr.classify.presentation`'s. Adding a design is one subclass here (``kind`` names it in the
JSON), its `Presentation` there, and its option in `choose` and the CLI.

Patients never sit on both sides of a split: cross-validation groups folds by patient whenever
ids exist, leave-out drops from training the other images of a held-out patient, and an
external test that shares patients with its training rows is refused.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar

import numpy as np

from cxr.classify.folds import Split, derive_seed, kfold
from cxr.classify.records import CROSS_VALIDATION, Protocol, Validation
from cxr.classify.settings import FOLDS, GROUP_BY, REPEATS, default, flag
from cxr.classify.tasks import Condition, TaskData, TaskSpec, conditions, select
from cxr.errors import CxrError
from cxr.store import FeatureSet

SHOWN_PATIENTS = 5  # patient ids quoted in a refusal
MAX_FOLDS, MAX_REPEATS = 1000, 100
MAX_VALUES = 50  # more distinct values than this is an identifier, not a group to hold out
# What gives a store its patient ids, said wherever their absence makes scores optimistic.
FIX_IDS = (
    "Give them: `cxr features` reads them from DICOM headers; for other files, a manifest with a "
    f"patient_id column (`cxr features DATA {flag('manifest')} CSV`)"
)
# `group_by`: these words, or the name of any stored column (dataset, source, view, ...).
GROUPINGS = (GROUP_BY, "patient", "none")


@dataclass(frozen=True)
class Part:
    """The splits whose test rows make one result, and what the result says about them."""

    folds: tuple[int, ...]
    validation: Validation  # the result's "validation" entry


@dataclass(frozen=True)
class Plan:
    """A design applied to one store and task."""

    data: TaskData  # every row any split uses
    splits: list[Split]
    parts: list[Part]
    protocol: Protocol  # the results' "cv" entry: scheme and its settings
    inner_groups: np.ndarray | None  # groups of --search's inner folds (None: images)
    notes: list[str] = field(default_factory=list)


class Design(ABC):
    """One way of validating a task (subclasses are frozen dataclasses of their settings)."""

    kind: ClassVar[str]  # the results' validation.kind (`cxr.classify.presentation` shows it)

    @abstractmethod
    def plan(self, fs: FeatureSet, task: TaskSpec, *, seed: int, cache: dict | None = None) -> Plan:
        """The rows, splits and parts on this store (CxrError when impossible); ``cache`` is
        the run's, for splits that several stores of one data set share."""


def choose(
    *,
    folds: int | None = default("folds"),
    repeats: int | None = default("repeats"),
    group_by: str = default("group_by"),
    leave_out: str | None = default("leave_out"),
    test_where: Sequence[Condition | str] = default("test_where"),
) -> Design:
    """The design the evaluate options ask for (CxrError for contradictory ones)."""
    if leave_out and test_where:
        raise CxrError("`leave_out` and `test_where` are two designs; choose one")
    if (leave_out or test_where) and (
        group_by not in GROUPINGS[:2] or folds is not None or repeats is not None
    ):
        raise CxrError(
            "`group_by`, `folds` and `repeats` set cross-validation folds; they do not combine "
            "with `leave_out` or `test_where`, whose splits are given by the rows"
        )
    if test_where:
        return ExternalTest(conditions(test_where, "`test_where`"))
    if leave_out:
        return LeaveOneOut(leave_out)
    return CrossValidation(folds or FOLDS, repeats or REPEATS, group_by)


def _missing(data: TaskData, rows: np.ndarray) -> list[str]:
    present = set(data.y[rows].tolist())
    return [c for i, c in enumerate(data.classes) if i not in present]


@dataclass(frozen=True)
class CrossValidation(Design):
    """Stratified K-fold, repeated; grouped by patient whenever ids exist (``group_by`` auto),
    or by any stored column. Every fold's test rows pool into one result."""

    folds: int = FOLDS
    repeats: int = REPEATS
    group_by: str = GROUP_BY
    kind: ClassVar[str] = CROSS_VALIDATION

    def __post_init__(self) -> None:
        if not 2 <= self.folds <= MAX_FOLDS or not 1 <= self.repeats <= MAX_REPEATS:
            raise CxrError(
                f"`folds` must be 2..{MAX_FOLDS} and `repeats` 1..{MAX_REPEATS} "
                f"(got {self.folds} and {self.repeats})"
            )
        if not self.group_by:
            raise CxrError(f"`group_by`: give {', '.join(GROUPINGS)} or a column name")

    def plan(self, fs: FeatureSet, task: TaskSpec, *, seed: int, cache: dict | None = None) -> Plan:
        data = select(fs, task)
        groups, unit, notes = self._groups(data)
        self._check_counts(data, groups, unit)
        splits = make_splits(data.y, groups, self.folds, self.repeats, seed, cache)
        part = Part(tuple(range(len(splits))), Validation(self.kind))
        protocol = Protocol(
            "StratifiedGroupKFold" if groups is not None else "StratifiedKFold",
            folds=self.folds,
            repeats=self.repeats,
            seed=seed,
            grouped=groups is not None,
            unit=unit if groups is not None else "image",
        )
        return Plan(data, splits, [part], protocol, groups, notes)

    def _groups(self, data: TaskData) -> tuple[np.ndarray | None, str, list[str]]:
        """What folds are grouped by (None: images), the unit's name, and warnings."""
        by = self.group_by
        if by == "patient" and not data.has_groups:
            missing = int(np.sum(data.groups == ""))
            raise CxrError(
                f"{data.source}: `group_by` patient, but {missing} selected row(s) have no "
                "patient id"
            )
        if by in GROUPINGS:
            grouped = by == "patient" or (by == GROUP_BY and data.has_groups)
            groups, unit = data.groups, data.group_unit
        else:
            groups, unit, grouped = data.column(by, "`group_by`"), by, True
            if np.any(groups == ""):
                raise CxrError(
                    f"{data.source}: `group_by` {by}: {int(np.sum(groups == ''))} selected "
                    "row(s) have no value"
                )
        notes = []
        if grouped and unit == data.group_unit and data.missing_ids == len(data.y):
            notes.append(
                f"{data.source}: no patient ids; folds keep only the {flag('exclude')} file's "
                "duplicate groups together, so images of one patient can still be split and scores "
                f"are optimistic. {FIX_IDS}"
            )
        elif grouped and unit == data.group_unit and data.missing_ids:
            notes.append(
                f"{data.source}: {data.missing_ids} row(s) have no patient id; each is its own "
                "group, so if some of them are one patient's images, those can be split and "
                "scores are optimistic"
            )
        elif not grouped and not data.has_groups:
            notes.append(
                f"{data.source}: no patient ids, so folds split images, not patients; if a "
                f"patient has several images, these scores are optimistic. {FIX_IDS}"
            )
        elif not grouped:
            notes.append(
                f"{data.source}: {flag('group_by')} none although patient ids exist: images of one "
                "patient can be in both training and test folds, so these scores are optimistic"
            )
        elif unit not in ("patient", data.group_unit) and data.has_groups:
            split = _groups_split_patients(groups, data.groups)
            if split:
                notes.append(
                    f"{data.source}: {flag('group_by')} {unit}: {split} patient(s) have images "
                    f"under two {unit} values, so they can sit in training and test folds"
                )
        return (groups if grouped else None), unit, notes

    def _check_counts(self, data: TaskData, groups: np.ndarray | None, unit: str) -> None:
        """Every class must fill every fold; the refusal names the --folds that would work."""
        counts = {
            name: len(np.unique(groups[data.y == i]))
            if groups is not None
            else int(np.sum(data.y == i))
            for i, name in enumerate(data.classes)
        }
        name, count = min(counts.items(), key=lambda kv: kv[1])
        if count >= self.folds:
            return
        what = (
            "patients"
            if groups is not None and unit.startswith("patient")
            else "images"
            if groups is None or unit.startswith("image")
            else f"{unit} values"
        )
        fix = (
            f"the largest `folds` that works here is {count}"
            if count >= 2
            else "too few to cross-validate: drop the class (`classes`) or add images"
        )
        raise CxrError(
            f"{data.source}: class {name!r} has {count} {what}, fewer than `folds` "
            f"{self.folds}; {fix}"
        )


def _groups_split_patients(groups: np.ndarray, patients: np.ndarray) -> int:
    """How many patients have rows in more than one group."""
    pairs = {(p, g) for p, g in zip(patients.tolist(), groups.tolist(), strict=True)}
    seen: dict[str, int] = {}
    for patient, _ in pairs:
        seen[patient] = seen.get(patient, 0) + 1
    return sum(n > 1 for n in seen.values())


def make_splits(
    y: np.ndarray,
    groups: np.ndarray | None,
    folds: int,
    repeats: int,
    seed: int,
    cache: dict | None = None,
) -> list[Split]:
    """All (repeat, fold) train/test index pairs; with ``groups`` no group spans two sides.

    ``cache`` (a dict the caller keeps for one run) returns the same splits for stores whose
    rows, classes and groups are the same: one computation per data set, not per backbone.
    """
    key = None
    if cache is not None:
        digest = hashlib.sha256(np.ascontiguousarray(y).tobytes())
        if groups is not None:
            digest.update("\0".join(map(str, groups)).encode())
        key = (folds, repeats, seed, groups is not None, digest.hexdigest())
        if key in cache:
            return cache[key]
    splits: list[Split] = []
    for repeat in range(repeats):
        parts = kfold(y, groups, folds, derive_seed(seed, repeat))  # (train, test) pairs
        splits.extend(Split(repeat, f, train, test) for f, (train, test) in enumerate(parts))
    if cache is not None:
        cache[key] = splits
    return splits


@dataclass(frozen=True)
class LeaveOneOut(Design):
    """Train on every other value of ``column``, test on each value in turn: one result per
    held-out value."""

    column: str
    kind: ClassVar[str] = "leave-one-out"

    def __post_init__(self) -> None:
        if not self.column:
            raise CxrError("`leave_out`: name a column, e.g. dataset")

    def plan(self, fs: FeatureSet, task: TaskSpec, *, seed: int, cache: dict | None = None) -> Plan:
        data = select(fs, task)
        column = self.column
        values = data.column(column, "`leave_out`")
        patients = data.patients
        held = sorted(v for v in set(values.tolist()) if v)
        if len(held) < 2:
            raise CxrError(f"{data.source}: `leave_out` {column}: needs 2+ values, found {held}")
        if len(held) > MAX_VALUES or len(held) > len(values) / 2:
            raise CxrError(
                f"{data.source}: `leave_out` {column}: {len(held)} values for {len(values)} rows "
                "looks like an identifier; hold out a column that groups rows (dataset, source, "
                "site, view, ...)"
            )
        splits: list[Split] = []
        parts: list[Part] = []
        notes: list[str] = []
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
                    f"{data.source}: {column}={value} is not held out: without it, too few "
                    f"training rows are left ({len(train)}, classes: "
                    f"{', '.join(sorted({data.classes[i] for i in data.y[train]})) or 'none'})"
                )
                continue
            fold = len(splits)
            splits.append(Split(0, fold, train, test, name=f"{column}={value}"))
            lacking, untrained = _missing(data, test), _missing(data, train)
            parts.append(
                Part(
                    (fold,),
                    Validation(
                        self.kind,
                        column=column,
                        held_out=value,
                        n_train=len(train),
                        n_test=len(test),
                        train_rows_dropped_shared_patients=dropped,
                        test_lacks_classes=tuple(lacking),
                        train_lacks_classes=tuple(untrained),
                    ),
                )
            )
            if lacking:
                notes.append(
                    f"{data.source}: held-out {column}={value} has no {', '.join(lacking)} "
                    "images: their sensitivity is undefined there, balanced accuracy averages "
                    "over the classes present, and AUC needs two classes"
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
                f"{data.source}: `leave_out` {column}: no value can be held out (see above)"
                f": {'; '.join(notes)}"
            )
        if patients is None:
            notes.append(
                f"{data.source}: no patient ids, so a patient under two {column} values could "
                "sit on both sides of a split"
            )
        protocol = Protocol(
            f"leave one {column} out", column=column, seed=seed, grouped=True, unit=column
        )
        return Plan(data, splits, parts, protocol, patients, notes)


@dataclass(frozen=True)
class ExternalTest(Design):
    """Fit on the task's rows that are not test rows; score once on the rows matching every
    condition (picked from the whole store, whatever the task's --where says)."""

    conditions: tuple[Condition, ...]
    kind: ClassVar[str] = "external"

    def __post_init__(self) -> None:
        if not self.conditions:
            raise CxrError("`test_where`: give the test rows, e.g. dataset=ieee8023")
        object.__setattr__(self, "conditions", tuple(self.conditions))

    def plan(self, fs: FeatureSet, task: TaskSpec, *, seed: int, cache: dict | None = None) -> Plan:
        is_test = np.logical_and.reduce([c.mask(fs) for c in self.conditions])
        is_train = ~is_test
        if task.where:
            is_train &= np.logical_and.reduce([c.mask(fs) for c in task.where])
        shown = "; ".join(map(str, self.conditions))
        if not is_test.any():
            raise CxrError(f"{fs.path}: no rows match `test_where` {shown}")
        if not is_train.any():
            raise CxrError(f"{fs.path}: no training rows are left outside `test_where` {shown}")
        data = select(fs.take(np.flatnonzero(is_train | is_test)), replace(task, where=()))
        test_paths = list(set(fs.rows["path"][is_test].tolist()))
        test = np.flatnonzero(np.isin(data.paths, test_paths))
        train = np.flatnonzero(~np.isin(data.paths, test_paths))
        if not len(test) or not len(train):
            side = "test" if not len(test) else "training"
            raise CxrError(f"{fs.path}: the task keeps no {side} rows with `test_where` {shown}")
        patients = data.patients
        notes = []
        if patients is not None:
            both = sorted(set(patients[train].tolist()) & set(patients[test].tolist()))
            if both:
                raise CxrError(
                    f"{fs.path}: {len(both)} patient(s) have images on both sides of "
                    f"`test_where` {shown} (e.g. {', '.join(both[:SHOWN_PATIENTS])}); a test set "
                    "must hold unseen patients: narrow `where` or `test_where`"
                )
        else:
            notes.append(
                f"{fs.path}: no patient ids, so nothing shows that the test patients are unseen"
            )
        lacking, untrained = _missing(data, test), _missing(data, train)
        if len(data.classes) - len(untrained) < 2:
            raise CxrError(
                f"{fs.path}: the training rows outside `test_where` {shown} hold only "
                f"{', '.join(c for c in data.classes if c not in untrained)}: a head needs two "
                "classes"
            )
        if untrained:
            notes.append(
                f"{fs.path}: the training rows have no {', '.join(untrained)} images: the head "
                "cannot predict them on the test rows"
            )
        if lacking:
            notes.append(
                f"{fs.path}: the test rows have no {', '.join(lacking)} images: their "
                "sensitivity is undefined, balanced accuracy averages over the classes present, "
                "and AUC needs two classes"
            )
        where = [str(c) for c in self.conditions]
        part = Part(
            (0,),
            Validation(
                self.kind,
                test_where=tuple(where),
                n_train=len(train),
                n_test=len(test),
                test_lacks_classes=tuple(lacking),
                train_lacks_classes=tuple(untrained),
            ),
        )
        protocol = Protocol(
            "external test set",
            test_where=tuple(where),
            seed=seed,
            grouped=patients is not None,  # no patient on both sides
            unit="patient" if patients is not None else "image",
        )
        split = Split(0, 0, train, test, name="the external test rows")
        return Plan(data, [split], [part], protocol, patients, notes)
