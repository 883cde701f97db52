"""How rows are split into folds: one owner of the splitters and of the patient-grouping rule.

StratifiedGroupKFold's folds, the same ones, about 50 times faster:

scikit-learn's implementation assigns each group to a fold in a Python loop over folds with a
NumPy call per fold; on 1,562 patients and 10 folds that is a second per split, paid on every
`cxr evaluate`. This is the same greedy algorithm, with the candidates of one group evaluated
in one array operation and the same tie-breaking, so it returns exactly scikit-learn's folds
(tests compare the two on random data and on the shared set).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

RTOL, ATOL = 1e-05, 1e-08  # numpy.isclose's defaults, which scikit-learn's ties use


@dataclass(frozen=True)
class Split:
    """The training and test rows of one fit (indices into the task's rows)."""

    repeat: int
    fold: int
    train: np.ndarray
    test: np.ndarray
    name: str = ""  # what the test rows are, when not a CV fold (a held-out value, "external")

    @property
    def label(self) -> str:
        return self.name or f"fold {self.fold + 1}"


def derive_seed(seed: int, *keys: int) -> int:
    """A 32-bit seed for one (repeat, fold, ...) that does not depend on execution order."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


def stratified_group_folds(
    y: np.ndarray, groups: np.ndarray, n_splits: int, random_state: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(train, test) index pairs of ``StratifiedGroupKFold(n_splits, shuffle=True,
    random_state=random_state).split(X, y, groups)``."""
    rng = np.random.RandomState(random_state)
    _, y_inv, y_cnt = np.unique(y, return_inverse=True, return_counts=True)
    _, groups_inv, groups_cnt = np.unique(groups, return_inverse=True, return_counts=True)
    per_group = np.zeros((len(groups_cnt), len(y_cnt)))
    np.add.at(per_group, (groups_inv, y_inv), 1)
    perm = np.arange(len(groups_cnt))
    rng.shuffle(perm)
    per_group = per_group[perm]
    inverse = np.empty_like(perm)
    inverse[perm] = np.arange(perm.size)
    groups_inv = inverse[groups_inv]
    per_fold = np.zeros((n_splits, len(y_cnt)))
    fold_of = np.empty(len(groups_cnt), dtype=int)
    eye = np.eye(n_splits)[:, :, None]
    for group in np.argsort(-np.std(per_group, axis=1), kind="stable"):
        counts = per_group[group]
        trial = (per_fold[None] + eye * counts) / y_cnt  # candidate fold, fold, class
        scores = np.std(trial, axis=1).mean(axis=1)
        sizes = per_fold.sum(axis=1)
        best, best_score, best_size = 0, np.inf, np.inf
        for fold in range(n_splits):  # scikit-learn's order and tie-breaking
            score, size = float(scores[fold]), float(sizes[fold])
            close = abs(score - best_score) <= ATOL + RTOL * abs(best_score)
            if score < best_score or (close and size < best_size):
                best, best_score, best_size = fold, score, size
        per_fold[best] += counts
        fold_of[group] = best
    row_fold = fold_of[groups_inv]
    for fold in range(n_splits):
        yield np.flatnonzero(row_fold != fold), np.flatnonzero(row_fold == fold)


def kfold(
    y: np.ndarray, groups: np.ndarray | None, n_splits: int, random_state: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stratified K-fold (train, test) pairs, grouped when ``groups`` is given (no group on both
    sides): the one splitter of cross-validation, --search's inner folds, the confound check and
    the audit's probe."""
    if groups is not None:
        return stratified_group_folds(y, groups, n_splits, random_state)
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    return splitter.split(np.zeros(len(y)), y)


class Folds:
    """`kfold` as a scikit-learn CV splitter (``GridSearchCV(cv=Folds(3, seed))``): grouped when
    the fit is given ``groups``."""

    def __init__(self, n_splits: int, random_state: int):
        self.n_splits = n_splits
        self.random_state = random_state

    def split(self, X, y, groups=None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return kfold(np.asarray(y), groups, self.n_splits, self.random_state)

    def get_n_splits(self, X=None, y=None, groups=None) -> int:
        return self.n_splits


def patient_groups(patient_ids: np.ndarray, row_ids: np.ndarray) -> np.ndarray:
    """Every row's group for patient-grouped folds and bootstraps: its patient id. When some rows
    have ids and others not, a row without one is its own group (``image:<row id>``), since
    nothing says whose it is; when no row has one, every group is "" (rows are split as images).
    """
    groups = np.asarray(patient_ids, dtype=object).copy()
    unknown = groups == ""
    if unknown.any() and not unknown.all():
        groups[unknown] = np.asarray([f"image:{i}" for i in row_ids[unknown]], dtype=object)
    return groups
