"""Paired comparisons: can a result be told apart from the best one on the same rows?

Two heads scored on the same images are correlated: their intervals overlap even when one is
reliably better. The test used here is a **paired bootstrap over patients**: the rows both
results predicted (matched by image and repeat) are resampled by patient (stratified by class,
as every interval of the report), with the same draws for both, and the difference of the
chosen metric is recomputed on every replicate. The 95%
percentile interval of that difference, and a two-sided bootstrap p-value, say whether the
result is distinguishable from the best; "indistinguishable" means the interval contains 0.
(The corrected resampled t-test of Nadeau & Bengio needs several folds; this works the same for
cross-validation, a held-out source and an external test set.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict

import numpy as np

from cxr.classify.metric_table import Metric
from cxr.classify.metrics import Bootstrap
from cxr.classify.settings import flag

CACHE_VERSION = 1  # bump when a change here changes a comparison (the fit cache keeps them)


class Comparison(TypedDict):
    metric: str
    best: str  # "backbone + head" of the best result in the group ("" if none is defined)
    is_best: bool
    difference: float | None  # this result minus the best, on the paired rows
    ci95: list[float | None]
    p: float | None  # two-sided bootstrap p-value of "no difference"
    indistinguishable: bool  # the interval contains 0 (the best is indistinguishable from itself)
    n_paired: int  # rows both results predicted
    unit: str  # what the bootstrap resamples


@dataclass(frozen=True)
class Scored:
    """What the comparison needs of one result: its test predictions with matching keys."""

    name: str
    keys: np.ndarray  # one per prediction: image path and occurrence (repeat)
    y: np.ndarray
    proba: np.ndarray
    units: np.ndarray  # bootstrap unit of each prediction (patient id, or the key)
    value: float | None  # the metric on all of the result's own rows (pooled)


def row_keys(paths: np.ndarray) -> np.ndarray:
    """``path#n`` for the n-th prediction of an image (repeats predict an image n times)."""
    seen: dict[str, int] = {}
    keys = []
    for path in paths.tolist():
        seen[path] = seen.get(path, 0) + 1
        keys.append(f"{path}#{seen[path]}")
    return np.asarray(keys, dtype=object)


def paired_difference(
    a: Scored,
    b: Scored,
    metric: Metric,
    bootstrap: Bootstrap,
) -> tuple[float | None, list[float | None], float | None, int]:
    """``metric(a) - metric(b)`` on the rows both predicted: point, 95% CI, p-value, rows."""
    _, ia, ib = np.intersect1d(a.keys, b.keys, return_indices=True)
    same = a.y[ia] == b.y[ib]
    ia, ib = ia[same], ib[same]
    if len(ia) == 0:
        return None, [None, None], None, 0
    y, units = a.y[ia], a.units[ia]
    draws = bootstrap.weights(units, y=y)

    def value(scored: Scored, rows: np.ndarray, weights=None) -> np.ndarray:
        return np.asarray(metric.fn(bootstrap.outcomes(y, scored.proba[rows], weights)), float)

    point = float(value(a, ia) - value(b, ib))
    diffs = np.concatenate([value(a, ia, w) - value(b, ib, w) for w in draws])
    diffs = diffs[np.isfinite(diffs)]
    if not np.isfinite(point) or not len(diffs):
        return None, [None, None], None, len(ia)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    p = min(1.0, 2 * min(np.mean(diffs <= 0), np.mean(diffs >= 0)))
    return point, [float(lo), float(hi)], float(p), len(ia)


def caution(others: Sequence[tuple[str, bool]], metric: str, where: str = "") -> str:
    """What picking the best result over ``others`` (name, indistinguishable from the best) on
    the same rows means; ``where`` names those rows when a run has several groups."""
    rows = f"the same test rows ({where})" if where else "the same test rows"
    text = (
        f"caution: the best of {len(others) + 1} results picked on {rows}; its "
        f"{metric} is optimistic as an estimate for new data (selection), "
    )
    tied = [name for name, indistinguishable in others if indistinguishable]
    if tied:
        more = f" and {len(tied) - 4} more" if len(tied) > 4 else ""
        text += f"and it is not distinguishable from {', '.join(tied[:4])}{more} (≈ above)."
    else:
        text += "though every other result is distinguishably worse."
    return (
        text
        + f" Confirm a choice on an external test set ({flag('test_where')}) before reporting it."
    )


def compare(
    items: Sequence[Scored],
    metric: Metric,
    bootstrap: Bootstrap,
    *,
    unit: str,
) -> list[Comparison]:
    """Each result against the best of the group by ``metric`` (in the order of ``items``)."""
    sign = 1.0 if metric.higher_is_better else -1.0
    values = {id(i): i.value for i in items if i.value is not None}
    best = max(
        (i for i in items if id(i) in values), key=lambda i: sign * values[id(i)], default=None
    )
    out = []
    for item in items:
        diff: float | None
        ci: list[float | None]
        p: float | None
        if best is None:  # the metric is undefined for every result (e.g. AUC of one class)
            diff, ci, p, n = None, [None, None], None, 0
        elif item is best:
            diff, ci, p, n = 0.0, [0.0, 0.0], 1.0, len(item.keys)
        else:
            diff, ci, p, n = paired_difference(item, best, metric, bootstrap)
        out.append(
            Comparison(
                metric=metric.name,
                best=best.name if best is not None else "",
                is_best=item is best,
                difference=diff,
                ci95=ci,
                p=p,
                indistinguishable=bool(
                    ci[0] is not None and ci[1] is not None and ci[0] <= 0 <= ci[1]
                ),
                n_paired=n,
                unit=unit,
            )
        )
    return out
