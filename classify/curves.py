"""Learning curves: how a head scores when trained on fewer images (`--train-sizes`).

The source study asks for "the maximum accuracy from low-volume data sets". With embeddings
cached, the answer costs only head fits: each training split is subsampled to a size, the head
is fitted on the subsample and scored on the split's untouched test rows.

Subsamples are **stratified** (a size is images per class, or a fraction of each class),
**patient-grouped** (whole patients are drawn until the class has its images, so a patient's
films never straddle the subsample's edge) and **nested** (for one seed, a smaller subsample is
inside every larger one: curves move because of size, not because of which patients were drawn).
Several seeds per size average out the draw; the 95% CI is a bootstrap over test patients of the
seed-averaged metric, as every interval of the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict

import numpy as np

from cxr.classify.folds import Split, derive_seed
from cxr.classify.metric_table import Metric
from cxr.classify.metrics import Bootstrap
from cxr.classify.outcomes import sensitivity
from cxr.classify.predictions import OutOfFold
from cxr.classify.settings import DRAWS, MARGIN
from cxr.errors import CxrError

ALL = "all"


@dataclass(frozen=True)
class Size:
    """Images per class (``count``), a fraction of each class (``fraction``), or everything."""

    count: int | None = None
    fraction: float | None = None

    @property
    def label(self) -> str:
        if self.count is not None:
            return str(self.count)
        return ALL if self.fraction is None else f"{self.fraction:g}"

    @property
    def is_all(self) -> bool:
        return self.count is None and self.fraction is None


def parse_sizes(spec: str | Sequence[Size | int | float | str]) -> list[Size]:
    """``25,50,100,all`` (images per class) or ``0.1,0.25,0.5,all`` (fractions of each class),
    as the CLI's text or a Python list (``[25, 50, "all"]``, `Size` values); sorted, with
    ``all`` added when missing."""
    text = spec if isinstance(spec, str) else ",".join(map(str, spec))
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    sizes = [
        item if isinstance(item, Size) else _size(str(item).strip().lower(), text)
        for item in items
        if isinstance(item, Size) or str(item).strip()
    ]
    if not sizes:
        raise CxrError(f"`train_sizes` {text!r}: give sizes like 25,50,100,all")
    if not any(s.is_all for s in sizes):
        sizes.append(Size())  # the full-data score every size is measured against
    key = lambda s: (s.is_all, s.count if s.count is not None else s.fraction)  # noqa: E731
    return sorted(dict.fromkeys(sizes), key=key)


def _size(part: str, text: str) -> Size:
    try:
        if part == ALL:
            return Size()
        if part.isdigit() and int(part) > 0:
            return Size(count=int(part))
        if 0 < float(part) < 1:
            return Size(fraction=float(part))
    except ValueError:
        pass
    raise CxrError(
        f"`train_sizes` {text!r}: {part!r} is neither a count per class (25), a fraction "
        "(0.25) nor 'all'"
    )


def subsample(
    train: np.ndarray, y: np.ndarray, groups: np.ndarray, size: Size, seed: int
) -> np.ndarray:
    """Rows of ``train`` for one size: per class, whole patients in one seeded order until the
    class has ``size`` images (all of them if it has fewer). The order depends on the seed only,
    so the rows for a smaller size are a subset of those for a larger one."""
    if size.is_all:
        return train
    rng = np.random.default_rng(seed)
    patients = np.unique(groups[train])
    rank = dict(zip(patients.tolist(), rng.permutation(len(patients)).tolist(), strict=True))
    keep = []
    for label in np.unique(y[train]):
        rows = train[y[train] == label]
        wanted = size.count if size.count is not None else round((size.fraction or 0) * len(rows))
        order = np.argsort([rank[g] for g in groups[rows].tolist()], kind="stable")
        rows = rows[order]
        # every row of a patient is taken with the patient's first row
        first = np.r_[True, groups[rows][1:] != groups[rows][:-1]]
        starts = np.flatnonzero(first)
        taken = np.searchsorted(starts, max(wanted, 1), side="left")
        end = starts[taken] if taken < len(starts) else len(rows)
        keep.append(rows[: max(end, 1)])
    return np.sort(np.concatenate(keep))


@dataclass(frozen=True)
class CurveSplit:
    """Which size and draw a learning-curve split belongs to."""

    size: Size
    draw: int
    split: Split
    origin: int  # index of the split it subsamples


def curve_splits(
    splits: Sequence[Split],
    y: np.ndarray,
    groups: np.ndarray,
    sizes: Sequence[Size],
    seed: int,
    draws: int = DRAWS,
) -> list[CurveSplit]:
    """Every (split, size, draw) as a split of its own; ``all`` needs one draw."""
    out = []
    for origin, split in enumerate(splits):
        for draw in range(draws):
            draw_seed = derive_seed(seed, split.repeat, split.fold, 1000 + draw)
            for size in sizes:
                if size.is_all and draw > 0:
                    continue
                train = subsample(split.train, y, groups, size, draw_seed)
                name = f"{split.label}, {size.label} per class, draw {draw + 1}"
                sub = Split(split.repeat, split.fold, train, split.test, name)
                out.append(CurveSplit(size, draw, sub, origin))
    return out


class CurvePoint(TypedDict):
    size: str  # images per class, a fraction, or "all"
    train_per_class: dict[str, float]  # mean training images per class over splits and draws
    draws: int
    value: float | None  # the metric, pooled over test rows, averaged over draws
    ci95: list[float | None]
    sensitivity: dict[str, dict]  # class -> {"value", "ci95"}


class Curve(TypedDict):
    backbone: str
    head: str
    inputs: str
    held_out: str | None
    task: str
    metric: str
    points: list[CurvePoint]
    margin: float
    within_margin_from: str | None  # smallest size within ``margin`` of the full-data score


def curve(
    oof: OutOfFold,
    plan: Sequence[CurveSplit],
    indices: Sequence[int],
    y: np.ndarray,
    classes: Sequence[str],
    units: np.ndarray,
    metric: Metric,
    bootstrap: Bootstrap,
    *,
    margin: float = MARGIN,
) -> tuple[list[CurvePoint], str | None]:
    """Points of one (backbone, head) curve from the out-of-fold predictions of its splits.

    ``indices[i]`` is the index of ``plan[i]`` in the splits ``oof`` was computed on.
    """
    points = []
    for size in dict.fromkeys(c.size for c in plan):
        mine = [(c, i) for c, i in zip(plan, indices, strict=True) if c.size == size]
        draws = sorted({c.draw for c, _ in mine})
        per_draw = []
        for draw in draws:
            part = oof.only([i for c, i in mine if c.draw == draw])
            order = np.argsort(part.row, kind="stable")  # the same row order for every draw
            per_draw.append((part.row[order], part.proba[order]))
        rows = per_draw[0][0]
        weights = list(bootstrap.weights(units[rows], y=y[rows]))
        values, boots, sens, sens_boot = [], [], [], []
        for _, proba in per_draw:
            o = bootstrap.outcomes(y[rows], proba)
            values.append(float(metric.fn(o)))
            sens.append(sensitivity(o.cm))
            chunks = [bootstrap.outcomes(y[rows], proba, w) for w in weights]
            boots.append(np.concatenate([np.asarray(metric.fn(c), dtype=float) for c in chunks]))
            sens_boot.append(np.concatenate([sensitivity(c.cm) for c in chunks]))
        value, boot = float(np.mean(values)), np.mean(boots, axis=0)
        sens_value, sens_boots = np.mean(sens, axis=0), np.mean(sens_boot, axis=0)
        counts = {
            cls: float(np.mean([np.sum(y[c.split.train] == k) for c, _ in mine]))
            for k, cls in enumerate(classes)
        }
        points.append(
            CurvePoint(
                size=size.label,
                train_per_class=counts,
                draws=len(draws),
                value=_finite(value),
                ci95=_interval(boot),
                sensitivity={
                    cls: {"value": _finite(sens_value[k]), "ci95": _interval(sens_boots[:, k])}
                    for k, cls in enumerate(classes)
                },
            )
        )
    return points, _within(points, metric, margin)


def _within(points: list[CurvePoint], metric: Metric, margin: float) -> str | None:
    full = points[-1]["value"]  # "all" sorts last
    if full is None:
        return None
    sign = 1.0 if metric.higher_is_better else -1.0
    for point in points:
        if point["value"] is not None and sign * (full - point["value"]) <= margin:
            return point["size"]
    return None


def _finite(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def _interval(values: np.ndarray) -> list[float | None]:
    values = values[np.isfinite(values)]
    if not len(values):
        return [None, None]
    lo, hi = np.percentile(values, [2.5, 97.5])
    return [float(lo), float(hi)]
