"""Confound warnings: does a metadata column (dataset, source, view, ...) predict the target?

If it does, a head can score by recognising the column instead of the disease, and
cross-validated scores say little about new hospitals. For every stored column of the task's
rows this measures two things, side by side with chance:

- Cramér's V of the column x class contingency table, bias-corrected (Bergsma 2013), 0 to 1;
- the balanced accuracy of predicting the class from the column alone (each value's majority
  class, learned on training folds: 5 stratified folds grouped by patient when ids are known).

A column warns when V >= CRAMERS_V_WARN (0.5, "strong" on the usual scale). Numeric columns with
many values (image width, age) are cut into quartiles; columns that look like identifiers (more
than MAX_VALUES values, or mostly unique) are skipped and named as such.

A column that refines the target is a finer label, not a confound: the diagnosis `finding`
(COVID-19, SARS, Streptococcus, ...) from which the label was made predicts the label perfectly,
as it must. It is recognised on the whole store, not on the task's rows (where a source can
look like that too, e.g. when every COVID-19 film comes from sources without other classes):
every value belongs to one target value, and the column is not a property of where films come
from (no `source` value spans two of its values: a site's attribute, such as its country or
its scanner, stays a confound). Named in ``asked`` (``--confounds``), it is measured anyway.
A source, or an attribute of it, that groups the task's rows exactly as the target does is no
copy of the target but the starkest confound of all: it is measured (and warns).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TypedDict

import numpy as np

from cxr.classify.folds import kfold
from cxr.classify.settings import TARGET, flag
from cxr.classify.tasks import TaskData

CACHE_VERSION = 1  # bump when a change here changes what `confounds` finds (the fit cache keeps it)
CRAMERS_V_WARN = 0.5
MAX_VALUES = 50
NUMERIC_BINS = 4
FOLDS = 5
NOT_METADATA = ("id", "path", "patient_id")
SOURCE = "source"  # the store's column naming where each film comes from


class Confound(TypedDict, total=False):
    column: str
    values: int  # distinct values compared (after binning)
    binned: bool  # numeric column cut into quartiles
    cramers_v: float
    balanced_accuracy: float  # of the column alone, cross-validated
    chance: float  # 1 / number of classes
    warn: bool
    table: dict[str, dict[str, int]]  # value -> class -> rows
    skipped: str  # why the column was not measured
    same_as: str  # an earlier column that splits the rows the same way (not repeated)
    refines: str  # the target this column is a finer version of (not measured, never warns)


def warnings(found: Sequence[Confound], target: str, held_out: str | None) -> list[str]:
    """The report's warning for each column that predicts the target (``held_out``: the column
    the run holds out, if any, which then needs no other test)."""
    lines = []
    for c in (c for c in found if c.get("warn")):
        twins = [t["column"] for t in found if t.get("same_as") == c["column"]]
        same = f" (and {', '.join(twins)}, which groups the rows the same way)" if twins else ""
        column = c["column"]
        test = (
            f"This run holds each {column} out."
            if held_out == column
            else f"Test it with the same command and {flag('leave_out')} {column}, or "
            f"`cxr audit {flag('probe')} {column}`."
        )
        lines.append(
            f"confound: {column}{same} predicts the {target} (Cramér's V {c['cramers_v']:.2f}; "
            f"the column alone gives balanced accuracy {c['balanced_accuracy']:.2f} vs "
            f"{c['chance']:.2f} by chance): a head can score by recognising {column}. {test}"
        )
    return lines


def finer_labels(found: Sequence[Confound]) -> list[str]:
    """The columns found to be finer versions of the target."""
    return [c["column"] for c in found if c.get("refines")]


def finer_note(found: Sequence[Confound]) -> str | None:
    """The one sentence that says which columns are finer labels, left out of the checks."""
    finer = finer_labels(found)
    if not finer:
        return None
    target = next(c["refines"] for c in found if c.get("refines"))
    names = ", ".join(finer)
    each = "each of their values" if len(finer) > 1 else "each of its values"
    return (
        f"{names} refine{'' if len(finer) > 1 else 's'} the {target} ({each} belongs to one "
        f"{target} in the whole store): a finer {target}, not a confound, so left out of the "
        f"confound checks ({flag('confounds')} {finer[0]} measures it anyway)"
    )


def strongest(found: Sequence[Confound], columns: Mapping[str, np.ndarray]) -> str | None:
    """The column the embedding map and the neighbour shares are about: the strongest confound
    measured (``found`` is strongest first), else the store's source when it varies."""
    measured = next((c["column"] for c in found if "cramers_v" in c), None)
    if measured is not None:
        return measured
    source = columns.get(SOURCE)
    return SOURCE if source is not None and len(set(source.tolist()) - {""}) > 1 else None


def refines(fine: np.ndarray, coarse: np.ndarray) -> bool:
    """Whether every value of ``fine`` goes with one value of ``coarse`` (a function of it)."""
    fine, coarse = np.asarray(fine, dtype=object), np.asarray(coarse, dtype=object)
    pairs = set(zip(fine.tolist(), coarse.tolist(), strict=True))
    return len(pairs) == len(set(fine.tolist()))


def _finer(column: str, target: str, store: Mapping[str, np.ndarray]) -> bool:
    """``column`` is categorical (few values, shared by many rows) and refines ``target`` on the
    whole store, and it is not an attribute of the source."""
    if column == SOURCE or column not in store or target not in store:
        return False
    values = store[column]
    distinct = len(set(values.tolist()))
    if distinct > MAX_VALUES or distinct > len(values) / 2 or not refines(values, store[target]):
        return False
    source = store.get(SOURCE)
    return source is None or not refines(source, values)


def confounds(
    data: TaskData,
    target: str = TARGET,
    seed: int = 0,
    *,
    store: Mapping[str, np.ndarray] | None = None,
    asked: Sequence[str] | None = None,
) -> list[Confound]:
    """Every metadata column measured against the task's classes, strongest first.

    ``store``: every column on all the store's rows (before --where and the task), where finer
    labels are recognised; ``asked``: columns named by the user, measured even if finer."""
    out: list[Confound] = []
    partitions: dict[bytes, str] = {}
    folds = _folds(data, seed)  # the same for every column: computed once
    if target in data.columns:  # a column grouping rows as the target does restates it
        partitions[_partition(data.column(target))] = target
    for column in data.columns:
        if column in NOT_METADATA or column == target:
            continue
        values, binned = _values(data.column(column))
        distinct = len(set(values.tolist()))
        if distinct < 2:
            continue
        if distinct > MAX_VALUES or distinct > len(values) / 2:
            out.append(Confound(column=column, values=distinct, skipped="identifier-like"))
            continue
        partition = _partition(values)
        finer = store is not None and not binned and _finer(column, target, store)
        twin = partitions.get(partition)
        if twin == target and (finer or store is None):  # a copy of the target, not a source
            out.append(Confound(column=column, values=distinct, skipped=f"restates {target}"))
            continue
        if twin is not None and twin != target:
            out.append(Confound(column=column, values=distinct, same_as=twin))
            continue
        if finer and column not in (asked or ()):
            out.append(Confound(column=column, values=distinct, refines=target))
            continue
        partitions[partition] = column
        out.append(_measure(column, values, binned, data, folds))
    return sorted(out, key=lambda c: -c.get("cramers_v", -1.0))


def _partition(values: np.ndarray) -> bytes:
    """The grouping of the rows a column makes, whatever its values are called."""
    _, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))  # each value numbered by where it first appears
    return order[inverse].astype(np.int64).tobytes()


def _values(raw: np.ndarray) -> tuple[np.ndarray, bool]:
    """The column as categories: numbers with many values become quartile ranges."""
    raw = np.asarray(raw, dtype=object)
    filled = raw[raw != ""]
    try:
        numbers = np.asarray(filled, dtype=float)
    except ValueError:
        return raw, False
    if len(set(filled.tolist())) <= 10:
        return raw, False
    edges = np.unique(np.quantile(numbers, np.linspace(0, 1, NUMERIC_BINS + 1)))
    names = [f"{lo:g} to {hi:g}" for lo, hi in itertools.pairwise(edges)]
    out = np.full(len(raw), "", dtype=object)
    where = np.flatnonzero(raw != "")
    index = np.clip(np.searchsorted(edges, numbers, side="right") - 1, 0, len(names) - 1)
    out[where] = np.asarray(names, dtype=object)[index]
    return out, True


def _order(name: str) -> tuple[float, str]:
    """Quartile ranges (``157 to 1007.5``) in numeric order, empty last."""
    return (float(name.split(" to ")[0]), name) if name else (float("inf"), name)


def cramers_v(table: np.ndarray) -> float:
    """Bias-corrected Cramér's V of a contingency table (Bergsma 2013)."""
    table = np.asarray(table, dtype=float)
    table = table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0]
    n = table.sum()
    r, k = table.shape
    if n <= 1 or min(r, k) < 2:
        return 0.0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / n
    chi2 = float(((table - expected) ** 2 / expected).sum())
    phi2 = max(0.0, chi2 / n - (k - 1) * (r - 1) / (n - 1))
    r_corr, k_corr = r - (r - 1) ** 2 / (n - 1), k - (k - 1) ** 2 / (n - 1)
    denominator = min(k_corr - 1, r_corr - 1)
    return float(np.sqrt(phi2 / denominator)) if denominator > 0 else 0.0


def _measure(
    column: str, values: np.ndarray, binned: bool, data: TaskData, folds: list | None
) -> Confound:
    names = sorted(set(values.tolist()), key=_order if binned else None)
    code = (
        np.asarray([names.index(v) for v in values.tolist()])
        if binned
        else np.searchsorted(names, values)
    )
    k = len(data.classes)
    table = np.zeros((len(names), k), dtype=int)
    np.add.at(table, (code, data.y), 1)
    v = cramers_v(table)
    return Confound(
        column=column,
        values=len(names),
        binned=binned,
        cramers_v=round(v, 4),
        balanced_accuracy=round(_column_alone(code, data, folds), 4),
        chance=round(1.0 / k, 4),
        warn=v >= CRAMERS_V_WARN,
        table={
            (name or "(empty)"): {c: int(n) for c, n in zip(data.classes, row, strict=True)}
            for name, row in zip(names, table, strict=True)
        },
    )


def _folds(data: TaskData, seed: int) -> list | None:
    """FOLDS stratified folds, grouped by patient when ids are known (None: too few rows)."""
    k = len(data.classes)
    folds = min(FOLDS, int(np.bincount(data.y, minlength=k).min()))
    if folds < 2:
        return None
    return list(kfold(data.y, data.patients, folds, seed))


def _column_alone(code: np.ndarray, data: TaskData, folds: list | None) -> float:
    """Cross-validated balanced accuracy of 'each value's majority class in training'."""
    if folds is None:
        return float("nan")
    k = len(data.classes)
    predicted = np.empty_like(data.y)
    for train, test in folds:
        counts = np.zeros((code.max() + 1, k), dtype=int)
        np.add.at(counts, (code[train], data.y[train]), 1)
        fallback = Counter(data.y[train].tolist()).most_common(1)[0][0]
        rule = np.where(counts.sum(axis=1) > 0, counts.argmax(axis=1), fallback)
        predicted[test] = rule[code[test]]
    recalls = [np.mean(predicted[data.y == c] == c) for c in range(k) if np.any(data.y == c)]
    return float(np.mean(recalls))
