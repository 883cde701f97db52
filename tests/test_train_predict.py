"""`cxr train` then `cxr predict`; stage 1's embedder is replaced by a fake (no TensorFlow)."""

import json
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pytest
import skops.io as sio
from helpers import (
    FOUR,
    dicom_bytes,
)
from typer.testing import CliRunner

from cxr.classify.heads import HEADS, build_head
from cxr.classify.model import MODEL_FORMAT, load_model
from cxr.cli import app
from cxr.errors import CxrError
from cxr.extract.dataset import list_images
from cxr.store import load
from cxr.store.schema import Reject, fingerprint

runner = CliRunner()
BUNDLE_STUB = {  # the bundle's other keys (see cxr.classify.model.BUNDLE_KEYS)
    "backbone": "b",
    "fingerprint": {
        "backbone": "b",
        "input_size": 224,
        "resize": "squash",
        "weights_sha256": "ab" * 32,
        "weights_seed": -1,
    },
    "weights": "imagenet",
    "classes": ["a", "b", "c"],
    "n_features": 5,
}


@pytest.fixture
def fake_extract(monkeypatch):
    """Replace stage 1's embedder (which the CLI hands to `predict`) by one that returns stored
    embeddings by file name; it lists folders with stage 1's own `list_images`."""
    calls = []

    def install(store_path: Path, attrs_override: dict | None = None):
        fs = load(store_path)
        by_name = {Path(p).name: x for p, x in zip(fs.rows["path"], fs.X, strict=True)}

        def embed_images(inputs, *, backbone, weights, resize="squash", seed=0, **engine):
            paths = list_images(inputs)
            calls.append({"paths": paths, "backbone": backbone, "weights": weights})
            known = [p for p in paths if Path(p).name in by_name]
            return types.SimpleNamespace(
                X=np.stack([by_name[Path(p).name] for p in known]),
                paths=[str(p) for p in known],
                rejected=[
                    Reject(str(p), "cannot decode") for p in paths if Path(p).name not in by_name
                ],
                attrs={**fs.attrs, **(attrs_override or {})},
            )

        monkeypatch.setattr("cxr.extract.runner.embed_images", embed_images)
        return calls

    return install


def images_like(store_path: Path, folder: Path, count: int) -> list[Path]:
    """Empty files named like the store's first rows (the fake embedder looks them up by name)."""
    folder.mkdir(parents=True, exist_ok=True)
    fs = load(store_path)
    files = []
    for p in fs.rows["path"][:count]:
        files.append(folder / Path(p).name)
        files[-1].write_bytes(b"")
    return files


def train_model(store_path: Path, out: Path, *extra: str):
    result = runner.invoke(
        app,
        [
            "train",
            "--features",
            str(store_path.parent),
            "--head",
            "logreg",
            "--out",
            str(out),
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    return result


def test_round_trip(make_synthetic_store, fake_extract, tmp_path):
    store_path = make_synthetic_store(separation=8.0)
    model = tmp_path / "m.skops"
    summary = json.loads(train_model(store_path, model, "--json", "-").stdout)
    fs = load(store_path)
    assert summary["fingerprint"] == fingerprint(fs.attrs) and summary["n"] == len(fs)
    calls = fake_extract(store_path)
    folder = tmp_path / "new"
    images = images_like(store_path, folder, 6)
    (folder / "notes.txt").write_text("not an image")
    result = runner.invoke(app, ["predict", str(folder), "--model", str(model), "--json", "-"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert calls[0]["paths"] == sorted(images) and calls[0]["weights"] == ["imagenet"]
    assert out["classes"] == ["bacterial", "covid", "normal"]
    truth = dict(zip((Path(p).name for p in fs.rows["path"]), fs.labels, strict=True))
    for p in out["predictions"]:
        assert sum(p["probabilities"].values()) == pytest.approx(1.0)
        assert p["predicted"] == truth[Path(p["path"]).name]  # well separated: must be right
    table = runner.invoke(app, ["predict", str(images[0]), "--model", str(model)])
    assert table.exit_code == 0 and "predicted" in table.output


def test_task_options_are_saved(make_synthetic_store, tmp_path):
    store_path = make_synthetic_store({"bacterial": 5, "covid": 5, "normal": 5, "viral": 5})
    summary = json.loads(
        train_model(store_path, tmp_path / "m.skops", "--binary", "covid", "--json", "-").stdout
    )
    assert summary["classes"] == ["non-covid", "covid"] and summary["task"]["binary"] == "covid"


def test_other_weights_are_refused(make_synthetic_store, fake_extract, tmp_path):
    store_path = make_synthetic_store()
    model = tmp_path / "m.skops"
    train_model(store_path, model)
    fake_extract(store_path, {"weights_sha256": "cd" * 32})
    images = images_like(store_path, tmp_path / "new", 2)
    result = runner.invoke(app, ["predict", *map(str, images), "--model", str(model)])
    assert result.exit_code == 2
    assert str(model) in result.stderr and "ab" * 32 in result.stderr and "cd" * 32 in result.stderr


def test_a_file_that_is_not_a_model(tmp_path, fake_extract, make_synthetic_store):
    fake_extract(make_synthetic_store())
    junk = tmp_path / "junk.joblib"
    junk.write_bytes(b"definitely not a pickle")
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    for model in (junk, tmp_path / "missing.joblib"):
        result = runner.invoke(app, ["predict", str(image), "--model", str(model)])
        assert result.exit_code == 2 and str(model) in result.stderr
        assert "Traceback" not in result.output


def test_train_needs_a_backbone_when_several_stores(make_synthetic_store, tmp_path):
    make_synthetic_store(backbone="a")
    store_path = make_synthetic_store(backbone="b")
    result = runner.invoke(
        app, ["train", "--features", str(store_path.parent), "--out", str(tmp_path / "m")]
    )
    assert result.exit_code == 2 and "--backbone" in result.stderr


def test_stage_2_never_imports_stage_1():
    """Every module of cxr.classify imports without cxr.extract (nor TensorFlow) being loaded."""
    code = (
        "import pkgutil, importlib, sys, cxr.classify as c\n"
        "for m in pkgutil.iter_modules(c.__path__):\n"
        "    importlib.import_module(f'cxr.classify.{m.name}')\n"
        "bad = sorted(m for m in sys.modules if m.startswith('cxr.extract') or m == 'tensorflow')\n"
        "assert not bad, bad"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


class Payload:
    """What an attacker would put in a pickle: loading it runs os.system (here: touch a file)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_every_head_saves_and_loads_without_trusting_anything_else(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(150, 140)), np.arange(150) % 3  # wide enough for svm's PCA step
    for head in HEADS:
        pipeline = build_head(head, random_state=0).fit(X, y)
        path = tmp_path / f"{head}.skops"
        bundle = {"format": MODEL_FORMAT, "pipeline": pipeline, **BUNDLE_STUB, "n_features": 140}
        sio.dump(bundle, path)
        bundle = load_model(path)
        np.testing.assert_array_equal(
            bundle["pipeline"].predict_proba(X), pipeline.predict_proba(X), head
        )


def test_a_pickle_payload_never_runs(make_synthetic_store, fake_extract, tmp_path):
    fake_extract(make_synthetic_store())
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.joblib"
    joblib.dump({"format": "cxr-head/1", "pipeline": Payload(marker)}, evil)
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    result = runner.invoke(app, ["predict", str(image), "--model", str(evil)])
    assert result.exit_code == 2 and "--trust-pickle" in result.stderr
    assert not marker.exists()  # refused before anything was unpickled


def test_a_skops_file_naming_an_untrusted_type_is_refused_unrun(tmp_path):
    pipeline = build_head("logreg", random_state=0).fit(np.eye(4), [0, 1, 0, 1])
    good = tmp_path / "good.skops"
    sio.dump({"format": MODEL_FORMAT, "pipeline": pipeline, **BUNDLE_STUB}, good)
    evil = tmp_path / "evil.skops"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(evil, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "schema.json":  # the pipeline becomes a call of os.system
                data = data.replace(b'"sklearn.pipeline"', b'"os"').replace(
                    b'"Pipeline"', b'"system"'
                )
            dst.writestr(item, data)
    with pytest.raises(CxrError, match=r"declares types cxr does not trust \(os\.system\)"):
        load_model(evil)


def test_an_old_pickle_loads_only_when_trusted(make_synthetic_store, fake_extract, tmp_path):
    store_path = make_synthetic_store(separation=8.0)
    model = tmp_path / "m.skops"
    train_model(store_path, model)
    fake_extract(store_path)
    bundle = {**load_model(model), "format": "cxr-head/1"}
    old = tmp_path / "old.joblib"
    joblib.dump(bundle, old)  # as cxr 0.1 wrote model files
    images = images_like(store_path, tmp_path / "new", 2)
    refused = runner.invoke(app, ["predict", *map(str, images), "--model", str(old)])
    assert refused.exit_code == 2 and "--trust-pickle" in refused.stderr
    trusted = runner.invoke(
        app, ["predict", *map(str, images), "--model", str(old), "--trust-pickle", "--json", "-"]
    )
    assert trusted.exit_code == 0, trusted.output
    assert len(json.loads(trusted.stdout)["predictions"]) == 2


def test_model_file_names_and_damaged_files(make_synthetic_store, tmp_path):
    store_path = make_synthetic_store()
    refused = runner.invoke(
        app, ["train", "--features", str(store_path.parent), "--out", str(tmp_path / "m.pkl")]
    )
    assert refused.exit_code == 2 and ".skops" in refused.stderr
    model = tmp_path / "m.skops"
    train_model(store_path, model)
    cut = tmp_path / "cut.skops"
    cut.write_bytes(model.read_bytes()[:1000])
    with pytest.raises(CxrError, match="damaged skops"):
        load_model(cut)
    with pytest.raises(CxrError, match="neither skops nor a pickle"):
        load_model(store_path)  # a feature store is not a model


def test_predict_finds_dicom_files_whatever_their_name(tmp_path):
    folder = tmp_path / "pacs"
    folder.mkdir()
    (folder / "IM000001").write_bytes(dicom_bytes(np.ones((40, 40), np.uint16)))
    (folder / "notes").write_text("not an image")
    assert list_images([folder]) == [folder / "IM000001"]


# ---- cxr train, refused (moved from tests/test_hostile.py) ----------------------------------


def _train(store: Path, out: Path, *extra: str):
    args = ["train", "--features", str(store.parent), "--out", str(out), *extra]
    return runner.invoke(app, args)


@pytest.mark.parametrize("head", ["svm", "mlp", "knn"])
def test_train_with_a_class_too_small_to_fit_is_one_line(make_synthetic_store, tmp_path, head):
    """Before: a ValueError traceback from the SVM's calibration, and the MLP or the kNN saved
    as a model of a class it had seen once."""
    store = make_synthetic_store({"a": 6, "b": 6, "c": 1}, seed=1)  # c: one image
    result = _train(store, tmp_path / "m.skops", "--head", head)
    assert result.exit_code == 2, result.output
    assert "class 'c' has 1 row(s)" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "m.skops").exists()


def test_two_trains_cannot_both_replace_one_model(make_synthetic_store, tmp_path):
    """The second `cxr train` on one --out is refused while the first holds its lock (before,
    both fitted and the last rename won, whatever the other had checked)."""
    import fcntl
    import os

    store = make_synthetic_store()
    out = tmp_path / "m.skops"
    assert _train(store, out, "--head", "logreg").exit_code == 0
    before = out.read_bytes()
    fd = os.open(tmp_path / ".m.skops.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a first `cxr train` would hold it
        os.pwrite(fd, b"4242", 0)
        result = _train(store, out, "--head", "logreg", "--seed", "3")
    finally:
        os.close(fd)
    assert result.exit_code == 2 and "another `cxr train` is writing" in result.stderr
    assert "pid 4242" in result.stderr and out.read_bytes() == before
    assert _train(store, out, "--head", "logreg", "--seed", "3").exit_code == 0  # lock released


# ---- traps a user met (issue 15; moved from tests/test_traps.py) --------------------


def test_train_refuses_to_replace_a_model_of_another_task(make_synthetic_store, tmp_path):
    path = make_synthetic_store(FOUR)
    out = tmp_path / "m.skops"
    base = ["train", "--features", str(path.parent), "--head", "logreg", "--out", str(out)]
    assert runner.invoke(app, base).exit_code == 0
    assert runner.invoke(app, base).exit_code == 0  # retraining the same model is fine
    other = runner.invoke(app, [*base, "--binary", "covid"])
    assert other.exit_code == 2
    assert f"{out}: holds a mobilenet_v2 + logreg model for another task" in other.output
    assert runner.invoke(app, [*base, "--binary", "covid", "--force"]).exit_code == 0
