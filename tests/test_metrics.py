"""Metrics against hand-computed confusion matrices, scikit-learn, and bootstrap invariants."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, brier_score_loss, f1_score, roc_auc_score, roc_curve

from cxr.classify import metrics as m
from cxr.classify import outcomes as oc

# rows: true class, columns: predicted class
CM = np.array([[5, 1, 0], [2, 3, 1], [0, 0, 4]])


def test_confusion_derived_metrics_by_hand():
    # tp = 5, 3, 4; fn = 1, 3, 0; fp = 2, 1, 1; tn = 16 - tp - fn - fp = 8, 9, 11
    assert oc.sensitivity(CM) == pytest.approx([5 / 6, 3 / 6, 4 / 4])
    assert oc.specificity(CM) == pytest.approx([8 / 10, 9 / 10, 11 / 12])
    assert oc.precision(CM) == pytest.approx([5 / 7, 3 / 4, 4 / 5])
    assert oc.f1(CM) == pytest.approx([10 / 13, 6 / 10, 8 / 9])
    assert oc.accuracy(CM) == pytest.approx(12 / 16)
    assert oc.balanced_accuracy(CM) == pytest.approx((5 / 6 + 1 / 2 + 1) / 3)
    assert oc.macro_f1(CM) == pytest.approx((10 / 13 + 6 / 10 + 8 / 9) / 3)


def test_confusion_counts_pairs_and_weights():
    y_true = np.repeat([0, 0, 1, 1, 1, 2], [5, 1, 2, 3, 1, 4])
    y_pred = np.array([0] * 5 + [1] + [0] * 2 + [1] * 3 + [2] + [2] * 4)
    assert oc.confusion(y_true, y_pred, 3).tolist() == CM.tolist()
    # integer weights act like duplicated rows
    w = np.arange(len(y_true)) % 3
    dup = np.repeat(np.arange(len(y_true)), w)
    batch = oc.confusion(y_true, y_pred, 3, np.stack([w, np.ones_like(w)]).astype(float))
    assert batch[0].tolist() == oc.confusion(y_true[dup], y_pred[dup], 3).tolist()
    assert batch[1].tolist() == CM.tolist()


def test_undefined_ratios_are_nan_and_skipped():
    cm = np.array([[3, 0], [2, 0]])  # class 1 never predicted: its precision is undefined
    assert np.isnan(oc.precision(cm)[1])
    assert oc.f1(cm)[1] == 0.0  # but its F1 is 0 (two false negatives)
    assert oc.balanced_accuracy(cm) == pytest.approx(0.5)


def test_metrics_vectorise_over_stacks():
    stack = np.stack([CM, CM.T, 2 * CM])
    assert oc.accuracy(stack) == pytest.approx([float(oc.accuracy(c)) for c in stack])
    assert oc.sensitivity(stack).shape == (3, 3)


def test_auc_by_hand_and_with_ties():
    y = np.array([0, 0, 1, 1])
    scores = np.array([[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]])
    # positives 0.35 and 0.8 against negatives 0.1 and 0.4: 3 of 4 pairs ordered -> 0.75
    assert oc.roc_auc_per_class(y, scores) == pytest.approx([0.75, 0.75])
    tied = np.array([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.0, 1.0]])
    assert oc.roc_auc_per_class(y, tied)[1] == pytest.approx((0.5 + 0.5 + 1 + 1) / 4)


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_sklearn_including_weights(seed):
    rng = np.random.default_rng(seed)
    y = np.r_[0, 1, 2, rng.integers(0, 3, 60)]
    proba = np.round(rng.dirichlet(np.ones(3), len(y)), 1)  # rounding makes ties

    def ovr(rows):
        return [roc_auc_score(y[rows] == c, proba[rows, c]) for c in range(3)]

    assert oc.roc_auc_per_class(y, proba) == pytest.approx(ovr(np.arange(len(y))))
    w = rng.integers(1, 4, len(y))
    dup = np.repeat(np.arange(len(y)), w)
    weighted = oc.roc_auc_per_class(y, proba, w[None].astype(float))[0]
    assert weighted == pytest.approx(ovr(dup))
    exact = rng.dirichlet(np.ones(3), len(y))
    assert oc.roc_auc(y, exact) == pytest.approx(roc_auc_score(y, exact, multi_class="ovr"))


def test_bootstrap_resamples_whole_units_and_is_seeded():
    units = np.array(["a", "a", "b", "c", "c", "c"])
    first = np.concatenate(list(m.bootstrap_weights(units, 50, seed=1, chunk=7)))
    again = np.concatenate(list(m.bootstrap_weights(units, 50, seed=1, chunk=7)))
    assert first.shape == (50, 6) and np.array_equal(first, again)
    assert np.all(first[:, 0] == first[:, 1]) and np.all(first[:, 3] == first[:, 5])
    assert np.all(first[:, [0, 2, 3]].sum(axis=1) == 3)  # three units drawn per replicate


def test_summarize_against_sklearn_per_fold():
    rng = np.random.default_rng(3)
    n, k = 120, 3
    y = np.arange(n) % k
    proba = rng.dirichlet(np.ones(k), n)
    proba[np.arange(n), y] += 0.3  # some signal
    fold = rng.permutation(np.arange(n) % 4)
    out = m.summarize(y, proba, fold, np.arange(n) // 2, ("a", "b", "c"), m.Bootstrap(300))
    pred = proba.argmax(axis=1)
    accs = [accuracy_score(y[fold == f], pred[fold == f]) for f in range(4)]
    assert out["metrics"]["accuracy"]["mean"] == pytest.approx(np.mean(accs))
    assert out["metrics"]["accuracy"]["std"] == pytest.approx(np.std(accs, ddof=1))
    f1s = [f1_score(y[fold == f], pred[fold == f], average="macro") for f in range(4)]
    assert out["metrics"]["macro_f1"]["mean"] == pytest.approx(np.mean(f1s))
    lo, hi = out["metrics"]["accuracy"]["ci95"]
    assert lo < out["metrics"]["accuracy"]["pooled"] < hi
    assert np.sum(out["confusion_matrix"]) == n
    assert set(out["metrics"]["per_class"]["b"]) >= {
        "sensitivity",
        "specificity",
        "precision",
        "f1",
    }


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("target", [0.8, 0.95])
def test_operating_points_match_sklearns_roc_curve(seed, target):
    rng = np.random.default_rng(seed)
    y = np.r_[0, 1, 2, rng.integers(0, 3, 80)]
    proba = np.round(rng.dirichlet(np.ones(3), len(y)), 2)  # rounding makes ties
    sens, spec = oc.operating_points(y, proba, target)
    for c in range(3):
        fpr, tpr, _ = roc_curve(y == c, proba[:, c], drop_intermediate=False)
        assert sens[c] == pytest.approx(tpr[fpr <= 1 - target + 1e-12].max())
        assert spec[c] == pytest.approx((1 - fpr[tpr >= target - 1e-12]).max())
    w = rng.integers(1, 4, len(y))
    dup = np.repeat(np.arange(len(y)), w)
    weighted = oc.operating_points(y, proba, target, w[None].astype(float))
    direct = oc.operating_points(y[dup], proba[dup], target)
    assert weighted[0][0] == pytest.approx(direct[0]) and weighted[1][0] == pytest.approx(direct[1])


def test_brier_and_ece_against_sklearn_and_by_hand():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 50)
    proba = rng.dirichlet(np.ones(3), 50)
    o = oc.Outcomes(y, proba)
    # scikit-learn's multi-class Brier score is the same sum over classes, averaged over rows
    assert o.brier == pytest.approx(brier_score_loss(y, proba, labels=[0, 1, 2]))
    # ECE by hand: two rows at confidence 0.9 (one right), two at 0.6 (both right)
    y2 = np.array([0, 1, 0, 1])
    p2 = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    assert oc.Outcomes(y2, p2).ece == pytest.approx((abs(1 - 1.8) + abs(2 - 1.2)) / 4)
    w = rng.integers(1, 4, len(y)).astype(float)
    dup = np.repeat(np.arange(len(y)), w.astype(int))
    batch = oc.Outcomes(y, proba, w[None])
    assert batch.brier[0] == pytest.approx(oc.Outcomes(y[dup], proba[dup]).brier)
    assert batch.ece[0] == pytest.approx(oc.Outcomes(y[dup], proba[dup]).ece)


def test_operating_points_are_undefined_without_one_side():
    proba = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    sens, spec = oc.operating_points(np.zeros(3, int), proba, 0.95)  # no row of class 1
    assert np.isnan(sens[0]) and np.isnan(spec[0])  # class 0 has no negatives
    assert np.isnan(sens[1]) and np.isnan(spec[1])  # class 1 has no positives


def test_macro_f1_averages_the_classes_present():
    cm = np.array([[0, 0], [3, 7]])  # no row of class 0, three rows called class 0
    assert oc.macro_f1(cm) == pytest.approx(oc.f1(cm)[1])  # class 1 only: 14 / 17
    assert f1_score([1] * 10, [0] * 3 + [1] * 7, average="macro") == pytest.approx(7 / 17)
