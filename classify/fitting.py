"""Fitting: every head on every split in one joblib pool, and the out-of-fold probabilities.

Determinism: every fit gets its own random_state derived from (seed, repeat, fold), and runs with
BLAS/OpenMP limited to one thread, so the numbers depend on the seed only, never on ``--jobs``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from cxr.classify.folds import Folds, Split, derive_seed
from cxr.classify.heads import (
    Params,
    build_head,
    effective_params,
    get_head,
    needs_inner_cv,
    search_grid,
)
from cxr.classify.predictions import OutOfFold
from cxr.classify.tasks import TaskData
from cxr.classify.workers import pool
from cxr.errors import CxrError

if TYPE_CHECKING:
    from cxr.classify.covariates import Covariates
    from cxr.classify.fitcache import FitCache

# Inner folds of --search, and of the SVM head's probability calibration.
INNER_FOLDS = 3


def check_inner(data: TaskData, groups: np.ndarray | None, splits: list[Split]) -> None:
    """--search and SVM calibration cross-validate inside each training fold; they need room."""
    for split in splits:
        y = data.y[split.train]
        for index, name in enumerate(data.classes):
            rows = split.train[y == index]
            members = groups[rows] if groups is not None else rows
            if 0 < len(np.unique(members)) < INNER_FOLDS:
                raise CxrError(
                    f"{data.source}: class {name!r} has fewer than {INNER_FOLDS} "
                    f"{'groups' if groups is not None else 'images'} in the training rows of "
                    f"{split.label}; `search` and the svm head need {INNER_FOLDS} (use fewer "
                    "`folds` or more data)"
                )


def _fit_fold(
    source: str,
    head: str,
    params: Params,
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray | None,
    split: Split,
    n_classes: int,
    random_state: int,
    search: bool,
    inputs: Covariates | None = None,
) -> tuple[np.ndarray, dict | None, list[str]]:
    """Fit one head on one training fold; probabilities for the test fold (all classes)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        transformer = inputs.transformer() if inputs is not None else None
        estimator = build_head(head, params, random_state, transformer)
        train = split.train
        if search:
            from sklearn.model_selection import GridSearchCV

            estimator = GridSearchCV(
                estimator,
                search_grid(head, params),
                scoring="balanced_accuracy",
                cv=Folds(INNER_FOLDS, random_state),
                n_jobs=1,
                error_score=np.nan,  # a candidate that cannot fit (k > rows) loses, with a warning
            )
        proba = np.zeros((len(split.test), n_classes))
        fit_groups = {"groups": groups[train]} if search and groups is not None else {}
        try:
            estimator.fit(X[train], y[train], **fit_groups)
            proba[:, estimator.classes_] = estimator.predict_proba(X[split.test])
        except ValueError as exc:  # e.g. more neighbours than training rows
            message = str(exc).splitlines()[0]
            raise CxrError(f"{source}: head {head!r} failed in {split.label}: {message}") from None
    best = {k.rsplit("__", 1)[-1]: v for k, v in estimator.best_params_.items()} if search else None
    messages = sorted({f"{w.category.__name__}: {str(w.message).splitlines()[0]}" for w in caught})
    return proba, best, messages


def run_splits(
    data: TaskData,
    splits: list[Split],
    heads: Mapping[str, Params],
    *,
    groups: np.ndarray | None,
    seed: int,
    search: bool = False,
    jobs: int = 1,
    advance: Callable[[int], None] = lambda n: None,
    inputs: Covariates | None = None,
    cache: FitCache | None = None,
) -> dict[str, OutOfFold]:
    """Test-row probabilities of every head on every split, all in one joblib pool.

    ``groups`` group the inner folds of --search (None: images). A row's ``fold`` in the result
    is the index of its split, so one pool serves CV folds, held-out values and external tests.
    A head found in ``cache`` is not fitted (its progress is advanced at once); the others are
    fitted and kept there.
    """
    if needs_inner_cv(heads, search):
        check_inner(data, groups, splits)
    cached: dict[str, OutOfFold] = {}
    keys: dict[str, str] = {}
    if cache is not None:
        keys = cache_keys(
            data, splits, heads, groups=groups, seed=seed, search=search, inputs=inputs
        )
        expected = np.concatenate([s.test for s in splits])
        folds = np.concatenate([np.full(len(s.test), i) for i, s in enumerate(splits)])
        for head in heads:
            hit = cache.get(keys[head], expected, data.y, len(data.classes), folds)
            if hit is not None:
                cached[head] = hit
                advance(len(splits))
    fitted = _fit_all(data, splits, heads, cached, groups, seed, search, jobs, advance, inputs)
    if cache is not None:
        for head, oof in fitted.items():
            cache.put(keys[head], oof)
    return {head: cached[head] if head in cached else fitted[head] for head in heads}


def cache_keys(
    data: TaskData,
    splits: list[Split],
    heads: Mapping[str, Params],
    *,
    groups: np.ndarray | None,
    seed: int,
    search: bool = False,
    inputs: Covariates | None = None,
) -> dict[str, str]:
    """Each head's fit-cache key for these fits (`run_splits` reads and writes under them)."""
    from cxr.classify.fitcache import data_key, entry_key

    shared = data_key(data, groups, splits, seed=seed, search=search, inputs=inputs)
    keys = {}
    for head, params in heads.items():
        grid = search_grid(head, params) if search else None
        keys[head] = entry_key(shared, head, effective_params(head, params), grid)
    return keys


def _fit_all(
    data: TaskData,
    splits: list[Split],
    heads: Mapping[str, Params],
    skip: Mapping[str, OutOfFold],
    groups: np.ndarray | None,
    seed: int,
    search: bool,
    jobs: int,
    advance: Callable[[int], None],
    inputs: Covariates | None,
) -> dict[str, OutOfFold]:
    """Every head not in ``skip`` fitted on every split, in one pool."""
    todo = [head for head in heads if head not in skip]
    if not todo:
        return {}
    from joblib import delayed

    tasks = [(head, index, split) for head in todo for index, split in enumerate(splits)]
    tasks.sort(key=lambda t: -get_head(t[0]).cost)  # slow fits first; results do not depend on it
    fits = pool(jobs, return_as="generator")(
        delayed(_fit_fold)(
            str(data.source),
            head,
            heads[head],
            data.X,
            data.y,
            groups,
            split,
            len(data.classes),
            derive_seed(seed, split.repeat, split.fold),
            search,
            inputs,
        )
        for head, _, split in tasks
    )
    outputs = []
    for output in fits:  # in task order, as each finishes
        outputs.append(output)
        advance(1)
    results = {}
    for head in todo:
        mine = [(i, s, out) for (h, i, s), out in zip(tasks, outputs, strict=True) if h == head]
        rows = np.concatenate([s.test for _, s, _ in mine])
        counts: dict[str, int] = {}
        for _, _, (_, _, messages) in mine:
            for message in messages:
                counts[message] = counts.get(message, 0) + 1
        results[head] = OutOfFold(
            row=rows,
            y=data.y[rows],
            proba=np.concatenate([proba for _, _, (proba, _, _) in mine]),
            fold=np.concatenate([np.full(len(s.test), i) for i, s, _ in mine]),
            best_params=[best for _, _, (_, best, _) in mine if best is not None],
            warnings=[f"{head}: {m} (in {n} of {len(mine)} fits)" for m, n in counts.items()],
        )
    return results
