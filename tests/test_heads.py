"""The head registry: pipelines, defaults, and validation of --set / TOML hyper-parameters."""

import numpy as np
import pytest
from helpers import FOUR, evaluate
from sklearn.preprocessing import StandardScaler

from cxr.classify import modelfile
from cxr.classify.evaluate import grid_edges
from cxr.classify.heads import (
    HEADS,
    Grid,
    Head,
    build_head,
    effective_params,
    needs_inner_cv,
    parse_params,
    search_grid,
)
from cxr.errors import CxrError


@pytest.mark.parametrize("name", sorted(HEADS))
def test_every_head_is_a_scaled_pipeline_with_probabilities(name):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 4))
    y = np.arange(30) % 3
    params = {"max_iter": 50, "hidden_layer_sizes": (8,)} if name == "mlp" else {}
    pipeline = build_head(name, params, random_state=0).fit(X, y)
    assert isinstance(pipeline.steps[0][1], StandardScaler)
    proba = pipeline.predict_proba(X)
    assert proba.shape == (30, 3)
    assert np.allclose(proba.sum(axis=1), 1)


def test_mlp_defaults_are_the_documented_single_relu_layer():
    params = effective_params("mlp")
    assert len(params["hidden_layer_sizes"]) == 1
    assert params["activation"] == "relu" and params["solver"] == "adam"


def test_set_values_are_parsed():
    params = parse_params(
        [
            "mlp.hidden_layer_sizes=512,256",
            "mlp.alpha=1e-3",
            "mlp.early_stopping=false",
            "svm.gamma=scale",
        ]
    )
    assert params["mlp"] == {
        "hidden_layer_sizes": (512, 256),
        "alpha": 1e-3,
        "early_stopping": False,
    }
    assert params["svm"] == {"gamma": "scale"}
    assert parse_params(["mlp.hidden_layer_sizes=512"])["mlp"]["hidden_layer_sizes"] == 512


def test_toml_then_command_line(tmp_path):
    config = tmp_path / "heads.toml"
    config.write_text("[mlp]\nhidden_layer_sizes = [64]\nalpha = 0.01\n[knn]\nn_neighbors = 3\n")
    params = parse_params(["mlp.alpha=0.1"], config)
    assert params == {"mlp": {"hidden_layer_sizes": (64,), "alpha": 0.1}, "knn": {"n_neighbors": 3}}


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("tree.depth=3", "unknown head 'tree'"),
        ("mlp.hidden=3", "has no parameter 'hidden'"),
        ("mlp.alpha=-1", "head 'mlp'"),
        ("knn.n_neighbors=many", "head 'knn'"),
        ("mlp.alpha", "expected HEAD.PARAM=VALUE"),
    ],
)
def test_bad_parameters_are_refused(assignment, message):
    with pytest.raises(CxrError, match=message):
        parse_params([assignment])


def test_bad_toml_is_refused(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("alpha = 1\n")
    with pytest.raises(CxrError, match="must be a table"):
        parse_params([], config)


def test_search_grid_uses_pipeline_names_and_skips_fixed_params():
    assert search_grid("logreg") == {"clf__C": [0.01, 0.1, 1.0, 10.0]}
    assert "clf__estimator__C" in search_grid("svm")
    assert "clf__alpha" not in search_grid("mlp", {"alpha": 1e-3})


def test_svm_projects_on_principal_components_inside_the_fold_unless_told_not_to():
    from cxr.classify.reduce import Reduce

    steps = dict(build_head("svm", random_state=0).steps)
    assert isinstance(steps["reduce"], Reduce) and steps["reduce"].n_components == 128
    assert "reduce" not in dict(build_head("svm", parse_params(["svm.pca=none"])["svm"]).steps)
    assert "reduce" not in dict(build_head("logreg").steps)  # only where the registry says
    assert dict(build_head("logreg", {"pca": 16}).steps)["reduce"].n_components == 16
    with pytest.raises(CxrError, match="pca must be a number of components"):
        parse_params(["svm.pca=0"])
    rng = np.random.default_rng(0)
    wide = rng.normal(size=(50, 300))
    assert Reduce(128).fit(wide).transform(wide).shape == (50, 49)  # capped by the rows
    narrow = rng.normal(size=(50, 8))
    assert Reduce(128).fit(narrow).transform(narrow) is narrow  # nothing to reduce
    assert search_grid("svm", parse_params(["svm.pca=64,128,256"])["svm"])[
        "reduce__n_components"
    ] == [64, 128, 256]


def test_a_head_is_one_registry_entry_model_file_allow_list_included(monkeypatch):
    """The model file admits what the registry's heads hold when fitted, derived from it: a
    head added to the registry is admitted (and checked as numpy-only), none other is; whether
    a head cross-validates inside its training rows is its own record, not its name."""
    toy = "sklearn.naive_bayes.GaussianNB"
    assert toy not in modelfile.allowed()["ObjectNode"]
    monkeypatch.setitem(HEADS, "nb", Head("nb", "Gaussian naive Bayes", toy, {}, {}))
    monkeypatch.setitem(
        HEADS, "calibrated-nb", Head("calibrated-nb", "calibrated", toy, {}, {}, calibrated=True)
    )
    assert toy in modelfile.allowed()["ObjectNode"]
    from sklearn.naive_bayes import GaussianNB

    assert GaussianNB in modelfile._classifier_checks()
    assert needs_inner_cv(["logreg", "svm"], search=False)
    assert not needs_inner_cv(["logreg", "nb"], search=False)
    assert needs_inner_cv(["calibrated-nb"], search=False)
    assert needs_inner_cv(["nb"], search=True)


# ---- traps a user met (issue 15; moved from tests/test_traps.py) --------------------


def test_a_list_widens_the_search_grid_and_needs_search(make_synthetic_store):
    params = parse_params(["logreg.C=10,100,1000", "mlp.hidden_layer_sizes=64,32"])
    assert isinstance(params["logreg"]["C"], Grid)
    assert params["mlp"]["hidden_layer_sizes"] == (64, 32)  # a list the parameter itself takes
    assert search_grid("logreg", params["logreg"]) == {"clf__C": [10, 100, 1000]}
    path = make_synthetic_store(FOUR)
    with pytest.raises(CxrError, match="lists 3 values: add `search`"):
        evaluate(path.parent, heads=["logreg"], params=params, folds=3, bootstrap=20)
    report = evaluate(
        path.parent, heads=["logreg"], params=params, folds=3, bootstrap=20, search=True
    )
    assert report["results"][0]["search"]["grid"] == {"clf__C": [10, 100, 1000]}
    assert {b["C"] for b in report["results"][0]["search"]["best_params"]} <= {10, 100, 1000}


def test_a_toml_list_of_lists_is_a_grid_and_a_typo_names_the_file(tmp_path):
    config = tmp_path / "heads.toml"
    config.write_text("[mlp]\nhidden_layer_sizes = [[128], [256, 64]]\n")
    assert parse_params([], config)["mlp"]["hidden_layer_sizes"] == Grid(((128,), (256, 64)))
    config.write_text("[mlp]\nalpah = 0.1\n")
    with pytest.raises(CxrError, match=rf"^{config}: head 'mlp' has no parameter 'alpah'"):
        parse_params([], config)


def test_search_at_the_edge_of_its_grid_warns():
    chosen = [{"C": 10.0}] * 9 + [{"C": 1.0}]
    [warning] = grid_edges("logreg", {"clf__C": [0.01, 0.1, 1.0, 10.0]}, chosen)
    assert "C=10 is the largest value of its grid in 9 of 10 folds" in warning
    assert "--set logreg.C=0.01,0.1,1,10,100" in warning
    assert grid_edges("logreg", {"clf__C": [0.01, 0.1, 1.0, 10.0]}, [{"C": 1.0}] * 10) == []
    assert grid_edges("mlp", {"clf__alpha": [1e-4, 1e-2]}, [{"alpha": 1e-2}] * 10) == []
