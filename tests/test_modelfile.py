"""Model files from anyone (`cxr.classify.modelfile`, through `load_model` and `predict`): each
test builds the archive the way an attacker would (trees and neighbour indices that point
anywhere, types skops trusts but no head needs, schema bombs, arrays that declare more than they
hold, bundles with odd fields) and checks that it is refused in one line naming the file, before
any of it runs (crashes that would kill the test process run in a subprocess). Moved from
tests/test_hostile.py, every case kept."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio

from cxr.classify.heads import build_head
from cxr.classify.model import MODEL_FORMAT, load_model, predict
from cxr.errors import CxrError

CLASSES = ["a", "b", "c"]


def _bundle(head: str, dim: int = 8, rows: int = 60, **params) -> dict:
    """A model bundle as `cxr train` writes it, around a head fitted on small synthetic data."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(rows, dim)), np.arange(rows) % 3
    X[y == 1] += 2.0
    return {
        "format": MODEL_FORMAT,
        "pipeline": build_head(head, params, random_state=0).fit(X, y),
        "backbone": "mobilenet_v2",
        "head": head,
        "fingerprint": {
            "backbone": "mobilenet_v2",
            "input_size": 224,
            "resize": "squash",
            "weights_sha256": "ab" * 32,
            "weights_seed": -1,
            "runtime": "tensorflow",
            "precision": "f32",
        },
        "weights": "imagenet",
        "classes": CLASSES,
        "n_features": dim,
        "versions": {},
    }


def _saved(tmp_path: Path, bundle: dict, name: str = "m.skops") -> Path:
    path = tmp_path / name
    sio.dump(bundle, path)
    return path


def _nodes(path: Path, match) -> list[dict]:
    """The schema's nodes (dicts with a loader) for which ``match(node)`` holds."""
    found, stack = [], [json.loads(zipfile.ZipFile(path).read("schema.json"))]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__loader__" in node and match(node):
                found.append(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def _rewritten(path: Path, out: Path, members: dict) -> Path:
    """A copy of the archive with some members replaced: what an attacker does with a zip."""
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, members.get(item.filename, src.read(item)))
    return out


def _edit_array(path: Path, out: Path, member: str, edit) -> Path:
    array = np.load(io.BytesIO(zipfile.ZipFile(path).read(member)))
    edit(array)
    buffer = io.BytesIO()
    np.save(buffer, array)
    return _rewritten(path, out, {member: buffer.getvalue()})


def _tree_nodes(path: Path) -> str:
    [first, *_] = _nodes(path, lambda n: n["__loader__"] == "TreeNode")
    return first["content"]["content"]["nodes"]["file"]


# ---- model files: trees and neighbour indices -------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda nodes: nodes["left_child"].__setitem__(0, 10**7), "outside its"),  # segfault
        (lambda nodes: nodes["right_child"].__setitem__(0, 0), "back up the tree"),  # hangs
        (lambda nodes: nodes["feature"].__setitem__(0, 10**6), "splits on a feature outside"),
    ],
    ids=["child-out-of-bounds", "cycle", "feature-out-of-bounds"],
)
def test_a_forest_whose_nodes_point_anywhere_is_refused(tmp_path, edit, reason):
    good = _saved(tmp_path, _bundle("forest", n_estimators=3))
    evil = _edit_array(good, tmp_path / "evil.skops", _tree_nodes(good), edit)
    with pytest.raises(CxrError, match=f"evil.skops: refused: tree \\d of the forest.*{reason}"):
        load_model(evil)


def test_a_knn_tree_with_indices_past_its_data_cannot_crash_predict(tmp_path):
    """The KD-tree's index array is never trusted: rebuilt from the checked training vectors,
    the model predicts exactly what the honest file does (before: a segmentation fault)."""
    good = _saved(tmp_path, _bundle("knn"))
    [tree] = _nodes(good, lambda n: n["__class__"] == "KDTree")
    index_array = tree["content"]["content"][1]["file"]
    evil = _edit_array(good, tmp_path / "evil.skops", index_array, lambda a: a.fill(10**8))
    code = (
        "import sys, numpy as np\n"
        "from cxr.classify.model import load_model\n"
        "X = np.random.default_rng(1).normal(size=(5, 8))\n"
        "p = [load_model(sys.argv[i])['pipeline'].predict_proba(X) for i in (1, 2)]\n"
        "assert np.array_equal(p[0], p[1]), p\n"
        "print('same predictions')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(good), str(evil)], capture_output=True, text=True
    )
    assert done.returncode == 0 and "same predictions" in done.stdout, done.stderr[-2000:]


def test_a_knn_whose_labels_or_vectors_do_not_fit_is_refused(tmp_path):
    bundle = _bundle("knn")
    knn = bundle["pipeline"][-1]
    knn._y = knn._y + 7
    with pytest.raises(CxrError, match="refused: the kNN's training labels"):
        load_model(_saved(tmp_path, bundle))
    bundle = _bundle("knn")
    bundle["pipeline"][-1]._fit_X = bundle["pipeline"][-1]._fit_X[:, :3].copy()
    with pytest.raises(CxrError, match="refused: the kNN's training vectors"):
        load_model(_saved(tmp_path, bundle))


def test_an_svm_whose_support_arrays_disagree_is_refused(tmp_path):
    """libsvm reads the dual coefficients by the support counts: a short array is read past its
    end (NaN probabilities here, a crash elsewhere)."""
    bundle = _bundle("svm")
    svc = bundle["pipeline"][-1].calibrated_classifiers_[0].estimator
    svc._dual_coef_ = svc._dual_coef_[:, :2].copy()
    with pytest.raises(CxrError, match=r"refused: the SVM's _dual_coef_ has shape \(2, 2\)"):
        load_model(_saved(tmp_path, bundle))


# ---- model files: only cxr's own types ---------------------------------------------------------


def test_types_skops_trusts_but_no_cxr_head_needs_are_refused(tmp_path):
    """skops' defaults trust every scikit-learn estimator and every NumPy ufunc; cxr trusts the
    types of its own heads only, wherever they sit in the file."""
    from sklearn.dummy import DummyClassifier
    from sklearn.pipeline import Pipeline

    with_ufunc = {**_bundle("logreg"), "extra": np.add}
    with pytest.raises(CxrError, match=r"does not trust \(numpy\.add \(as FunctionNode\)\)"):
        load_model(_saved(tmp_path, with_ufunc))
    other = _bundle("logreg")
    X, y = np.zeros((6, 8)), np.arange(6) % 3
    other["pipeline"] = Pipeline([("clf", DummyClassifier().fit(X, y))])
    assert sio.get_untrusted_types(file=_saved(tmp_path, other)) == []  # skops would load it
    with pytest.raises(CxrError, match=r"does not trust \(sklearn\.dummy\.DummyClassifier\)"):
        load_model(_saved(tmp_path, other))


def test_a_schema_bomb_is_refused_before_it_is_read(tmp_path):
    """A few hundred kilobytes of zip whose schema.json inflates to 100 MB (the reported case:
    1.5 MB to 1.5 GB, 3.4 GB of memory); valid JSON, so it loaded before."""
    good = _saved(tmp_path, _bundle("logreg"))
    bomb = tmp_path / "bomb.skops"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            if item.filename != "schema.json":
                dst.writestr(item.filename, src.read(item))
        with dst.open("schema.json", "w", force_zip64=True) as schema:
            for _ in range(100):
                schema.write(b" " * (1 << 20))
            schema.write(src.read("schema.json"))
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(CxrError, match=r"bomb.skops: refused: its members unpack to 104,8.* bomb"):
        load_model(bomb)


def test_an_array_declaring_more_than_it_holds_is_refused(tmp_path):
    good = _saved(tmp_path, _bundle("logreg"))
    member = next(n for n in zipfile.ZipFile(good).namelist() if n.endswith(".npy"))
    header = io.BytesIO()  # a header alone: ten billion float64 values, and no data
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (10**10,)}
    )
    evil = _rewritten(good, tmp_path / "evil.skops", {member: header.getvalue()})
    with pytest.raises(CxrError, match=r"refused: .*declares a 10000000000 float64 array"):
        load_model(evil)


# ---- model files: the bundle's own fields ------------------------------------------------------


def _embedder(dim: int = 8):
    def embed(inputs, **settings):
        return types.SimpleNamespace(
            X=np.zeros((len(inputs), dim), np.float32),
            paths=[str(p) for p in inputs],
            rejected=[],
            attrs={**_bundle("logreg")["fingerprint"], "dim": dim},
        )

    return embed


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda b: b["fingerprint"].pop("weights_sha256"), "the fingerprint lacks weights_sha256"),
        (lambda b: b.update(fingerprint="mobilenet_v2"), "fingerprint is not a mapping"),
        (lambda b: b.update(classes="abc"), "classes must be a list"),
        (lambda b: b.update(n_features="8"), "n_features is '8'"),
        (lambda b: b.update(versions=["sklearn"]), "versions is not a mapping"),
        (
            lambda b: setattr(b["pipeline"][-1], "classes_", np.array(["a", "b", "c"])),
            "the classifier.s classes_ are not indices",
        ),
        (
            lambda b: setattr(b["pipeline"][-1], "coef_", np.zeros((3, 5))),
            "it does not run",
        ),
    ],
    ids=[
        "no-weights-sha256",
        "fingerprint-text",
        "classes-text",
        "n-features-text",
        "versions-list",
        "string-classes_",
        "wrong-shape",
    ],
)
def test_a_bundle_with_odd_fields_is_one_line(tmp_path, change, reason):
    """Before, these loaded and `cxr predict` then failed with a traceback (KeyError,
    TypeError, IndexError, ValueError) after embedding the images."""
    bundle = _bundle("logreg")
    change(bundle)
    model = _saved(tmp_path, bundle)
    with pytest.raises(CxrError, match=f"m.skops: refused: {reason}"):
        predict(model, [tmp_path / "x.png"], _embedder())
