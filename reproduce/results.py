"""The study's results: what `cxr reproduce` writes to docs/results.json and renders from it.

Defined once here; ``run`` produces these, ``render`` reads them, and the JSON is exactly these
dicts. Everything is keyed by name (protocol, task, probe, training task), never by position.
"""

from __future__ import annotations

from typing import TypedDict

from cxr.audit.probe import ProbeResult
from cxr.classify.metrics import Stat


class BackboneStatus(TypedDict, total=False):
    status: str  # ok | unavailable
    reason: str  # why unavailable
    weights: str
    weights_file: str
    weights_sha256: str
    weights_seed: int
    note: str  # what ../shared/weights/WEIGHTS.md says of the file
    rows: int
    new: int
    rejected: int
    dim: int
    seconds: float


class ResultRow(TypedDict):
    """One (backbone, protocol, task) evaluated with the MLP head; COVID-19 is the positive."""

    backbone: str
    protocol: str  # A | B
    task: str  # a key of protocols.TASKS
    cv: dict
    n: int
    class_counts: dict[str, int]
    accuracy: Stat
    balanced_accuracy: Stat
    sensitivity: Stat
    specificity: Stat
    confusion_matrix: list[list[int]]
    classes: list[str]


class CrossSource(TypedDict):
    """Trained on one task of the paper's composition; unseen adult non-COVID films scored."""

    n_train: int
    n_unseen: int
    unseen_labels: dict[str, int]
    called_covid: int
    called_covid_by_label: dict[str, int]
    specificity: Stat  # of COVID-19 on the unseen films: the share not called COVID-19


class Checks(TypedDict):
    probes: dict[str, ProbeResult]  # protocols.ALL_IMAGES, protocols.NON_COVID
    cross_source: dict[str, CrossSource]  # keyed by the training task


class GapRow(TypedDict):
    """The paper's task under one design that takes a shortcut away (the MLP head)."""

    design: str  # "whole films", "centre masked", "centre only", "held out: <source>", or
    # CROSS_SOURCE_DESIGN (its balanced accuracy: the COVID-19 specificity on unseen films)
    task: str  # a key of protocols.TASKS
    n: int
    balanced_accuracy: Stat
    sensitivity: Stat  # of COVID-19
    difference: dict | None  # a region's paired difference from the whole films (bal. accuracy)


class Gap(TypedDict):
    """How far the paper's protocol generalises once the image's shortcuts are taken away."""

    rows: list[GapRow]
    cam: dict  # class -> {n, mean, ci95}: the MLP's evidence outside the central box
    cam_method: str  # grad-cam for the MLP
    box: float
    uniform_outside: float  # evenly spread evidence: 1 - box²
    sheet: str  # a contact sheet of the COVID-19 films' maps (docs/figures/), or ""
    notes: list[str]  # what could not be computed, and why


class Duplicates(TypedDict):
    method: str
    clusters: int
    rows_in_clusters: int
    excluded: int
    label_conflicts: int
    patient_conflicts: int
    members: list[list[str]]  # paths of each cluster


class StudyReport(TypedDict):
    generated: str
    command: str
    data: dict  # root, images, patients, by_label_and_dataset
    head: str
    folds: int
    seed: int
    bootstrap: int
    published: list[dict]
    backbones: dict[str, BackboneStatus]
    duplicates: Duplicates
    results: list[ResultRow]
    checks: dict[str, Checks]  # keyed by backbone
    generalisation: dict[str, Gap]  # keyed by backbone
    machine: dict
    versions: dict[str, str]
    extraction_versions: dict[str, str]
    seconds: dict[str, float]  # extraction, evaluation, total
