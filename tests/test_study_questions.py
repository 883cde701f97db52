"""The source study's own questions: learning curves (--train-sizes) and patient covariates."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import evaluate
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.model_selection import PredefinedSplit, cross_val_predict
from typer.testing import CliRunner

from cxr.classify.covariates import with_covariates
from cxr.classify.curves import Size, parse_sizes, subsample
from cxr.classify.designs import CrossValidation
from cxr.classify.fitting import run_splits
from cxr.classify.heads import build_head
from cxr.classify.tasks import TaskSpec, select
from cxr.cli import app
from cxr.errors import CxrError
from cxr.store import load

runner = CliRunner()
TWO = {"covid": 30, "normal": 30}


# ---- learning curves ------------------------------------------------------------------------


@st.composite
def training_rows(draw):
    n_patients = draw(st.integers(4, 40))
    images = draw(st.lists(st.integers(1, 4), min_size=n_patients, max_size=n_patients))
    labels = draw(st.lists(st.integers(0, 2), min_size=n_patients, max_size=n_patients))
    groups = np.repeat([f"p{i}" for i in range(n_patients)], images)
    y = np.repeat(labels, images)
    train = np.flatnonzero(draw(st.lists(st.booleans(), min_size=len(y), max_size=len(y))))
    return train, y, groups


@settings(max_examples=60, deadline=None)
@given(training_rows(), st.integers(1, 12), st.integers(1, 12), st.integers(0, 2**31))
def test_subsamples_are_nested_grouped_stratified_and_from_the_training_rows(rows, a, b, seed):
    train, y, groups = rows
    if not len(train):
        return
    small, large = sorted((a, b))
    sub_small = subsample(train, y, groups, Size(count=small), seed)
    sub_large = subsample(train, y, groups, Size(count=large), seed)
    assert set(sub_small) <= set(sub_large) <= set(train)  # nested, training rows only
    for sub, wanted in ((sub_small, small), (sub_large, large)):
        for label in np.unique(y[train]):
            have, available = np.sum(y[sub] == label), np.sum(y[train] == label)
            assert have >= min(wanted, available)  # at least the size, or every image
            # whole patients: a patient drawn for this class brings all its training rows of it
            drawn = set(groups[sub][y[sub] == label])
            rows_of_drawn = [r for r in train if y[r] == label and groups[r] in drawn]
            assert have == len(rows_of_drawn)
    assert set(subsample(train, y, groups, Size(), seed)) == set(train)


def test_sizes_parse_and_always_end_with_all():
    assert [s.label for s in parse_sizes("100,25,all,50")] == ["25", "50", "100", "all"]
    assert [s.label for s in parse_sizes("0.5,0.1")] == ["0.1", "0.5", "all"]
    with pytest.raises(CxrError, match="'-3' is neither a count"):
        parse_sizes("25,-3")


def test_a_separable_signal_saturates_early_and_no_signal_stays_at_chance(make_synthetic_store):
    strong = make_synthetic_store(TWO, separation=8.0, backbone="strong")
    make_synthetic_store(TWO, separation=1.2, dim=32, backbone="weak")
    make_synthetic_store(TWO, shuffle_labels=True, backbone="none")
    report = evaluate(
        strong.parent, heads=["logreg"], folds=5, bootstrap=200, train_sizes=[2, 5, 10, "all"]
    )
    curves = {c["backbone"]: c for c in report["learning_curves"]}
    assert set(curves) == {"strong", "weak", "none"}
    values = {b: [p["value"] for p in c["points"]] for b, c in curves.items()}
    assert min(values["strong"]) > 0.95 and curves["strong"]["within_margin_from"] == "2"
    assert values["weak"][-1] - values["weak"][0] > 0.05  # more data helps a weak signal
    assert curves["weak"]["within_margin_from"] != "2"
    for point in curves["none"]["points"]:
        lo, hi = point["ci95"]
        assert lo < 0.5 + 0.15 and hi > 0.5 - 0.15  # chance, within sampling noise
    # the "all" point is the ordinary result of the same head
    full = next(r for r in report["results"] if r["backbone"] == "strong")
    assert curves["strong"]["points"][-1]["value"] == pytest.approx(
        full["metrics"]["balanced_accuracy"]["pooled"]
    )
    counts = [p["train_per_class"]["covid"] for p in curves["strong"]["points"]]
    assert counts == sorted(counts) and counts[0] >= 2


def test_learning_curves_in_the_cli_json_and_plot(make_synthetic_store, tmp_path):
    path = make_synthetic_store(TWO)
    result = runner.invoke(
        app,
        ["evaluate", "--features", str(path.parent), "--head", "logreg", "--folds", "3",
         "--bootstrap", "50", "--train-sizes", "3,6,all", "--curve-draws", "2",
         "--plots", str(tmp_path / "plots"), "--json", "-"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    [c] = report["learning_curves"]
    assert [p["size"] for p in c["points"]] == ["3", "6", "all"]
    assert [p["draws"] for p in c["points"]] == [2, 2, 1]
    assert any(p.endswith("-learning-curves.png") for p in report["plots"])
    assert "Learning curves" in result.stderr


# ---- covariates --------------------------------------------------------------------------


def marker_store(make_synthetic_store):
    """No signal in the embeddings; ``marker`` carries the label, ``noise`` does not, ``age``
    carries it as a number (with gaps)."""
    rng = np.random.default_rng(1)
    return make_synthetic_store(
        TWO,
        shuffle_labels=True,
        meta={
            "marker": lambda r: "yes" if r["label"] == "covid" else "no",
            "noise": lambda r: str(rng.choice(["a", "b", "c"])),
            "age": lambda r: (
                ""
                if rng.random() < 0.1
                else str(
                    70 + rng.integers(0, 10) if r["label"] == "covid" else 30 + rng.integers(0, 10)
                )
            ),
        },
    )


def test_a_covariate_that_carries_the_label_helps_and_one_that_does_not_does_not(
    make_synthetic_store,
):
    path = marker_store(make_synthetic_store)

    def run(columns):
        report = evaluate(path.parent, heads=["logreg"], folds=5, bootstrap=300, covariates=columns,
                          covariates_only=True, confounds=())  # fmt: skip
        return {r["inputs"]: r for r in report["results"]}

    marked = run(["marker"])
    gain = marked["embeddings + marker"]["covariate_gain"]
    assert gain["difference"] > 0.3 and gain["ci95"][0] > 0
    assert marked["marker alone"]["metrics"]["balanced_accuracy"]["pooled"] == 1.0
    noisy = run(["noise"])
    gain = noisy["embeddings + noise"]["covariate_gain"]
    assert gain["ci95"][0] <= 0 <= gain["ci95"][1]
    assert noisy["noise alone"]["metrics"]["balanced_accuracy"]["ci95"][0] < 0.5
    aged = run(["age"])  # numeric, imputed inside the fold
    assert aged["age alone"]["metrics"]["balanced_accuracy"]["pooled"] > 0.85


def test_covariate_pipelines_match_scikit_learns_cross_val_predict(make_synthetic_store):
    """The reference: the same Pipeline in scikit-learn's cross_val_predict on the same splits
    gives the same out-of-fold probabilities, so nothing is fitted outside the fold."""
    path = marker_store(make_synthetic_store)
    fs = load(path)
    plan = CrossValidation(5).plan(fs, TaskSpec(), seed=0)
    data, layout = with_covariates(plan.data, ["marker", "noise", "age"], "label")
    oof = run_splits(data, plan.splits, {"logreg": {}}, groups=None, seed=0, inputs=layout)
    ours = np.zeros((len(data.y), 2))
    ours[oof["logreg"].row] = oof["logreg"].proba
    fold_of = np.zeros(len(data.y), dtype=int)
    for i, split in enumerate(plan.splits):
        fold_of[split.test] = i
    # lbfgs logistic regression ignores random_state, so one estimator serves every fold
    estimator = build_head("logreg", {}, 0, layout.transformer())
    theirs = cross_val_predict(
        estimator, data.X, data.y, cv=PredefinedSplit(fold_of), method="predict_proba"
    )
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-9)


def test_covariates_are_refused_when_they_would_leak_or_do_not_exist(make_synthetic_store):
    path = marker_store(make_synthetic_store)
    data = select(load(path), TaskSpec())
    with pytest.raises(CxrError, match="`covariates` label: that is what the heads predict"):
        with_covariates(data, ["label"], "label")
    with pytest.raises(CxrError, match="`covariates` patient_id: identifies"):
        with_covariates(data, ["patient_id"], "label")
    with pytest.raises(CxrError, match="no column 'sex'; available"):
        with_covariates(data, ["sex"], "label")
    with pytest.raises(CxrError, match="`covariates_only`: name the columns"):
        evaluate(path.parent, heads=["logreg"], covariates_only=True)
    result = runner.invoke(app, ["evaluate", "--features", str(path.parent), "--head", "logreg",
                                 "--covariates", "marker,noise", "--folds", "3",
                                 "--bootstrap", "50"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Covariates: mobilenet_v2 & marker, noise + logreg vs mobilenet_v2 + logreg" in (
        result.output.replace("\n", " ")
    )


def test_a_size_larger_than_every_class_is_named_as_the_same_as_all(make_synthetic_store):
    path = make_synthetic_store(TWO)
    report = evaluate(path.parent, heads=["logreg"], folds=3, bootstrap=20, train_sizes=[5, 5000])
    assert any("--train-sizes 5000: every class has fewer" in w for w in report["warnings"])
    assert not any("--train-sizes 5:" in w for w in report["warnings"])
