"""Scores of cross-validated predictions: every metric of the table (`cxr.classify.metric_table`)
per fold, pooled, and with its bootstrap interval, the replicates resampling patients (or images).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypedDict

import numpy as np

from cxr.classify import metric_table  # its METRICS read when scoring: a later register() counts
from cxr.classify.metric_table import Metric, overall_metrics, per_class_metrics
from cxr.classify.outcomes import Outcomes, confusion, nanmean
from cxr.classify.settings import OPERATING_POINT, REPLICATES
from cxr.errors import CxrError

BOOTSTRAP_CHUNK = 200
MEMO_BYTES = 64 << 20  # the latest rows' bootstrap draws kept in memory, at most
MAX_REPLICATES = 100_000


@dataclass(frozen=True)
class Bootstrap:
    """How every interval and paired comparison is resampled: replicates, their seed, and the
    operating point at which the fixed-specificity (sensitivity) metrics are read."""

    replicates: int = REPLICATES
    seed: int = 0
    operating_point: float = OPERATING_POINT

    def __post_init__(self) -> None:
        if not 1 <= self.replicates <= MAX_REPLICATES:
            raise CxrError(f"`bootstrap` must be 1..{MAX_REPLICATES:,} replicates")
        if not 0 < self.operating_point < 1:
            raise CxrError(f"`operating_point` must be between 0 and 1, e.g. {OPERATING_POINT}")
        if self.seed < 0:
            raise CxrError("`seed` must be >= 0")

    def weights(self, units: np.ndarray, y: np.ndarray | None = None) -> Iterator[np.ndarray]:
        """`bootstrap_weights` of these settings; the draws of the latest rows are kept (when
        small), since every paired comparison of a group resamples the same rows again."""
        key = (self, _digest(units), None if y is None else _digest(y))
        if _latest_draws is not None and _latest_draws[0] == key:
            return iter(_latest_draws[1])
        draws = bootstrap_weights(units, self.replicates, self.seed, y=y)
        if self.replicates * len(units) * 4 > MEMO_BYTES:
            return draws
        kept = list(draws)
        for chunk in kept:
            chunk.flags.writeable = False  # shared by every comparison on these rows
        _remember((key, kept))
        return iter(kept)

    def outcomes(self, y: np.ndarray, proba: np.ndarray, weights=None) -> Outcomes:
        return Outcomes(y, proba, weights, operating_point=self.operating_point)


class Stat(TypedDict, total=False):
    """One metric of one result, as the JSON holds it (None where undefined)."""

    mean: float | None  # over folds (ddof=1 for std)
    std: float | None
    ci95: list[float | None]  # bootstrap percentile interval of the pooled value
    pooled: float | None  # of all out-of-fold predictions together
    folds: list[float | None]  # overall metrics only


class Scores(TypedDict):
    """``summarize``'s output: overall metrics by name, plus ``per_class`` {class: {name: Stat}}."""

    metrics: dict
    confusion_matrix: list[list[int]]


_latest_draws: tuple[tuple, list[np.ndarray]] | None = None


def _remember(draws: tuple[tuple, list[np.ndarray]]) -> None:
    global _latest_draws
    _latest_draws = draws


def _digest(values: np.ndarray) -> str:
    a = np.asarray(values)
    data = a.tobytes() if a.dtype != object else "\0".join(map(str, a.tolist())).encode()
    return hashlib.sha256(f"{a.dtype.str}{a.shape}".encode() + data).hexdigest()


def bootstrap_weights(
    units: np.ndarray,
    n_boot: int,
    seed: int,
    chunk: int = BOOTSTRAP_CHUNK,
    y: np.ndarray | None = None,
) -> Iterator[np.ndarray]:
    """Row weights ``(b, n)`` of a bootstrap over units (patients, or images): a unit drawn m
    times weighs m on all its rows. Yields chunks to bound memory; seeded, so reproducible.

    With the rows' classes ``y`` the draw is stratified: units are resampled within groups of
    units with the same classes, so every replicate holds every class the rows hold. Otherwise
    replicates that lose a rare class average over fewer classes (balanced accuracy, macro
    metrics) and the interval splits in two.
    """
    codes, inverse = np.unique(units, return_inverse=True)
    if y is None:
        strata = np.zeros(len(codes), dtype=int)
    else:
        classes_of: list[frozenset[int]] = [frozenset() for _ in codes]
        for code, label in set(zip(inverse.tolist(), np.asarray(y).tolist(), strict=True)):
            classes_of[code] = classes_of[code] | {label}
        names = sorted(set(classes_of), key=sorted)
        strata = np.asarray([names.index(c) for c in classes_of])
    members = [np.flatnonzero(strata == s) for s in np.unique(strata)]
    rng = np.random.default_rng(seed)
    for done in range(0, n_boot, chunk):
        size = min(chunk, n_boot - done)
        counts = np.zeros((size, len(codes)), dtype=np.int64)
        for group in members:
            p = np.full(len(group), 1.0 / len(group))
            counts[:, group] = rng.multinomial(len(group), p, size=size)
        yield counts[:, inverse].astype(np.float32)  # whole counts: exact, and half of float64


def _all_metrics(o: Outcomes) -> dict[Metric, np.ndarray]:
    """Every registered metric: ``(...)`` overall or ``(..., k)`` per class."""
    return {m: np.asarray(m.fn(o), dtype=float) for m in metric_table.METRICS}


def _number(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def _summary(folds: np.ndarray, pooled: np.ndarray, boot: np.ndarray, keep_folds: bool) -> Stat:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        std = np.nanstd(folds, ddof=1) if np.sum(np.isfinite(folds)) > 1 else np.nan
        lo, hi = np.nanpercentile(boot, [2.5, 97.5]) if np.isfinite(boot).any() else (np.nan,) * 2
    out = Stat(
        mean=_number(nanmean(folds)),
        std=_number(std),
        ci95=[_number(lo), _number(hi)],
        pooled=_number(pooled),
    )
    if keep_folds:
        out["folds"] = [_number(v) for v in folds]
    return out


def summarize(
    y: np.ndarray,
    proba: np.ndarray,
    fold: np.ndarray,
    units: np.ndarray,
    classes: Sequence[str],
    bootstrap: Bootstrap,
) -> Scores:
    """All metrics of pooled out-of-fold predictions.

    ``mean``/``std`` (ddof=1) are over folds; ``pooled`` is the metric of all out-of-fold
    predictions together; ``ci95`` is the 2.5-97.5 percentile interval of the pooled metric over
    the bootstrap's replicates, which resample ``units`` (patients, or images) with replacement.
    """
    k = len(classes)
    folds = [bootstrap.outcomes(y[fold == f], proba[fold == f]) for f in np.unique(fold)]
    per_fold = {
        m: np.stack([np.asarray(m.fn(o), dtype=float) for o in folds]) for m in metric_table.METRICS
    }
    pooled = _all_metrics(bootstrap.outcomes(y, proba))
    chunks = [_all_metrics(bootstrap.outcomes(y, proba, w)) for w in bootstrap.weights(units, y=y)]
    boot = {m: np.concatenate([c[m] for c in chunks]) for m in metric_table.METRICS}
    metrics: dict = {
        m.name: _summary(per_fold[m], pooled[m], boot[m], keep_folds=True)
        for m in overall_metrics()
    }
    metrics["per_class"] = {
        cls: {
            m.name: _summary(per_fold[m][:, i], pooled[m][i], boot[m][:, i], keep_folds=False)
            for m in per_class_metrics()
        }
        for i, cls in enumerate(classes)
    }
    cm = confusion(y, np.argmax(proba, axis=1), k)
    return Scores(metrics=metrics, confusion_matrix=cm.astype(int).tolist())
