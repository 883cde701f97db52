"""Splitting, determinism, and whether the scores mean anything (signal vs shuffled labels)."""

import json

import numpy as np
import pytest
from helpers import evaluate
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cxr.classify.designs import CrossValidation, make_splits
from cxr.classify.tasks import TaskSpec, select
from cxr.errors import CxrError
from cxr.store import load

SMALL_MLP = {
    "mlp": {
        "hidden_layer_sizes": (16,),
        "max_iter": 200,
        "learning_rate_init": 1e-2,
        "early_stopping": False,
    }
}


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    folds=st.integers(2, 5),
    n_classes=st.integers(2, 3),
    seed=st.integers(0, 2**16),
)
def test_grouped_folds_never_share_a_patient(data, folds, n_classes, seed):
    n_groups = data.draw(st.integers(folds * n_classes, 40))
    group_label = data.draw(
        st.lists(st.integers(0, n_classes - 1), min_size=n_groups, max_size=n_groups)
    )
    sizes = data.draw(st.lists(st.integers(1, 4), min_size=n_groups, max_size=n_groups))
    assume(all(group_label.count(c) >= folds for c in range(n_classes)))
    groups = np.repeat([f"p{g}" for g in range(n_groups)], sizes)
    y = np.repeat(group_label, sizes)
    splits = make_splits(y, groups, folds, 2, seed)
    assert len(splits) == 2 * folds
    for repeat in range(2):
        tested = np.concatenate([s.test for s in splits if s.repeat == repeat])
        assert np.array_equal(np.sort(tested), np.arange(len(y)))  # every row tested once
    for split in splits:
        assert not set(groups[split.train]) & set(groups[split.test])


def plan(fs, folds=3, group_by="auto", seed=0):
    return CrossValidation(folds, group_by=group_by).plan(fs, TaskSpec(), seed=seed)


def test_plan_groups_by_patient_when_ids_exist(make_synthetic_store):
    fs = load(make_synthetic_store())
    grouped = plan(fs)
    assert grouped.protocol.grouped and not grouped.notes
    assert grouped.protocol.scheme == "StratifiedGroupKFold"
    by_image = plan(fs, group_by="none")
    assert not by_image.protocol.grouped and "optimistic" in by_image.notes[0]


def test_plan_without_ids_warns_and_refuses_patient_grouping(make_synthetic_store):
    fs = load(make_synthetic_store(patient_ids=False))
    ungrouped = plan(fs)
    assert ungrouped.protocol.scheme == "StratifiedKFold" and "optimistic" in ungrouped.notes[0]
    with pytest.raises(CxrError, match="no patient id"):
        plan(fs, group_by="patient")


def test_class_with_fewer_patients_than_folds_names_the_folds_that_work(make_synthetic_store):
    path = make_synthetic_store({"covid": 3, "normal": 12})
    with pytest.raises(CxrError) as info:
        plan(load(path), folds=10)
    assert str(info.value) == (
        f"{path}: class 'covid' has 3 patients, fewer than `folds` 10; the largest `folds` that "
        "works here is 3"
    )
    assert plan(load(path), folds=3).protocol.folds == 3  # and it does work


def test_same_seed_same_json_whatever_the_jobs(make_synthetic_store):
    path = make_synthetic_store(dim=6, separation=2.0)
    runs = [
        evaluate(
            path.parent,
            heads=["mlp", "forest"],
            params={**SMALL_MLP, "forest": {"n_estimators": 20}},
            folds=3,
            repeats=2,
            seed=7,
            jobs=jobs,
            bootstrap=200,
        )
        for jobs in (1, 2)
    ]
    assert json.dumps(runs[0], sort_keys=True) == json.dumps(runs[1], sort_keys=True)
    other = evaluate(
        path.parent,
        heads=["forest"],
        params={"forest": {"n_estimators": 20}},
        folds=3,
        repeats=2,
        seed=8,
        jobs=1,
        bootstrap=200,
    )
    assert other["results"][0]["metrics"] != runs[0]["results"][1]["metrics"]


def _balanced_accuracy(report, head):
    return next(r for r in report["results"] if r["head"] == head)["metrics"]["balanced_accuracy"]


def test_separable_features_score_near_one(make_synthetic_store):
    path = make_synthetic_store({"a": 15, "b": 15, "c": 15}, dim=8, separation=8.0)
    report = evaluate(
        path.parent, heads=["logreg", "knn", "mlp"], params=SMALL_MLP, folds=5, bootstrap=200
    )
    for head in ("logreg", "knn", "mlp"):
        assert _balanced_accuracy(report, head)["mean"] > 0.95


def test_shuffled_labels_score_near_chance(make_synthetic_store):
    path = make_synthetic_store(
        {"a": 40, "b": 40, "c": 40}, dim=8, separation=8.0, shuffle_labels=True
    )
    report = evaluate(path.parent, heads=["logreg", "knn"], folds=5, bootstrap=300)
    for head in ("logreg", "knn"):
        score = _balanced_accuracy(report, head)
        assert abs(score["mean"] - 1 / 3) < 0.12
        assert score["ci95"][0] < 0.45  # the interval does not claim better than chance


def test_splits_are_computed_once_per_data_set(make_synthetic_store):
    data = select(load(make_synthetic_store()), TaskSpec())
    cache: dict = {}
    first = make_splits(data.y, data.groups, 3, 1, 0, cache)
    assert make_splits(data.y, data.groups, 3, 1, 0, cache) is first  # the next store reuses them
    fresh = make_splits(data.y, data.groups, 3, 1, 0)
    assert all(
        np.array_equal(a.train, b.train) and np.array_equal(a.test, b.test)
        for a, b in zip(first, fresh, strict=True)
    )
    assert make_splits(data.y, data.groups, 3, 1, 1, cache) is not first and len(cache) == 2


def test_rows_without_a_patient_id_do_not_turn_off_patient_grouping(make_synthetic_store):
    path = make_synthetic_store({"covid": 10, "normal": 10})
    fs = load(path)
    rows = fs.rows.columns
    missing = np.zeros(len(fs), bool)
    missing[[0, 5, 9]] = True  # three images without an id, e.g. PNGs beside DICOMs
    rows["patient_id"] = np.where(missing, "", rows["patient_id"]).astype(object)
    made = plan(fs)
    assert made.protocol.grouped and made.data.missing_ids == 3
    assert made.protocol.unit == "patient (image where no id)"
    assert any("3 row(s) have no patient id" in n for n in made.notes)
    for split in made.splits:
        known = ~missing
        train, test = (
            set(fs.patient_ids[split.train][known[split.train]]),
            set(fs.patient_ids[split.test][known[split.test]]),
        )
        assert not train & test


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    n_splits=st.integers(2, 6),
    n_classes=st.integers(2, 4),
    seed=st.integers(0, 2**31 - 1),
)
def test_fast_group_folds_are_scikit_learns(data, n_splits, n_classes, seed):
    """The same folds as scikit-learn's StratifiedGroupKFold, ties included."""
    from sklearn.model_selection import StratifiedGroupKFold

    from cxr.classify.folds import stratified_group_folds

    n_groups = data.draw(st.integers(n_splits, 40))
    sizes = data.draw(st.lists(st.integers(1, 4), min_size=n_groups, max_size=n_groups))
    groups = np.repeat([f"g{i}" for i in range(n_groups)], sizes)
    y = np.asarray(  # per image: some groups mix classes
        data.draw(
            st.lists(st.integers(0, n_classes - 1), min_size=len(groups), max_size=len(groups))
        )
    )
    if data.draw(st.booleans()):  # or one class per group, as patients mostly are
        y = np.repeat(y[np.r_[0, np.cumsum(sizes)[:-1]]], sizes)
    assume(np.min(np.bincount(y, minlength=n_classes)) >= n_splits)
    reference = StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed)
    ours = list(stratified_group_folds(y, groups, n_splits, seed))
    theirs = list(reference.split(y, y, groups))
    assert len(ours) == len(theirs)
    for (a_train, a_test), (b_train, b_test) in zip(ours, theirs, strict=True):
        assert np.array_equal(a_test, b_test) and np.array_equal(a_train, b_train)


def test_start_workers_warms_the_pool_that_fitting_reuses():
    """The warm-up imports the head's modules in joblib's reusable workers, and the next
    Parallel call runs on those same workers (fresh ones would not have the module)."""
    from joblib import Parallel, delayed
    from joblib.externals.loky import get_reusable_executor

    from cxr.classify.workers import start_workers

    loaded = "'sklearn.neighbors' in __import__('sys').modules"

    def fresh_pool_has_module() -> list[bool]:
        get_reusable_executor().shutdown(wait=True, kill_workers=True)
        return Parallel(n_jobs=2)(delayed(eval)(loaded) for _ in range(2))

    assert fresh_pool_has_module() == [False, False]
    get_reusable_executor().shutdown(wait=True, kill_workers=True)
    start_workers(2, ["knn"]).join()
    assert any(Parallel(n_jobs=2)(delayed(eval)(loaded) for _ in range(8)))
    assert start_workers(1, ["knn"]) is None
