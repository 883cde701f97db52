"""Honest evaluation in every `cxr evaluate`: confounds, leave-one-out, external tests, paired
comparisons. Synthetic stores where the answer is known, and the shared manifest."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from helpers import CXR_DATA
from sklearn.metrics import balanced_accuracy_score
from typer.testing import CliRunner

from cxr.classify import metric_table, metrics, outcomes
from cxr.classify.compare import Scored, compare, paired_difference
from cxr.classify.confounds import cramers_v
from cxr.classify.designs import CrossValidation
from cxr.classify.metrics import Bootstrap
from cxr.classify.tasks import TaskSpec
from cxr.cli import app
from cxr.store import load
from cxr.store.schema import ROW_COLUMNS, StoreContent, Table, write_atomic

runner = CliRunner()
FAST = ["--head", "logreg", "--bootstrap", "200", "--jobs", "1"]


def site_of(record: dict) -> str:
    """80% of covid patients at site A, 80% of the others at site B."""
    j = int(record["patient_id"].rsplit("-p", 1)[1])
    usual, other = ("A", "B") if record["label"] == "covid" else ("B", "A")
    return usual if j % 5 else other


def source_only_store(make_synthetic_store):
    """Embeddings that carry the site and nothing of the disease; the label is uneven by site."""
    path = make_synthetic_store({"covid": 40, "normal": 40}, meta={"site": site_of})
    fs = load(path)
    rng = np.random.default_rng(1)
    site = fs.column("site")
    X = rng.normal(size=fs.X.shape) + 4.0 * (site == "A")[:, None]
    write_atomic(path, StoreContent(fs.attrs, fs.rows, fs.meta, X.astype(np.float32)))
    return path


def evaluate(path, *args):
    out = path.parent.parent / "report.json"
    result = runner.invoke(
        app, ["evaluate", "--features", str(path.parent), *FAST, *args, "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    return result, json.loads(out.read_text())


def test_a_source_shortcut_is_flagged_and_fails_on_a_held_out_source(make_synthetic_store):
    path = source_only_store(make_synthetic_store)
    result, report = evaluate(path, "--folds", "5")
    [site] = [c for c in report["confounds"] if c["column"] == "site"]
    assert site["warn"] and site["cramers_v"] > 0.5 and site["balanced_accuracy"] > 0.7
    assert "confound" in result.stdout and "--leave-out site" in result.stdout
    assert site["table"]["A"]["covid"] > site["table"]["A"]["normal"]
    cv = report["results"][0]["metrics"]["balanced_accuracy"]["pooled"]
    assert cv > 0.7  # cross-validation rewards the shortcut...
    _, held = evaluate(path, "--leave-out", "site")
    assert [r["validation"]["held_out"] for r in held["results"]] == ["A", "B"]
    for r in held["results"]:  # ...a site the head never saw shows it is chance
        assert r["metrics"]["balanced_accuracy"]["pooled"] < 0.62
        lo, hi = r["metrics"]["balanced_accuracy"]["ci95"]
        assert lo <= 0.5 + 0.12 and hi >= 0.5 - 0.12
        assert r["validation"]["n_test"] == r["n"] and r["validation"]["n_train"] > 0


def test_no_warning_without_a_confound(make_synthetic_store):
    rng = np.random.default_rng(5)
    sites = {}

    def random_site(record):
        return sites.setdefault(record["patient_id"], str(rng.choice(["A", "B"])))

    path = make_synthetic_store({"covid": 40, "normal": 40}, meta={"site": random_site})
    result, report = evaluate(path, "--folds", "5")
    [site] = [c for c in report["confounds"] if c["column"] == "site"]
    assert not site["warn"] and site["cramers_v"] < 0.3
    assert "confound" not in result.stdout
    assert report["results"][0]["metrics"]["balanced_accuracy"]["pooled"] > 0.9


def test_cramers_v_by_hand():
    assert cramers_v(np.array([[50, 0], [0, 50]])) == pytest.approx(
        np.sqrt((1 - 1 / 99) / (2 - 1 / 99 - 1))
    )
    assert cramers_v(np.array([[25, 25], [25, 25]])) == 0.0


def test_leave_out_says_when_a_held_out_value_lacks_a_class(make_synthetic_store):
    def site(record):  # site C: two normal patients; site B: a few of each class
        j = int(record["patient_id"].rsplit("-p", 1)[1])
        if record["label"] == "normal" and j < 2:
            return "C"
        return "B" if j % 4 == 3 else "A"

    path = make_synthetic_store({"covid": 12, "normal": 12}, meta={"site": site})
    _, report = evaluate(path, "--leave-out", "site")
    c = next(r for r in report["results"] if r["validation"]["held_out"] == "C")
    assert c["validation"]["test_lacks_classes"] == ["covid"]
    assert c["metrics"]["per_class"]["covid"]["sensitivity"]["pooled"] is None
    assert any("held-out site=C has no covid" in w for w in report["warnings"])


def test_leave_out_drops_a_held_out_patients_other_images_from_training(make_synthetic_store):
    seen = {}

    def site(record):  # every patient's second image is at site B
        seen[record["patient_id"]] = seen.get(record["patient_id"], 0) + 1
        return "B" if seen[record["patient_id"]] == 2 else "A"

    path = make_synthetic_store({"covid": 12, "normal": 12}, meta={"site": site})
    _, report = evaluate(path, "--leave-out", "site")
    [b] = report["results"]  # site A cannot be held out: every patient has an image there
    assert b["validation"]["held_out"] == "B"
    assert any("site=A is not held out" in w for w in report["warnings"])
    fs = load(path)
    in_b = set(fs.patient_ids[fs.column("site") == "B"].tolist())
    rows_of_b_patients = int(np.isin(fs.patient_ids, list(in_b)).sum())
    assert b["validation"]["train_rows_dropped_shared_patients"] == rows_of_b_patients - b["n"]
    assert b["validation"]["n_train"] == len(fs) - rows_of_b_patients


def test_external_test_set_and_shared_patients_are_refused(make_synthetic_store, tmp_path):
    split = {}

    def site(record):  # patients 0-7 of each class at B, the rest at A
        return "B" if int(record["patient_id"].rsplit("-p", 1)[1]) < 8 else "A"

    def image_site(record):  # alternate images: a patient's films land at both sites
        split[record["patient_id"]] = split.get(record["patient_id"], 0) + 1
        return "B" if split[record["patient_id"]] % 2 == 0 else "A"

    path = make_synthetic_store(
        {"covid": 20, "normal": 20}, meta={"site": site, "scanner": image_site}
    )
    _, report = evaluate(path, "--test-where", "site=B")
    [r] = report["results"]
    fs = load(path)
    assert r["validation"]["kind"] == "external" and r["n"] == int(np.sum(fs.column("site") == "B"))
    assert r["validation"]["n_train"] == len(fs) - r["n"]
    assert r["metrics"]["balanced_accuracy"]["folds"] == [
        r["metrics"]["balanced_accuracy"]["pooled"]
    ]
    refused = runner.invoke(
        app, ["evaluate", "--features", str(path.parent), *FAST, "--test-where", "scanner=B"]
    )
    assert refused.exit_code == 2 and "patient(s) have images on both sides" in refused.stderr
    both = runner.invoke(
        app,
        [
            "evaluate",
            "--features",
            str(path.parent),
            "--leave-out",
            "site",
            "--test-where",
            "site=B",
        ],
    )
    assert both.exit_code == 2 and "choose one" in both.stderr


def test_group_by_any_column_keeps_its_values_apart(make_synthetic_store):
    def site(record):
        return f"s{int(record['patient_id'].rsplit('-p', 1)[1]) % 6}"

    fs = load(make_synthetic_store({"covid": 18, "normal": 18}, meta={"site": site}))
    plan = CrossValidation(3, group_by="site").plan(fs, TaskSpec(), seed=0)
    assert plan.protocol.unit == "site" and plan.protocol.grouped
    column = plan.data.column("site")
    for split in plan.splits:
        assert not set(column[split.train]) & set(column[split.test])


def scored(name, y, proba, units):
    keys = np.asarray([f"img{i}#1" for i in range(len(y))], dtype=object)
    value = float(outcomes.balanced_accuracy(outcomes.confusion(y, proba.argmax(1), 2)))
    return Scored(name, keys, y, proba, np.asarray(units, dtype=object), value)


BALANCED = metric_table.overall_metric("balanced_accuracy")


def test_paired_difference_by_hand():
    # 20 patients, two images each, one per class; A is right on all, B on one image of each
    y = np.tile([0, 1], 20)
    units = np.repeat([f"p{i}" for i in range(20)], 2)
    right = np.eye(2)[y]
    b = right.copy()
    b[2::4] = right[2::4][:, ::-1]  # B wrong on every other patient's class-0 image...
    b[1::4] = right[1::4][:, ::-1]  # ...and on the other patients' class-1 image
    a_s, b_s = scored("a", y, right, units), scored("b", y, b, units)
    # every patient contributes one right and one wrong image to B: each replicate's balanced
    # accuracy of B is exactly 0.5, of A exactly 1, so the difference is 0.5 with no spread
    diff, ci, p, n = paired_difference(a_s, b_s, BALANCED, Bootstrap(200))
    assert (diff, ci, p, n) == (pytest.approx(0.5), [pytest.approx(0.5)] * 2, 0.0, 40)
    same = paired_difference(a_s, scored("c", y, right.copy(), units), BALANCED, Bootstrap(50))
    assert same[:3] == (0.0, [0.0, 0.0], 1.0)
    [best, other] = compare([a_s, b_s], BALANCED, Bootstrap(200), unit="patient")
    assert best["is_best"] and best["indistinguishable"] and best["best"] == "a"
    assert not other["indistinguishable"] and other["difference"] == pytest.approx(-0.5)


def test_paired_bootstrap_matches_a_direct_loop():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 60)
    units = np.repeat([f"p{i}" for i in range(30)], 2)
    pa = np.clip(np.eye(2)[y] * 0.6 + rng.random((60, 2)) * 0.5, 0, None)
    pb = np.clip(np.eye(2)[y] * 0.5 + rng.random((60, 2)) * 0.6, 0, None)
    a, b = scored("a", y, pa, units), scored("b", y, pb, units)
    diff, ci, _, _ = paired_difference(a, b, BALANCED, Bootstrap(300, seed=3))
    # the same patient draws, applied by repeating rows and scored by scikit-learn
    direct = []
    for weights in metrics.bootstrap_weights(units, 300, 3, y=y):
        for counts in weights.astype(int):
            rows = np.repeat(np.arange(60), counts)
            direct.append(
                balanced_accuracy_score(y[rows], pa[rows].argmax(1))
                - balanced_accuracy_score(y[rows], pb[rows].argmax(1))
            )
    assert diff == pytest.approx(
        balanced_accuracy_score(y, pa.argmax(1)) - balanced_accuracy_score(y, pb.argmax(1))
    )
    assert ci == pytest.approx(list(np.percentile(direct, [2.5, 97.5])))


def test_the_bootstrap_keeps_every_class_in_every_replicate():
    y = np.r_[np.zeros(40, int), np.ones(2, int)]  # a rare class: 2 patients of 42
    units = np.asarray([f"p{i}" for i in range(42)], dtype=object)
    for weights in metrics.bootstrap_weights(units, 500, 0, y=y):
        assert np.all(weights[:, y == 1].sum(axis=1) == 2)  # rare patients drawn twice in all
        assert np.all(weights.sum(axis=1) == 42)
    unstratified = next(metrics.bootstrap_weights(units, 500, 0))
    assert np.any(unstratified[:, y == 1].sum(axis=1) == 0)  # what stratifying prevents


def test_every_result_is_compared_with_the_best(make_synthetic_store):
    path = make_synthetic_store({"covid": 20, "normal": 20}, separation=2.0)
    args = ["--head", "knn", "--folds", "4", "--metric", "roc_auc"]
    result, report = evaluate(path, *args)
    comparisons = [r["comparison"] for r in report["results"]]
    assert sum(c["is_best"] for c in comparisons) == 1 and {c["metric"] for c in comparisons} == {
        "roc_auc"
    }
    best = next(r for r in report["results"] if r["comparison"]["is_best"])
    pooled = [r["metrics"]["roc_auc"]["pooled"] for r in report["results"]]
    assert best["metrics"]["roc_auc"]["pooled"] == max(pooled)
    assert "vs best" in result.stdout and "best" in result.stdout
    entry = report["results"][0]
    for cls in entry["classes"]:
        assert {"sens_at_spec", "spec_at_sens"} <= set(entry["metrics"]["per_class"][cls])
    assert {"brier", "ece"} <= set(entry["metrics"]) and report["settings"][
        "operating_point"
    ] == 0.95


@pytest.mark.skipif(not (CXR_DATA / "manifest.csv").is_file(), reason="../shared data absent")
def test_the_shared_data_in_the_papers_composition_warn_for_dataset(tmp_path):
    """Confounds depend on the metadata only: the shared manifest, with stand-in embeddings."""
    with open(CXR_DATA / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    records = [{**r, "id": f"{i:064x}"} for i, r in enumerate(rows)]
    meta_names = tuple(c for c in rows[0] if c not in ROW_COLUMNS)
    X = np.random.default_rng(0).normal(size=(len(rows), 8)).astype(np.float32)
    attrs = {
        "backbone": "stand_in",
        "dim": 8,
        "input_size": 224,
        "resize": "squash",
        "weights": "random",
        "weights_file": "",
        "weights_sha256": "",
        "weights_seed": 0,
    }
    (tmp_path / "features").mkdir()
    write_atomic(
        tmp_path / "features" / "stand_in.h5",
        StoreContent(
            attrs,
            Table.from_records(records, ROW_COLUMNS),
            Table.from_records(records, meta_names),
            X,
        ),
    )
    where = ["--where", "label=covid | dataset=kermany", "--classes", "covid,bacterial,normal"]
    out = tmp_path / "r.json"
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--features",
            str(tmp_path / "features"),
            *FAST,
            *where,
            "--binary",
            "covid",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    found = {c["column"]: c for c in json.loads(out.read_text())["confounds"]}
    dataset = found["dataset"]
    if "same_as" in dataset:  # source groups the shared rows exactly as dataset does
        assert "dataset, which groups the rows the same way" in result.stdout.replace("\n", " ")
        dataset = found[dataset["same_as"]]
    assert dataset["warn"] and dataset["cramers_v"] > 0.9 and dataset["balanced_accuracy"] > 0.95
    assert "--leave-out" in result.stdout


def test_designs_refuse_what_they_cannot_do(make_synthetic_store, tmp_path):
    def site(record):
        return "B" if int(record["patient_id"].rsplit("-p", 1)[1]) < 6 else "A"

    path = make_synthetic_store({"covid": 12, "normal": 12}, meta={"site": site})
    base = ["evaluate", "--features", str(path.parent), *FAST]
    cases = {
        "identifier": (["--leave-out", "id"], "looks like an identifier"),
        "folds": (["--leave-out", "site", "--folds", "5"], "do not combine"),
        "one class": (["--test-where", "label=normal"], "hold only covid"),
        "plots": (["--plots", str(path)], "is a file"),
        "json": (["--json", str(tmp_path)], "is a folder"),
    }
    for name, (args, message) in cases.items():
        result = runner.invoke(app, [*base, *args])
        assert result.exit_code == 2 and message in result.stderr, (name, result.output)
        assert len(result.stderr.strip().splitlines()) == 1, name


def test_a_metric_undefined_everywhere_is_reported_not_fatal(make_synthetic_store):
    def site(record):
        return "B" if record["label"] == "covid" and record["patient_id"].endswith("1") else "A"

    path = make_synthetic_store({"covid": 12, "normal": 12}, meta={"site": site})
    _, report = evaluate(path, "--test-where", "site=B", "--metric", "roc_auc")
    [r] = report["results"]  # the test rows hold one class: no AUC, no best, no crash
    assert r["metrics"]["roc_auc"]["pooled"] is None and r["comparison"]["difference"] is None
    assert any("test rows have no normal" in w for w in report["warnings"])


def test_a_column_restating_the_target_is_not_a_confound(make_synthetic_store):
    path = make_synthetic_store(
        {"covid": 12, "normal": 12}, meta={"site": site_of, "dataset": site_of}
    )
    _, report = evaluate(path, "--target", "site", "--folds", "3")
    dataset = next(c for c in report["confounds"] if c["column"] == "dataset")
    assert dataset == {"column": "dataset", "values": 2, "skipped": "restates site"}


def test_every_warning_the_terminal_prints_is_in_the_json_and_the_api(make_synthetic_store):
    """A notebook user sees what a terminal user sees: the confound warning and the caution
    about picking the best are in the JSON's warnings and in the API's repr."""
    import cxr

    path = source_only_store(make_synthetic_store)
    result, report = evaluate(path, "--folds", "5", "--head", "knn")
    starts = [
        line for line in result.stdout.splitlines() if line.startswith(("warning: ", "caution: "))
    ]
    assert any(line.startswith("warning: confound: site predicts the label") for line in starts)
    assert any(line.startswith("caution: the best of 2 results") for line in starts)
    words = " ".join  # warnings are wrapped to the terminal: compared word for word
    printed = words(result.stdout.split())
    assert len(starts) == len(report["warnings"])  # each once, and nothing the JSON lacks
    assert all(words(w.split()) in printed for w in report["warnings"])
    ev = cxr.evaluate(path.parent, heads=["logreg", "knn"], folds=5, bootstrap=200, jobs=1)
    assert ev.report["warnings"] == report["warnings"]
    text = words(repr(ev).split())
    assert all(words(f"warning: {w}".split()) in text for w in report["warnings"])
