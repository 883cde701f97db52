"""`cxr audit`: duplicates, conflicts and source confounds of one feature store, as a plain dict."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import numpy as np
from joblib import delayed

from cxr.audit import duplicates, exclusions
from cxr.audit.cache import DECODE_WORKERS, hashes_for
from cxr.audit.phash import LEVELS, METHOD, N_BITS, WORDS
from cxr.audit.probe import ProbeResult, probe
from cxr.audit.thresholds import COSINE_THRESHOLD, HASH_THRESHOLD
from cxr.classify.folds import patient_groups
from cxr.classify.neighbours import SAMPLE, Neighbourhood, Sample, draw, films, neighbourhood
from cxr.classify.tasks import rows_digest
from cxr.classify.workers import pool
from cxr.cluster import on_cluster
from cxr.errors import CxrError
from cxr.progress import Progress, Silent
from cxr.store import FeatureSet, find_stores, load
from cxr.store.schema import store_path

if TYPE_CHECKING:
    from cxr.reporting.figures import Figures

DEFAULT_PROBES = ("source", "dataset")
REPLICATES = 1000  # of the neighbour shares' patient bootstrap
MEMBER_COLUMNS = ("id", "path", "label", "patient_id", "source")


class ClusterReport(TypedDict):
    size: int
    methods: list[str]  # exact, phash, cosine
    min_hash_distance: int | None
    max_cosine: float | None
    conflicts: list[str]  # label, patient_id
    members: list[dict[str, str]]  # MEMBER_COLUMNS of each row


class AuditReport(TypedDict):
    """What `cxr audit` returns and writes with --json (the terminal shows the same dict)."""

    store: str
    backbone: str
    data_root: str
    rows: int
    settings: dict  # hash_method, hash_threshold, cosine_threshold, seed
    counts: dict  # pairs by method, clusters, conflicts, hashed rows (see _counts)
    clusters: list[ClusterReport]
    probes: dict[str, ProbeResult]  # keyed by the probed column
    neighbourhood: Neighbourhood  # do films sit beside films of their own source?
    exclusions: dict  # Exclusions.to_json(): what --exclude-out writes
    notes: list[str]
    plots: list[str]  # with --plots: a figure per duplicate cluster
    figures: Figures | None  # with --plots: what was written (`cxr.reporting.figures`)
    timing: dict  # hashes_computed, hash_seconds, total_seconds


@dataclass(frozen=True)
class Shortcut:
    """What the audit's neighbour shares and embedding map are about: every stored film, its
    label, its patient (or itself), and the first probed column that varies."""

    y: np.ndarray
    classes: list[str]
    units: np.ndarray
    unit: str
    column: str | None
    values: np.ndarray | None
    rows_sha256: str

    @classmethod
    def of(cls, fs: FeatureSet, columns: Sequence[str]) -> Shortcut:
        classes = sorted(set(fs.labels.tolist()))
        groups = patient_groups(fs.patient_ids, fs.ids)
        known = bool(np.all(groups != ""))
        varied = (c for c in columns if c in fs.columns() and len(set(fs.column(c)) - {""}) > 1)
        column = next(varied, None)
        unit = "patient" if fs.has_patient_ids else "patient (image where no id)"
        return cls(
            y=np.searchsorted(classes, fs.labels),
            classes=classes,
            units=groups if known else fs.ids,
            unit=unit if known else "image",
            column=column,
            values=fs.column(column) if column else None,
            rows_sha256=rows_digest(fs.ids, fs.labels),
        )

    def sample(self, fs: FeatureSet, seed: int) -> Sample:
        """The films the neighbour shares asked, drawn again for the map."""
        asked, _ = draw(self.y, self.values, SAMPLE, seed, self.column or "value")
        return films(fs.name, fs.X, self.y, self.classes, self.values, asked)


def choose_store(features_dir: Path, backbone: str | None) -> Path:
    if backbone:
        return store_path(features_dir, backbone)
    stores = find_stores(features_dir)
    if len(stores) != 1:
        found = ", ".join(p.stem for p in stores) or "none"
        raise CxrError(
            f"{features_dir}: {len(stores)} feature stores ({found}); choose one with -b"
        )
    return stores[0]


def data_root(fs: FeatureSet, data: Path | None) -> Path:
    root = data if data is not None else Path(str(fs.attrs.get("data_root", "")))
    if not str(root) or not root.is_dir():
        raise CxrError(
            f"{root}: image folder not found (the store's data_root); give it with --data"
        )
    return root


def audit(
    features_dir: Path = Path("features"),
    backbone: str | None = None,
    *,
    data: Path | None = None,
    hash_threshold: int = HASH_THRESHOLD,
    cosine_threshold: float = COSINE_THRESHOLD,
    probes: Sequence[str] = (),
    seed: int = 0,
    progress: Progress | None = None,
    scheduler: str | None = None,
) -> AuditReport:
    """Duplicate clusters, conflicts, confound probes and the exclusion file, as one report.

    ``scheduler`` (a Dask address or ``local:N``): the perceptual hashes of new images and the
    probes run on that cluster's workers (which must see the images at the same paths)."""
    with on_cluster(scheduler):
        return _audit(
            features_dir,
            backbone,
            data=data,
            hash_threshold=hash_threshold,
            cosine_threshold=cosine_threshold,
            probes=probes,
            seed=seed,
            progress=progress,
            jobs=DECODE_WORKERS if scheduler is None else -1,
        )


def _audit(
    features_dir: Path,
    backbone: str | None,
    *,
    data: Path | None,
    hash_threshold: int,
    cosine_threshold: float,
    probes: Sequence[str],
    seed: int,
    progress: Progress | None,
    jobs: int,
) -> AuditReport:
    if not 0 <= hash_threshold < N_BITS or not -1.0 <= cosine_threshold <= 1.0:
        raise CxrError(f"--hash-threshold must be 0..{N_BITS - 1} and --cosine-threshold -1..1")
    started = time.perf_counter()
    fs = load(choose_store(features_dir, backbone))
    root = data_root(fs, data)
    ids, patients, labels = fs.ids, fs.patient_ids, fs.labels
    files = [root / p for p in fs.rows["path"]]
    steps = progress or Silent()
    cache, notes, computed = hashes_for(ids, files, fs.path.parent, steps, jobs)
    hashed = np.flatnonzero([sha in cache for sha in ids])
    hashes = np.zeros((len(hashed), LEVELS, WORDS), np.uint64)
    for n, i in enumerate(hashed):
        hashes[n] = cache[ids[i]]
    hash_seconds = time.perf_counter() - started

    exact = duplicates.exact_pairs(ids)
    by_hash = [
        (int(hashed[a]), int(hashed[b]), d)
        for a, b, d in duplicates.hash_pairs(hashes, hash_threshold)
        if ids[hashed[a]] != ids[hashed[b]]
    ]
    by_cosine = [
        (i, j, s) for i, j, s in duplicates.cosine_pairs(fs.X, cosine_threshold) if ids[i] != ids[j]
    ]
    found = duplicates.clusters(len(fs), exact, by_hash, by_cosine, labels, patients)

    columns = list(dict.fromkeys(probes)) or [c for c in DEFAULT_PROBES if c in fs.columns()]
    firsts: dict[str, str] = {}  # column -> the first column with the same values (probed once)
    for name in columns:
        firsts[name] = next(
            (c for c in firsts if np.array_equal(fs.column(c), fs.column(name))), name
        )
    distinct = [c for c in columns if firsts[c] == c]
    with steps.step("probes: does the embedding give away the column?", len(distinct)) as done:
        probed = {}
        outputs = pool(jobs, return_as="generator")(
            delayed(probe)(fs.X, fs.column(c), patients, seed=seed, ids=fs.ids) for c in distinct
        )
        for name, result in zip(distinct, outputs, strict=True):
            probed[name] = result
            done(1)
    probe_results: dict[str, ProbeResult] = {
        c: probed[c] if firsts[c] == c else ProbeResult(same_as=firsts[c]) for c in columns
    }
    shortcut = Shortcut.of(fs, columns)
    with steps.step("neighbours: do films sit beside their own source?", 1) as done:
        around, _ = neighbourhood(
            fs.name,
            fs.X,
            shortcut.y,
            shortcut.classes,
            shortcut.units,
            shortcut.column,
            shortcut.values,
            unit=shortcut.unit,
            seed=seed,
            replicates=REPLICATES,
            rows_sha256=shortcut.rows_sha256,
        )
        done(1)

    return AuditReport(
        store=str(fs.path),
        backbone=fs.backbone,
        data_root=str(root),
        rows=len(fs),
        settings={
            "hash_method": METHOD,
            "hash_threshold": hash_threshold,
            "cosine_threshold": cosine_threshold,
            "seed": seed,
        },
        counts=_counts(found, exact, by_hash, by_cosine, len(fs), len(hashed)),
        clusters=[_cluster_dict(c, fs) for c in found],
        probes=probe_results,
        neighbourhood=around,
        exclusions=exclusions.build(found, ids, patients).to_json(),
        notes=notes,
        plots=[],
        figures=None,
        timing={
            "hashes_computed": computed,
            "hash_seconds": round(hash_seconds, 2),
            "total_seconds": round(time.perf_counter() - started, 2),
        },
    )


def _counts(found, exact, by_hash, by_cosine, rows: int, hashed: int) -> dict:
    return {
        "rows": rows,
        "hashed_rows": hashed,
        "pairs": {"exact": len(exact), "phash": len(by_hash), "cosine": len(by_cosine)},
        "clusters": len(found),
        "rows_in_clusters": sum(len(c.rows) for c in found),
        "clusters_by_method": {
            m: sum(m in c.methods for c in found) for m in ("exact", "phash", "cosine")
        },
        "label_conflicts": sum("label" in c.conflicts for c in found),
        "patient_conflicts": sum("patient_id" in c.conflicts for c in found),
    }


def _cluster_dict(c: duplicates.Cluster, fs: FeatureSet) -> ClusterReport:
    return ClusterReport(
        size=len(c.rows),
        methods=sorted(c.methods),
        min_hash_distance=c.min_hash_distance,
        max_cosine=None if c.max_cosine is None else round(c.max_cosine, 4),
        conflicts=c.conflicts,
        members=[{k: str(fs.rows[k][r]) for k in MEMBER_COLUMNS} for r in c.rows],
    )
