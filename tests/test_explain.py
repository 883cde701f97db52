"""`cxr explain`: the maps are the heads' own arithmetic (exact for a linear head, the gradient
for the MLP), the box's share is exact, and the command runs end to end on real films."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import make_class_folders, small_weights
from typer.testing import CliRunner

from cxr.classify.explain import (
    box_fraction,
    evidence,
    score_gradient,
    share_outside,
    summarize,
)
from cxr.classify.heads import build_head
from cxr.cli import app

runner = CliRunner()


def tiny_maps(seed=0, n=60, h=3, w=3, c=6):
    """Feature maps whose mean over the cells separates three classes."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    maps = rng.normal(size=(n, h, w, c))
    maps[..., :3] += 2.0 * np.eye(3)[y][:, None, None, :]
    return maps, maps.mean(axis=(1, 2)), y


@pytest.mark.parametrize("params", [{}, {"pca": 3}])
def test_the_map_of_a_linear_head_is_its_score_cell_by_cell(params):
    """CAM: the score is the mean of the map plus a constant, for every film and class."""
    maps, z, y = tiny_maps()
    pipeline = build_head("logreg", params, 0).fit(z, y)
    logits = pipeline.decision_function(z)
    for k in range(3):
        means = np.array([evidence(m, score_gradient(pipeline, zi, k)).mean() for m, zi in
                          zip(maps, z, strict=True)])  # fmt: skip
        offset = logits[:, k] - means
        np.testing.assert_allclose(offset, offset[0], atol=1e-8)  # the same constant for all


def test_a_binary_linear_heads_two_classes_have_opposite_maps():
    maps, z, y = tiny_maps()
    keep = y < 2
    pipeline = build_head("logreg", {}, 0).fit(z[keep], y[keep])
    g1, g0 = score_gradient(pipeline, z[0], 1), score_gradient(pipeline, z[0], 0)
    np.testing.assert_allclose(g1, -g0)
    means = np.array([evidence(m, g1).mean() for m in maps[keep]])
    offset = pipeline.decision_function(z[keep]) - means
    np.testing.assert_allclose(offset, offset[0], atol=1e-8)


def test_the_mlps_gradient_is_its_finite_difference():
    """Grad-CAM's weights: d log p_k / dz from the backpropagated logits equals the numerical
    derivative of scikit-learn's own probabilities."""
    _, z, y = tiny_maps(1)
    pipeline = build_head(
        "mlp", {"hidden_layer_sizes": (8,), "early_stopping": False, "max_iter": 2000}, 0
    )
    pipeline.fit(z, y)
    point = z[5]
    p = pipeline.predict_proba(point[None])[0]
    grads = np.stack([score_gradient(pipeline, point, k) for k in range(3)])
    for k in range(3):
        analytic = grads[k] - p @ grads  # d log softmax_k
        step = 1e-6
        numeric = np.array([
            (np.log(pipeline.predict_proba((point + step * e)[None])[0, k])
             - np.log(pipeline.predict_proba((point - step * e)[None])[0, k])) / (2 * step)
            for e in np.eye(len(point))
        ])  # fmt: skip
        np.testing.assert_allclose(analytic, numeric, rtol=1e-4, atol=1e-6)


def test_the_box_share_is_exact_and_evenly_spread_evidence_gives_the_area():
    inside = box_fraction(7, 7, 0.6)
    assert inside.sum() == pytest.approx(49 * 0.36)  # the box's area, cell fractions included
    np.testing.assert_allclose(inside, inside[::-1, ::-1])
    assert inside[3, 3] == 1 and inside[0, 0] == 0 and 0 < inside[1, 3] < 1
    assert share_outside(np.ones((7, 7)), inside) == pytest.approx(1 - 0.36)
    centre = np.zeros((7, 7))
    centre[3, 3] = 5.0
    assert share_outside(centre, inside) == 0.0
    assert share_outside(-np.ones((7, 7)), inside) is None  # no positive evidence at all


def test_groups_have_a_mean_and_an_interval():
    shares = [0.1, 0.2, 0.3, 0.9, None]
    groups = summarize(shares, ["a", "a", "a", "b", "b"], ["p1", "p2", "p3", "p4", "p5"])
    assert groups["a"]["n"] == 3 and groups["a"]["mean"] == pytest.approx(0.2)
    lo, hi = groups["a"]["ci95"]
    assert 0.1 <= lo <= 0.2 <= hi <= 0.3
    assert groups["b"] == {"n": 1, "mean": 0.9, "ci95": [None, None]}  # one patient: no CI
    two_films_one_patient = summarize([0.1, 0.3], ["a", "a"], ["p1", "p1"])
    assert two_films_one_patient["a"]["ci95"] == [None, None]


@pytest.mark.slow
@pytest.mark.realweights
@pytest.mark.parametrize("head", ["logreg", "knn"])  # a map, and occlusion
def test_explain_runs_end_to_end_on_real_weights(tmp_path, head):
    weights = small_weights()
    if weights == ["random"]:
        pytest.skip("real weights not available")
    data = make_class_folders(tmp_path / "data", per_class=6)
    features = tmp_path / "features"
    args = ["features", str(data), "-b", "mobilenet_025", "--features", str(features)]
    assert runner.invoke(app, [*args, "--weights", weights[0]]).exit_code == 0
    model = tmp_path / "m.skops"
    args = ["train", "--features", str(features), "--head", head, "--out", str(model)]
    assert runner.invoke(app, args).exit_code == 0
    out, report = tmp_path / "maps", tmp_path / "explain.json"
    args = ["explain", "--model", str(model), "--features", str(features), "--sample", "3"]
    result = runner.invoke(app, [*args, "--out", str(out), "--json", str(report)])
    assert result.exit_code == 0, result.output
    document = json.loads(report.read_text())
    assert document["method"] == ("cam" if head == "logreg" else "occlusion")
    assert len(document["films"]) == 6 and set(document["by_class"]) == {"covid", "normal"}
    assert all(0 <= f["share_outside"] <= 1 for f in document["films"] if f["share_outside"])
    assert all((out / f["overlay"].split("/")[-1]).is_file() for f in document["films"])
    assert {p.split("/")[-1] for p in document["plots"]} >= {"sheet-class-covid.png"}
    assert "evidence spread evenly: 64%" in " ".join(result.output.split())


@pytest.mark.realweights
def test_the_feature_maps_mean_is_the_stored_embedding(tmp_path):
    """The head is explained on what it was fitted on: the pooled feature map is the store's
    vector of the same film."""
    weights = small_weights()
    if weights == ["random"]:
        pytest.skip("real weights not available")
    from cxr.extract.explain import feature_maps
    from cxr.extract.runner import extract_features
    from cxr.store import load

    data = make_class_folders(tmp_path / "data", per_class=2)
    extract_features(data=data, manifest=None, backbones=["mobilenet_025"], weights=weights,
                     features_dir=tmp_path / "f")  # fmt: skip
    fs = load(tmp_path / "f", "mobilenet_025")
    files = [data / p for p in fs.rows["path"]]
    maps = feature_maps(files, backbone="mobilenet_025", weights=weights)
    assert maps.maps.shape[1:] == (7, 7, 256)
    np.testing.assert_allclose(maps.embeddings, fs.X, atol=1e-4)


def test_evaluate_draws_the_confidently_wrong_films_and_the_confound(tmp_path, monkeypatch):
    """Galleries with --plots: per class, the films the best result called wrong, most
    confident first, each with its source; and the strongest confound's table as a heatmap."""
    import hashlib

    from helpers import SYNTHETIC_ATTRS, save_png

    from cxr.store.schema import ROW_COLUMNS, StoreContent, Table, write_atomic

    rng = np.random.default_rng(0)
    data, features, rows = tmp_path / "data", tmp_path / "features", []
    for n in range(40):
        label = ("covid", "normal")[n % 2]
        path = f"{label}/film{n}.png"
        digest = hashlib.sha256(save_png(data / path, n).read_bytes()).hexdigest()
        site = label if n % 5 else ("normal" if label == "covid" else "covid")  # 80% aligned
        rows.append({"id": digest, "path": path, "label": label, "patient_id": f"p{n}",
                     "source": f"site-{site}"})  # fmt: skip
    X = rng.normal(size=(40, 4)) + 0.8 * np.asarray([[r["label"] == "covid"] for r in rows])
    features.mkdir()
    write_atomic(
        features / "mobilenet_v2.h5",
        StoreContent(
            {**SYNTHETIC_ATTRS, "backbone": "mobilenet_v2", "dim": 4, "data_root": str(data)},
            Table.from_records(rows, ROW_COLUMNS),
            Table({}),
            X.astype(np.float32),
        ),
    )
    seen = []
    from cxr.extract import images

    original = images.thumbnail
    monkeypatch.setattr(images, "thumbnail", lambda p, *a: seen.append(p) or original(p, *a))
    plots = tmp_path / "plots"
    args = ["evaluate", "--features", str(features), "--head", "logreg", "--folds", "4"]
    result = runner.invoke(app, [*args, "--bootstrap", "50", "--plots", str(plots)])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in plots.iterdir())
    assert any(n.endswith("-wrong-covid.png") for n in names)
    assert any(n.endswith("-wrong-normal.png") for n in names)
    assert any(n.endswith("-confound-source.png") for n in names)
    assert seen and all(p.is_file() and p.parent.parent == data for p in seen)  # the films
