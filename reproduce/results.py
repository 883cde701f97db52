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


class Checks(TypedDict):
    probes: dict[str, ProbeResult]  # protocols.ALL_IMAGES, protocols.NON_COVID
    cross_source: dict[str, CrossSource]  # keyed by the training task


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
    machine: dict
    versions: dict[str, str]
    extraction_versions: dict[str, str]
    seconds: dict[str, float]  # extraction, evaluation, total
