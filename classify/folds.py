"""StratifiedGroupKFold's folds, the same ones, about 50 times faster.

scikit-learn's implementation assigns each group to a fold in a Python loop over folds with a
NumPy call per fold; on 1,562 patients and 10 folds that is a second per split, paid on every
`cxr evaluate`. This is the same greedy algorithm, with the candidates of one group evaluated
in one array operation and the same tie-breaking, so it returns exactly scikit-learn's folds
(tests compare the two on random data and on the shared set).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

RTOL, ATOL = 1e-05, 1e-08  # numpy.isclose's defaults, which scikit-learn's ties use


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
