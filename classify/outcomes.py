"""What metrics are computed from: confusion matrices, one-vs-rest ROC AUC by ranks, the operating
points, and `Outcomes`, the predictions of one set of rows (or of B bootstrap replicates at once).

Confusion matrices have shape ``(..., k, k)`` (rows: true class, columns: predicted class), so the
same function scores one matrix, a stack of per-fold matrices, or a batch of bootstrap replicates.
A ratio whose denominator is zero (e.g. precision of a class never predicted) is NaN and is left
out of means. ROC AUC is computed from ranks (Mann-Whitney U) so that bootstrap replicates, which
only re-weight rows, cost one cumulative sum instead of one scikit-learn call each.
"""

from __future__ import annotations

import warnings
from functools import cached_property

import numpy as np

from cxr.classify.settings import OPERATING_POINT

ECE_BINS = 10


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def nanmean(values: np.ndarray, axis=None) -> np.ndarray:
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
    return nanmean(sensitivity(cm), axis=-1)


def macro_f1(cm: np.ndarray) -> np.ndarray:
    """Mean F1 over the classes present in the true labels (as balanced accuracy averages).

    scikit-learn also averages a class that is only predicted (its F1 is then 0). On a test set
    without some class that makes the value hinge on whether any row happens to be called that
    class, and its bootstrap interval split in two.
    """
    tp, fn, _, _ = _counts(cm)
    return nanmean(np.where(tp + fn > 0, f1(cm), np.nan), axis=-1)


def macro_roc_auc(auc: np.ndarray) -> np.ndarray:
    """Mean one-vs-rest AUC over the classes that have one (a class without both labels is NaN)."""
    return nanmean(auc, axis=-1)


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
    return macro_roc_auc(roc_auc_per_class(y_true, scores, weights))


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
