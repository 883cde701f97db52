"""The Python interface: typed results, DataFrame views, out-of-fold predictions."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from typer.testing import CliRunner

import cxr
from cxr.cli import app
from cxr.errors import CxrError

runner = CliRunner()
THREE = {"bacterial": 10, "covid": 10, "normal": 10}


def test_importing_cxr_stays_light():
    import subprocess
    import sys

    heavy = "('sklearn', 'tensorflow', 'h5py', 'pandas')"
    code = f"import cxr, sys; print(sorted(m for m in {heavy} if m in sys.modules))"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip()
        == "[]"
    )


def test_predictions_without_predictions_say_in_one_line_how_to_get_them(make_synthetic_store):
    """predictions=False is the default (as the CLI's): asking for them then is a CxrError of
    one line that names the keyword that keeps them, and the report holds none."""
    path = make_synthetic_store(THREE, separation=1.5)
    ev = cxr.evaluate(path.parent, heads=["logreg"], folds=3, bootstrap=10, jobs=1)
    assert all("predictions" not in r for r in ev.results)
    with pytest.raises(CxrError) as caught:
        ev.predictions()
    message = str(caught.value)
    assert "\n" not in message and "predictions=True" in message and "--predictions" in message


def test_predictions_reproduce_the_reported_metrics(make_synthetic_store):
    """The per-image predictions are the ones the metrics were computed from: scikit-learn's own
    metrics on them give the pooled values of the report."""
    path = make_synthetic_store(THREE, separation=1.5)
    ev = cxr.evaluate(path.parent, heads=["logreg", "knn"], folds=5, bootstrap=20, predictions=True)
    oof = ev.predictions()
    assert len(oof) == 2 * len(cxr.load_store(path))
    for r in ev.results:
        mine = oof[oof["head"] == r["head"]]
        assert sorted(mine["id"]) == sorted(cxr.load_store(path).ids)  # each image once
        pooled = balanced_accuracy_score(mine["label"], mine["predicted"])
        assert pooled == pytest.approx(r["metrics"]["balanced_accuracy"]["pooled"])
        proba = mine[[f"p_{c}" for c in r["classes"]]].to_numpy()
        auc = roc_auc_score(mine["label"], proba, multi_class="ovr", labels=r["classes"])
        assert auc == pytest.approx(r["metrics"]["roc_auc"]["pooled"])
    summary = ev.summary()
    assert list(summary["head"]) == ["logreg", "knn"]
    assert (summary["balanced_accuracy_lo"] <= summary["balanced_accuracy"]).all()
    assert "[" in repr(ev) and "(best)" in repr(ev)


def test_predictions_in_the_cli_json_need_a_json_path(make_synthetic_store):
    path = make_synthetic_store(THREE)
    base = ["evaluate", "--features", str(path.parent), "--head", "logreg", "--folds", "3"]
    refused = runner.invoke(app, [*base, "--predictions"])
    assert refused.exit_code == 2 and "add --json" in refused.output
    done = runner.invoke(app, [*base, "--predictions", "--bootstrap", "20", "--json", "-"])
    [r] = json.loads(done.stdout)["results"]
    assert set(r["predictions"]) == {"id", "path", "group", "label", "split", "proba"}
    assert len(r["predictions"]["id"]) == r["n"]
    plain = runner.invoke(app, [*base, "--bootstrap", "20", "--json", "-"])
    assert "predictions" not in json.loads(plain.stdout)["results"][0]


def test_frame_view_types_numeric_columns_and_keeps_ids_as_text(make_synthetic_store):
    ages = {"covid-p0-0": ""}  # one missing value
    path = make_synthetic_store(
        THREE,
        meta={
            "age": lambda r: ages.get(r["id"], str(40 + len(r["id"]) % 7)),
            "bmi": lambda r: "22.5",
            "view": lambda r: "PA",
            "mrn": lambda r: "000123",
        },
    )
    fs = cxr.load_store(path.parent)  # the folder's one store
    frame = fs.to_frame()
    assert len(frame) == len(fs)
    assert str(frame["age"].dtype) == "Int64" and frame["age"].isna().sum() == 1
    assert frame["bmi"].dtype == np.float64 and frame["view"].iloc[0] == "PA"
    assert frame["patient_id"].iloc[0] == fs.patient_ids[0]
    assert isinstance(frame, pd.DataFrame)
    assert np.isnan(fs.numeric("age")).sum() == 1
    with pytest.raises(CxrError, match="column 'view' is not numeric"):
        fs.numeric("view")
    assert repr(fs).startswith(f"FeatureSet(mobilenet_v2: {len(fs)} rows x 8 dims")


def test_api_task_options_are_python_values(make_synthetic_store):
    path = make_synthetic_store({"bacterial": 10, "covid": 10, "normal": 10, "viral": 10})
    ev = cxr.evaluate(
        path.parent,
        heads=["logreg"],
        merge={"pneumonia": ["bacterial", "viral"]},
        classes=["covid", "pneumonia"],
        params={"logreg": {"C": [0.1, 1.0]}},
        search=True,
        folds=3,
        bootstrap=20,
    )
    [r] = ev.results
    assert r["classes"] == ["covid", "pneumonia"]
    assert r["search"]["grid"] == {"clf__C": [0.1, 1.0]}


def test_audit_is_callable_even_after_its_package_is_imported(monkeypatch):
    """A real audit through the API runs in test_readme; here, that the name reaches it."""
    import cxr.audit.run

    calls = []
    monkeypatch.setattr("cxr.api.audit", lambda *a, **k: calls.append((a, k)) or "report")
    assert cxr.audit("features", "mobilenet_v2", seed=3) == "report"
    assert calls == [(("features", "mobilenet_v2"), {"seed": 3})]


def test_a_text_where_a_list_belongs_is_the_clis_list_and_a_misspelt_keyword_is_refused(
    make_synthetic_store,
):
    """``covariates="view"`` is one name, never four letters; ``covariates="view,age"`` two,
    as ``--covariates view,age``. A keyword no setting defines is Python's TypeError, with the
    setting it resembles."""
    path = make_synthetic_store(THREE)
    with pytest.raises(CxrError, match=r"`covariates` view: no column 'view'"):
        cxr.evaluate(path.parent, covariates="view,age")
    with pytest.raises(CxrError, match="unknown head 'lgoreg'"):
        cxr.evaluate(path.parent, heads=["lgoreg"])
    with pytest.raises(
        TypeError, match=r"unexpected keyword argument 'fold' \(did you mean 'folds'"
    ):
        cxr.evaluate(path.parent, fold=3)


def test_api_takes_the_cli_option_names_and_labels_covariate_results(make_synthetic_store):
    path = make_synthetic_store(THREE, meta={"site": lambda r: "a" if len(r["id"]) % 2 else "b"})
    ev = cxr.evaluate(
        path.parent,
        heads=["logreg"],
        folds=3,
        bootstrap=20,
        train_sizes=[3, "all"],
        covariates=["site"],
        confounds=(),
    )
    assert ev.report["provenance"]["bootstrap"]["replicates"] == 20
    assert [p["size"] for p in ev.report["learning_curves"][0]["points"]] == ["3", "all"]
    text = repr(ev)
    assert "mobilenet_v2 + logreg:" in text and "mobilenet_v2 & site + logreg:" in text
