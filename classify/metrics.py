"""The metrics table: each metric is one entry, a vectorised function of confusion matrices and
one-vs-rest AUCs, that the CV summary, the JSON, the terminal report and the plots all read.

Confusion matrices have shape ``(..., k, k)`` (rows: true class, columns: predicted class), so the
same function scores one matrix, a stack of per-fold matrices, or a batch of bootstrap replicates.
Adding a metric is one ``register(Metric(...))``.
A ratio whose denominator is zero (e.g. precision of a class never predicted) is NaN and is left
out of means. ROC AUC is computed from ranks (Mann-Whitney U) so that bootstrap replicates, which
only re-weight rows, cost one cumulative sum instead of one scikit-learn call each.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TypedDict

import numpy as np

from cxr.classify.settings import OPERATING_POINT, REPLICATES
from cxr.errors import CxrError

BOOTSTRAP_CHUNK = 200
MEMO_BYTES = 64 << 20  # the latest rows' bootstrap draws kept in memory, at most
ECE_BINS = 10
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


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _nanmean(values: np.ndarray, axis=None) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slice -> NaN, on purpose
        return np.nanmean(values, axis=axis)


def _counts(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per class true positives, false negatives, false positives, true negatives."""
    cm = np.asarray(cm, dtype=float)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    fn = cm.sum(axis=-1) - tp
    fp = cm.sum(axis=-2) - tp
    tn = cm.sum(axis=(-2, -1))[..., None] - tp - fn - fp
    return tp, fn, fp, tn


def sensitivity(cm: np.ndarray) -> np.ndarray:
    """Recall per class: TP / (TP + FN)."""
    tp, fn, _, _ = _counts(cm)
    return _ratio(tp, tp + fn)


def specificity(cm: np.ndarray) -> np.ndarray:
    """Per class (one-vs-rest): TN / (TN + FP)."""
    _, _, fp, tn = _counts(cm)
    return _ratio(tn, tn + fp)


def precision(cm: np.ndarray) -> np.ndarray:
    """Positive predictive value per class: TP / (TP + FP)."""
    tp, _, fp, _ = _counts(cm)
    return _ratio(tp, tp + fp)


def f1(cm: np.ndarray) -> np.ndarray:
    """Per class: 2 TP / (2 TP + FP + FN)."""
    tp, fn, fp, _ = _counts(cm)
    return _ratio(2 * tp, 2 * tp + fp + fn)


def accuracy(cm: np.ndarray) -> np.ndarray:
    cm = np.asarray(cm, dtype=float)
    return _ratio(np.trace(cm, axis1=-2, axis2=-1), cm.sum(axis=(-2, -1)))


def balanced_accuracy(cm: np.ndarray) -> np.ndarray:
    """Mean recall over the classes present (as scikit-learn's balanced_accuracy_score)."""
    return _nanmean(sensitivity(cm), axis=-1)


def macro_f1(cm: np.ndarray) -> np.ndarray:
    """Mean F1 over the classes present in the true labels (as balanced accuracy averages).

    scikit-learn also averages a class that is only predicted (its F1 is then 0). On a test set
    without some class that makes the value hinge on whether any row happens to be called that
    class, and its bootstrap interval split in two.
    """
    tp, fn, _, _ = _counts(cm)
    return _nanmean(np.where(tp + fn > 0, f1(cm), np.nan), axis=-1)


class Outcomes:
    """What metrics are computed from: predictions of one set of rows, or with row weights
    ``(B, n)`` of B bootstrap replicates at once. Each quantity is computed when a metric first
    asks for it, so comparing results on one metric costs only what that metric needs."""

    def __init__(
        self,
        y: np.ndarray,
        proba: np.ndarray,
        weights: np.ndarray | None = None,
        *,
        operating_point: float = OPERATING_POINT,
    ):
        self.y, self.proba, self.weights = np.asarray(y), np.asarray(proba), weights
        self.operating_point = operating_point
        self.pred = np.argmax(self.proba, axis=1)

    @cached_property
    def cm(self) -> np.ndarray:
        """(..., k, k) confusion matrices."""
        return confusion(self.y, self.pred, self.proba.shape[1], self.weights)

    @cached_property
    def auc(self) -> np.ndarray:
        """(..., k) one-vs-rest ROC AUC per class."""
        return roc_auc_per_class(self.y, self.proba, self.weights)

    @cached_property
    def brier(self) -> np.ndarray:
        """(...) multi-class Brier score: the mean over rows of sum_c (p_c - [y = c])^2."""
        k = self.proba.shape[1]
        return self._mean(np.sum((self.proba - np.eye(k)[self.y]) ** 2, axis=1))

    @cached_property
    def ece(self) -> np.ndarray:
        """(...) top-label expected calibration error over ECE_BINS equal-width bins."""
        n = len(self.y)
        confidence = self.proba[np.arange(n), self.pred]
        bins = np.minimum((confidence * ECE_BINS).astype(int), ECE_BINS - 1)
        gaps = np.zeros((n, ECE_BINS))
        gaps[np.arange(n), bins] = (self.pred == self.y) - confidence
        if self.weights is None:
            return np.asarray(np.abs(gaps.sum(axis=0)).sum() / max(n, 1))
        total = np.maximum(self.weights.sum(axis=1), 1e-12)
        return np.abs(self.weights @ gaps).sum(axis=1) / total

    @cached_property
    def _operating_points(self) -> tuple[np.ndarray, np.ndarray]:
        return operating_points(self.y, self.proba, self.operating_point, self.weights)

    @property
    def sens_at_spec(self) -> np.ndarray:
        """(..., k) best sensitivity with specificity >= the operating point."""
        return self._operating_points[0]

    @property
    def spec_at_sens(self) -> np.ndarray:
        """(..., k) best specificity with sensitivity >= the operating point."""
        return self._operating_points[1]

    def _mean(self, per_row: np.ndarray) -> np.ndarray:
        if self.weights is None:
            return np.asarray(per_row.mean() if len(per_row) else np.nan)
        return self.weights @ per_row / np.maximum(self.weights.sum(axis=1), 1e-12)


@dataclass(frozen=True)
class Metric:
    """One row of the metrics table.

    ``fn`` maps Outcomes to ``(...)`` for an overall metric or ``(..., k)`` for a per-class one;
    ``name`` is the JSON key, ``label`` what people read in tables and plots (``{op}`` in it is
    replaced by the operating point). ``summary``: a column of the terminal's summary table
    (every metric is in the JSON); ``higher_is_better`` orders results when comparing them.
    """

    name: str
    label: str
    fn: Callable[[Outcomes], np.ndarray]
    per_class: bool = False
    summary: bool = True
    higher_is_better: bool = True

    def title(self, operating_point: float) -> str:
        return self.label.format(op=f"{100 * operating_point:g}%")


METRICS: list[Metric] = []


def register(metric: Metric) -> Metric:
    """Add a metric to every report; names are unique per scope (overall / per class)."""
    if metric.name == "per_class" or any(
        m.name == metric.name and m.per_class == metric.per_class for m in METRICS
    ):
        raise ValueError(f"a metric named {metric.name!r} is already registered")
    METRICS.append(metric)
    return metric


def overall_metrics() -> list[Metric]:
    return [m for m in METRICS if not m.per_class]


def per_class_metrics() -> list[Metric]:
    return [m for m in METRICS if m.per_class]


def metric_title(name: str, operating_point: float, *, per_class: bool = False) -> str:
    """A metric's JSON key as people say it (``sens_at_spec`` -> ``sens. @ 95% spec.``); a key
    the table does not know is shown as it is."""
    found = (m for m in METRICS if m.name == name and m.per_class == per_class)
    metric = next(found, None)
    return name if metric is None else metric.title(operating_point)


def overall_metric(name: str) -> Metric:
    """An overall metric by name (ValueError naming the choices)."""
    for m in overall_metrics():
        if m.name == name:
            return m
    choices = ", ".join(m.name for m in overall_metrics())
    raise ValueError(f"unknown metric {name!r}; choose from {choices}")


for _entry in (
    Metric("accuracy", "accuracy", lambda o: accuracy(o.cm)),
    Metric("balanced_accuracy", "bal. accuracy", lambda o: balanced_accuracy(o.cm)),
    Metric("macro_f1", "macro-F1", lambda o: macro_f1(o.cm)),
    Metric("roc_auc", "ROC AUC", lambda o: _nanmean(o.auc, axis=-1)),
    Metric("brier", "Brier score", lambda o: o.brier, summary=False, higher_is_better=False),
    Metric("ece", "ECE", lambda o: o.ece, summary=False, higher_is_better=False),
    Metric("sensitivity", "sensitivity", lambda o: sensitivity(o.cm), per_class=True),
    Metric("specificity", "specificity", lambda o: specificity(o.cm), per_class=True),
    Metric("precision", "precision (PPV)", lambda o: precision(o.cm), per_class=True),
    Metric("f1", "F1", lambda o: f1(o.cm), per_class=True),
    Metric("roc_auc", "ROC AUC", lambda o: o.auc, per_class=True),
    Metric("sens_at_spec", "sens. @ {op} spec.", lambda o: o.sens_at_spec, per_class=True),
    Metric("spec_at_sens", "spec. @ {op} sens.", lambda o: o.spec_at_sens, per_class=True),
):
    register(_entry)


def confusion(
    y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, weights: np.ndarray | None = None
) -> np.ndarray:
    """Confusion matrix ``(k, k)``, or ``(B, k, k)`` for a batch of row weights ``(B, n)``."""
    cell = np.asarray(y_true) * n_classes + np.asarray(y_pred)
    if weights is None:
        return np.bincount(cell, minlength=n_classes**2).reshape(n_classes, n_classes)
    # In the weights' own dtype: float32 bootstrap counts would otherwise be copied to float64
    # on every call (most of a warm re-run's comparisons); their sums are whole and exact.
    weights = np.asarray(weights)
    onehot = np.zeros((len(cell), n_classes**2), dtype=np.result_type(weights, np.float32))
    onehot[np.arange(len(cell)), cell] = 1.0
    return (weights @ onehot).astype(float).reshape(-1, n_classes, n_classes)


def _batch(weights: np.ndarray | None, n: int) -> np.ndarray:
    """Row weights as a float batch ``(B, n)``. Bootstrap weights are whole counts, which float32
    sums exactly up to 2**24: half the memory traffic of the cumulative sums that dominate."""
    if weights is None:
        return np.ones((1, n), dtype=np.float32)
    weights = np.asarray(weights)
    return weights if np.issubdtype(weights.dtype, np.floating) else weights.astype(float)


def roc_auc_per_class(
    y_true: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """One-vs-rest ROC AUC per class ``(k,)``, or ``(B, k)`` for row weights ``(B, n)``.

    AUC = P(score of a positive > score of a negative) + 0.5 P(tie), counted with weights; a class
    with no positive or no negative rows gets NaN.
    """
    y_true = np.asarray(y_true)
    batch = _batch(weights, len(y_true))
    out = np.full((len(batch), scores.shape[1]), np.nan)
    for c in range(scores.shape[1]):
        order = np.argsort(scores[:, c], kind="stable")
        s = scores[order, c]
        positive = y_true[order] == c
        # Cumulative weights of the negatives only, indexed by how many negatives precede a row:
        # half the memory traffic of masking and summing all rows.
        negatives_before = np.r_[0, np.cumsum(~positive)]
        below = np.zeros((len(batch), int(negatives_before[-1]) + 1), dtype=batch.dtype)
        np.cumsum(batch[:, order[~positive]], axis=1, out=below[:, 1:])
        first = np.r_[True, s[1:] != s[:-1]]  # rows with equal scores form one tie block
        block = np.cumsum(first) - 1
        starts = np.flatnonzero(first)
        start, end = starts[block], np.r_[starts[1:], len(s)][block]
        pos = np.flatnonzero(positive)
        lo, hi = below[:, negatives_before[start[pos]]], below[:, negatives_before[end[pos]]]
        w_pos = batch[:, order[pos]]
        numerator = (w_pos * (lo + 0.5 * (hi - lo))).sum(axis=1, dtype=float)
        n_pos, n_neg = w_pos.sum(axis=1, dtype=float), below[:, -1].astype(float)
        out[:, c] = _ratio(numerator, n_pos * n_neg)
    return out[0] if weights is None else out


def roc_auc(y_true: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None):
    """Macro one-vs-rest ROC AUC (as scikit-learn's ``roc_auc_score(multi_class="ovr")``)."""
    return _nanmean(roc_auc_per_class(y_true, scores, weights), axis=-1)


def operating_points(
    y_true: np.ndarray, scores: np.ndarray, target: float, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per class (one-vs-rest): the best sensitivity whose specificity is >= ``target``, and the
    best specificity whose sensitivity is >= ``target``, over every threshold on the scores.

    ``(k,)`` each, or ``(B, k)`` for row weights ``(B, n)``; NaN for a class without positive or
    without negative rows (one side of the trade-off is then undefined). Thresholds sit between
    distinct scores, so tied rows move together.
    """
    y_true = np.asarray(y_true)
    batch = _batch(weights, len(y_true))
    k = scores.shape[1]
    sens = np.full((len(batch), k), np.nan)
    spec = np.full((len(batch), k), np.nan)
    for c in range(k):
        order = np.argsort(-scores[:, c], kind="stable")
        s = scores[order, c]
        ends = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]  # last row of each tie block
        positive = y_true[order] == c
        # Each side summed over its own rows only, read at each block's end by how many of the
        # side's rows come up to it.
        tp = np.zeros((len(batch), len(ends) + 1))
        fp = np.zeros((len(batch), len(ends) + 1))
        for side, out in ((positive, tp), (~positive, fp)):
            mine = np.zeros((len(batch), int(side.sum()) + 1), dtype=batch.dtype)
            np.cumsum(batch[:, order[side]], axis=1, out=mine[:, 1:])
            out[:, 1:] = mine[:, np.cumsum(side)[ends]]
        n_pos, n_neg = tp[:, -1:], fp[:, -1:]
        slack = 1e-9 * (n_pos + n_neg)
        # tp and fp grow along the thresholds: the last allowed one is the best.
        last = np.sum(fp <= (1 - target) * n_neg + slack, axis=1) - 1
        first = np.minimum(np.sum(tp < target * n_pos - slack, axis=1), tp.shape[1] - 1)
        rows = np.arange(len(batch))
        sens[:, c] = np.where(n_neg[:, 0] > 0, _ratio(tp[rows, last], n_pos[:, 0]), np.nan)
        spec[:, c] = np.where(n_pos[:, 0] > 0, 1 - _ratio(fp[rows, first], n_neg[:, 0]), np.nan)
    return (sens[0], spec[0]) if weights is None else (sens, spec)


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
    return {m: np.asarray(m.fn(o), dtype=float) for m in METRICS}


def _number(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def _summary(folds: np.ndarray, pooled: np.ndarray, boot: np.ndarray, keep_folds: bool) -> Stat:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        std = np.nanstd(folds, ddof=1) if np.sum(np.isfinite(folds)) > 1 else np.nan
        lo, hi = np.nanpercentile(boot, [2.5, 97.5]) if np.isfinite(boot).any() else (np.nan,) * 2
    out = Stat(
        mean=_number(_nanmean(folds)),
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
    per_fold = {m: np.stack([np.asarray(m.fn(o), dtype=float) for o in folds]) for m in METRICS}
    pooled = _all_metrics(bootstrap.outcomes(y, proba))
    chunks = [_all_metrics(bootstrap.outcomes(y, proba, w)) for w in bootstrap.weights(units, y=y)]
    boot = {m: np.concatenate([c[m] for c in chunks]) for m in METRICS}
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
