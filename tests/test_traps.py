"""Silent traps a user met (issue 15): each is now correct behaviour or a one-line message."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import evaluate, make_class_folders, real_weights, save_png, weight_flags
from typer.testing import CliRunner

from cxr import store
from cxr.classify.evaluate import grid_edges
from cxr.classify.heads import Grid, parse_params, search_grid
from cxr.classify.plots import roc_classes
from cxr.cli import app
from cxr.errors import CxrError

runner = CliRunner()
BACKBONE = "mobilenet_025"
FOUR = {"bacterial": 6, "covid": 6, "normal": 6, "viral": 6}


def features(data: Path, out: Path, *extra: str):
    args = ["features", str(data), "-b", BACKBONE, "--features", str(out), *weight_flags()]
    return runner.invoke(app, [*args, *extra])


# ---- stage 1 ------------------------------------------------------------------------------


def test_an_image_missing_from_the_manifest_is_named_not_ignored(tmp_path):
    data = make_class_folders(tmp_path / "d", per_class=2)
    rows = [
        f"{p.relative_to(data).as_posix()},{p.parent.name}" for p in sorted(data.rglob("*.png"))
    ]
    (data / "manifest.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    assert features(data, tmp_path / "f").exit_code == 0
    save_png(data / "covid" / "new.png", seed=99)
    result = features(data, tmp_path / "f")
    assert result.exit_code == 0
    assert "1 image file(s)" in result.output and "covid/new.png" in result.output
    assert "not in" in result.output and "manifest.csv" in result.output


def test_a_metadata_only_manifest_change_is_reported_as_an_update(tmp_path):
    data = make_class_folders(tmp_path / "d", per_class=2)
    files = sorted(data.rglob("*.png"))
    manifest = data / "manifest.csv"

    def write(pid: str) -> None:
        rows = [
            f"{p.relative_to(data).as_posix()},{p.parent.name},{pid}{i}"
            for i, p in enumerate(files)
        ]
        manifest.write_text("path,label,patient_id\n" + "\n".join(rows) + "\n")

    write("a")
    assert features(data, tmp_path / "f").exit_code == 0
    write("b")
    result = features(data, tmp_path / "f")
    assert result.exit_code == 0, result.output
    assert "No new images to embed" in result.output
    assert "store updated (rows or metadata changed)" in result.output
    assert set(store.load(tmp_path / "f", BACKBONE).patient_ids) == {f"b{i}" for i in range(4)}


def test_class_folders_differing_only_in_case_are_refused(tmp_path):
    save_png(tmp_path / "d" / "Covid" / "a.png", 1)
    save_png(tmp_path / "d" / "covid" / "b.png", 2)
    save_png(tmp_path / "d" / "normal" / "c.png", 3)
    result = features(tmp_path / "d", tmp_path / "f")
    assert result.exit_code == 2
    assert "Covid/ and covid/ differ only in case" in result.output


@pytest.mark.slow  # a `cxr features` and a `cxr explain` process
def test_tensorflow_start_up_chatter_is_not_shown(tmp_path):
    """No 'E0000 ... failed call to cuInit: CUDA error' for a clinician to worry about."""
    data = make_class_folders(tmp_path / "d", per_class=3)
    code = "import sys; from cxr.cli import app; sys.argv = ['cxr', *sys.argv[1:]]; app()"
    store = ["-b", BACKBONE, "--features", str(tmp_path / "f")]
    env = {k: v for k, v in __import__("os").environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    for args in (
        ["features", str(data), *store, *weight_flags()],
        ["explain", *store, "--head", "logreg", "--sample", "1"],
    ):
        done = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env
        )
        assert done.returncode == 0, done.stderr
        for noise in ("cuInit", "E0000", "I0000", "cuda drivers", "oneDNN", "absl", "Warning"):
            assert noise not in done.stderr + done.stdout, args[0]


def test_an_offline_download_error_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_WEIGHTS_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    import keras.utils

    def offline(*args, **kwargs):
        try:
            raise OSError("[Errno -3] Temporary failure in name resolution")
        except OSError as exc:
            raise Exception("URL fetch failure on https://example/w.h5: None") from exc

    monkeypatch.setattr(keras.utils, "get_file", offline)
    data = make_class_folders(tmp_path / "d", per_class=1)
    # vgg19's ImageNet weights, to be downloaded (whatever weights the other backbone gets)
    result = features(data, tmp_path / "f", "-b", "vgg19", "--weights", "vgg19=imagenet")
    assert result.exit_code == 2
    assert "failed (OSError: [Errno -3] Temporary failure in name resolution)" in result.output


def test_predict_and_reruns_use_the_weight_file_the_store_was_built_with(tmp_path, monkeypatch):
    real = real_weights(BACKBONE)
    (tmp_path / "w1").mkdir()
    (tmp_path / "w1" / real.name).symlink_to(real)
    data = make_class_folders(tmp_path / "d", per_class=4)
    out = tmp_path / "f"
    given = ["--weights", f"{BACKBONE}={tmp_path / 'w1' / real.name}"]
    assert features(data, out, *given).exit_code == 0
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("CXR_WEIGHTS_DIR", str(tmp_path / "nowhere"))
    save_png(data / "covid" / "new.png", seed=77)
    again = runner.invoke(app, ["features", str(data), "-b", BACKBONE, "--features", str(out)])
    assert again.exit_code == 0, again.output  # no --weights: the store's own file, offline
    assert "the store's weight file" in again.output and len(store.load(out, BACKBONE)) == 9
    model = tmp_path / "m.skops"
    args = ["train", "--features", str(out), "--head", "logreg", "--out", str(model)]
    assert runner.invoke(app, args).exit_code == 0
    found = runner.invoke(
        app, ["predict", str(data / "covid"), "--model", str(model), "--json", "-"]
    )
    assert found.exit_code == 0, found.output  # the recorded path
    assert len(json.loads(found.stdout)["predictions"]) == 5
    (tmp_path / "w1" / real.name).unlink()  # the weight file moved away
    missing = runner.invoke(app, ["predict", str(data / "covid"), "--model", str(model)])
    assert missing.exit_code == 2
    assert f"{model}: trained with the weight file {real.name}" in missing.output
    assert "CXR_WEIGHTS_DIR" in missing.output
    (tmp_path / "w2").mkdir()
    (tmp_path / "w2" / real.name).symlink_to(real)
    monkeypatch.setenv("CXR_WEIGHTS_DIR", str(tmp_path / "w2"))  # found again, by name
    found = runner.invoke(
        app, ["predict", str(data / "covid"), "--model", str(model), "--json", "-"]
    )
    assert found.exit_code == 0, found.output


# ---- stage 2 ------------------------------------------------------------------------------


def evaluate_cli(store: Path, *args: str, bootstrap: str = "20"):
    """`cxr evaluate` on a synthetic store: 3 folds and a short bootstrap, for speed."""
    base = ["evaluate", "--features", str(store.parent), "--folds", "3", "--bootstrap", bootstrap]
    return runner.invoke(app, [*base, *args])


def test_repeated_merge_reaches_the_report(make_synthetic_store):
    path = make_synthetic_store(FOUR)
    result = evaluate_cli(
        path, "--head", "logreg", "--merge", "pneumonia=bacterial", "--merge", "pneumonia=viral",
        "--json", "-",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [r] = json.loads(result.stdout)["results"]
    assert r["task"]["merge"] == {"pneumonia": ["bacterial", "viral"]}
    assert r["classes"] == ["covid", "normal", "pneumonia"]


def test_classes_are_reported_in_the_order_given(make_synthetic_store):
    path = make_synthetic_store(FOUR)
    report = evaluate(
        path.parent,
        heads=["logreg"],
        folds=3,
        bootstrap=20,
        classes=["viral", "covid", "normal"],
    )
    [r] = report["results"]
    assert r["classes"] == ["viral", "covid", "normal"]
    assert list(r["metrics"]["per_class"]) == ["viral", "covid", "normal"]


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


def test_the_best_result_comes_with_a_caution(make_synthetic_store):
    path = make_synthetic_store(FOUR)
    result = evaluate_cli(path, "--head", "logreg", "--head", "knn", bootstrap="50")
    assert result.exit_code == 0, result.output
    assert "caution: the best of 2 results picked on the same test rows" in result.output


def test_a_two_class_roc_draws_one_curve():
    y = np.array([0, 1, 0, 1])
    assert roc_classes(["non-covid", "covid"], y) == [1]
    assert roc_classes(["a", "b", "c"], np.array([0, 1, 2, 0])) == [0, 1, 2]


def test_evaluate_reports_progress_to_a_progress_object(make_synthetic_store):
    path = make_synthetic_store(FOUR)
    seen = []

    class Recording:
        from contextlib import contextmanager

        @contextmanager
        def step(self, description, total):
            done = []
            yield done.append
            seen.append((description, total, sum(done)))

    evaluate(path.parent, heads=["logreg", "knn"], folds=3, bootstrap=20, progress=Recording())
    assert seen[0] == ("mobilenet_v2: 2 head(s) x 3 fits", 6, 6)
    assert all(total == done for _, total, done in seen)


def test_cli_is_quiet_off_a_terminal(make_synthetic_store):
    path = make_synthetic_store(FOUR)
    result = evaluate_cli(path, "--head", "logreg")
    assert result.exit_code == 0 and "fits" not in result.output


# ---- edges ----------------------------------------------------------------------------------


def test_version():
    from cxr import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"cxr {__version__}"


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


def test_loading_a_folder_of_several_stores_names_them(make_synthetic_store):
    first = make_synthetic_store(FOUR)
    make_synthetic_store(FOUR, backbone="xception")
    with pytest.raises(CxrError, match="2 stores here \\(mobilenet_v2, xception\\); name the"):
        store.load(first.parent)
    assert len(store.load(first.parent, "xception")) == len(store.load(first))


def test_the_table_shows_the_pooled_value_beside_its_own_interval(make_synthetic_store, tmp_path):
    """AUC 0.930 in the table and 0.925 in the plot: a fold mean beside a pooled CI. Now the
    table's number is the pooled value its interval belongs to, as in the forest plot."""
    path = make_synthetic_store(FOUR, separation=1.0)
    out = tmp_path / "r.json"
    result = evaluate_cli(path, "--head", "logreg", "--json", str(out), bootstrap="100")
    assert result.exit_code == 0, result.output
    [r] = json.loads(out.read_text())["results"]
    auc = r["metrics"]["roc_auc"]
    assert round(auc["mean"], 3) != round(auc["pooled"], 3)  # the two differ here
    lo, hi = auc["ci95"]
    assert f"{auc['pooled']:.3f} [{lo:.3f}, {hi:.3f}]" in result.output
