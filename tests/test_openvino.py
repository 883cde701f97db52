"""The OpenVINO runtime: same embeddings as TensorFlow, a cache that is rebuilt when damaged,
a refusal when the probe disagrees; ``auto`` (the default) choosing it on a CPU and saying so;
f32 runtimes sharing one store after a check on stored films, precisions never."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import by_id, extract_real, make_class_folders, real_weights, shared_films
from typer.testing import CliRunner

from cxr import store
from cxr.cli import app
from cxr.errors import CxrError
from cxr.extract import runtimes
from cxr.trust import read_sealed

pytest.importorskip("openvino")
BACKBONE = "mobilenet_025"
runner = CliRunner()
SAID = "runtime: openvino (auto: fastest installed on CPU; --runtime tensorflow to change)"


def run(data, out, **kw):
    return extract_real(data, out, BACKBONE, 4, **kw)


def features(data, out, *flags):
    """`cxr features` with the real weights, through the CLI."""
    weights = f"{BACKBONE}={real_weights(BACKBONE)}"
    args = ["features", str(data), "-b", BACKBONE, "--features", str(out), "--weights", weights]
    return runner.invoke(app, [*args, *flags])


def test_openvino_f32_embeddings_equal_tensorflows(tmp_path, keras_home):
    data = make_class_folders(tmp_path / "d", per_class=3)
    run(data, tmp_path / "tf", runtime="tensorflow")
    run(data, tmp_path / "ov", runtime="openvino")
    tf_ids, tf_X = by_id(store.load(tmp_path / "tf", BACKBONE))
    ov_ids, ov_X = by_id(store.load(tmp_path / "ov", BACKBONE))
    assert list(tf_ids) == list(ov_ids)
    assert np.abs(tf_X - ov_X).max() < runtimes.F32_TOLERANCE
    assert np.abs(tf_X).max() > 0.1  # real weights: vectors that mean something
    attrs = store.load(tmp_path / "ov", BACKBONE).attrs
    assert (json.loads(attrs["runtimes"]), attrs["precision"]) == (["openvino"], "f32")
    assert 0 < attrs["runtime_max_abs_diff"] < runtimes.F32_TOLERANCE
    [folder] = keras_home.iterdir()
    meta = json.loads(read_sealed(folder / "meta.json", "openvino:meta.json", 1 << 20))
    assert meta["probe"]["f32"] == attrs["runtime_max_abs_diff"]
    info = runner.invoke(app, ["info", "--features", str(tmp_path / "ov"), "--json", "-"])
    [listed] = json.loads(info.stdout)["stores"]
    assert listed["runtime"] == "openvino f32"
    assert listed["runtime_max_abs_diff"] == attrs["runtime_max_abs_diff"]


def test_the_converted_model_is_cached_and_a_damaged_one_rebuilt(tmp_path, keras_home, monkeypatch):
    import openvino as ov

    data = make_class_folders(tmp_path / "d", per_class=2)
    run(data, tmp_path / "a", runtime="openvino")
    calls = []
    real_convert = ov.convert_model
    monkeypatch.setattr(
        ov, "convert_model", lambda *a, **k: calls.append(1) or real_convert(*a, **k)
    )
    run(data, tmp_path / "b", runtime="openvino")
    assert calls == []  # from the cache
    [folder] = keras_home.iterdir()
    (folder / "model.bin").write_bytes((folder / "model.bin").read_bytes()[:1000])  # truncated
    run(data, tmp_path / "c", runtime="openvino")
    assert calls == [1]  # not trusted: converted again
    _, first = by_id(store.load(tmp_path / "a", BACKBONE))
    _, rebuilt = by_id(store.load(tmp_path / "c", BACKBONE))
    np.testing.assert_array_equal(first, rebuilt)


def test_a_probe_above_the_tolerance_refuses_with_the_figure(tmp_path, keras_home, monkeypatch):
    from cxr.extract.ov_runtime import OpenVINOEmbedder

    real_forward = OpenVINOEmbedder.forward
    monkeypatch.setattr(
        OpenVINOEmbedder, "forward", lambda self, b, n: real_forward(self, b, n) + 0.01
    )
    data = make_class_folders(tmp_path / "d", per_class=2)
    result = features(data, tmp_path / "f", "--runtime", "openvino")
    assert result.exit_code == 2
    assert "differ from TensorFlow's by up to 0.01" in result.output
    assert "use --runtime tensorflow" in result.output
    assert not (tmp_path / "f" / f"{BACKBONE}.h5").exists()


def _stored(folder: Path) -> tuple[dict, dict]:
    """A store's attributes and its vectors by path."""
    loaded = store.load(folder, BACKBONE)
    return dict(loaded.attrs), dict(zip(loaded.rows["path"], loaded.X, strict=True))


def test_f32_runtimes_share_a_store_and_record_both(tmp_path, keras_home):
    data = make_class_folders(tmp_path / "d", per_class=5)
    run(data, tmp_path / "f", runtime="tensorflow")
    before_attrs, before = _stored(tmp_path / "f")
    assert json.loads(before_attrs["runtimes"]) == ["tensorflow"]
    assert "runtime" not in before_attrs  # provenance, no longer identity
    make_class_folders(data, per_class=2, start=50, classes=("viral",))
    [summary] = run(data, tmp_path / "f", runtime="openvino")
    assert (summary.new, summary.cached, summary.path.name) == (2, 10, f"{BACKBONE}.h5")
    attrs, after = _stored(tmp_path / "f")
    assert json.loads(attrs["runtimes"]) == ["tensorflow", "openvino"]
    assert 0 < attrs["runtime_max_abs_diff"] < runtimes.F32_TOLERANCE  # what was measured
    for path, vector in before.items():  # TensorFlow's rows kept as they were
        np.testing.assert_array_equal(after[path], vector)
    run(data, tmp_path / "tf", runtime="tensorflow")  # the new rows, as TensorFlow has them
    _, reference = _stored(tmp_path / "tf")
    new = [p for p in after if p not in before]
    assert len(new) == 2
    assert max(np.abs(after[p] - reference[p]).max() for p in new) < runtimes.F32_TOLERANCE
    info = runner.invoke(app, ["info", "--features", str(tmp_path / "f"), "--json", "-"])
    assert json.loads(info.stdout)["stores"][0]["runtime"] == "tensorflow+openvino f32"


def test_another_runtime_that_disagrees_on_stored_films_is_refused_untouched(
    tmp_path, keras_home, monkeypatch
):
    from cxr.extract.ov_runtime import OpenVINOEmbedder

    data = make_class_folders(tmp_path / "d", per_class=5)
    run(data, tmp_path / "f", runtime="tensorflow")
    published = tmp_path / "f" / f"{BACKBONE}.h5"
    digest = hashlib.sha256(published.read_bytes()).hexdigest()
    make_class_folders(data, per_class=2, start=50, classes=("viral",))
    # A runtime whose vectors drift on real films although its probe passed.
    real_forward = OpenVINOEmbedder.forward
    monkeypatch.setattr(OpenVINOEmbedder, "_probe", lambda self, folder, model: 0.0)
    monkeypatch.setattr(
        OpenVINOEmbedder, "forward", lambda self, b, n: real_forward(self, b, n) + 1e-3
    )
    result = features(data, tmp_path / "f")
    assert result.exit_code == 2, result.output
    line = " ".join(result.output.split())  # Rich wraps the one line at the terminal's width
    assert f"{published}: openvino's embeddings of 8 stored films differ from those" in line
    assert "tensorflow wrote by up to 0.001" in line and "(allowed 0.0001)" in line
    assert "--runtime tensorflow" in line
    assert hashlib.sha256(published.read_bytes()).hexdigest() == digest  # untouched
    assert not (tmp_path / "f" / f".{BACKBONE}.parts").exists()  # nothing committed


def test_a_store_written_before_runtimes_were_provenance_takes_rows(tmp_path, keras_home):
    """A store of cxr < 0.4 (``runtime`` in its attributes and its shards' fingerprint) opens,
    is checked and shared like any other."""
    data = make_class_folders(tmp_path / "d", per_class=5)
    run(data, tmp_path / "f", runtime="tensorflow")
    with h5py.File(tmp_path / "f" / f"{BACKBONE}.h5", "r+") as f:
        del f.attrs["runtimes"]
        f.attrs["runtime"] = "tensorflow"
    make_class_folders(data, per_class=2, start=50, classes=("viral",))
    [summary] = run(data, tmp_path / "f")  # auto: OpenVINO here
    assert (summary.new, summary.cached) == (2, 10)
    attrs, _ = _stored(tmp_path / "f")
    assert json.loads(attrs["runtimes"]) == ["tensorflow", "openvino"]


def test_precision_stays_part_of_a_stores_identity(tmp_path, keras_home):
    data = make_class_folders(tmp_path / "d", per_class=2)
    run(data, tmp_path / "f", runtime="tensorflow")
    with pytest.raises(CxrError, match="`precision` bf16 needs `runtime` openvino"):
        run(data, tmp_path / "f", runtime="tensorflow", precision="bf16")
    import openvino as ov

    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("this CPU has no bf16")
    run(data, tmp_path / "f", runtime="openvino", precision="bf16")  # beside, never mixed
    assert store.load(tmp_path / "f", f"{BACKBONE}+bf16").attrs["precision"] == "bf16"
    assert json.loads(store.load(tmp_path / "f", BACKBONE).attrs["runtimes"]) == ["tensorflow"]


def test_auto_is_the_default_and_says_it_chose_openvino_on_this_cpu(tmp_path, keras_home):
    data = make_class_folders(tmp_path / "d", per_class=2)
    result = features(data, tmp_path / "f")
    assert result.exit_code == 0, result.output
    assert SAID in result.output
    assert json.loads(store.load(tmp_path / "f", BACKBONE).attrs["runtimes"]) == ["openvino"]
    again = runner.invoke(
        app, ["features", str(data), "-b", BACKBONE, "--features", str(tmp_path / "f")]
    )
    assert again.exit_code == 0, again.output
    assert "runtime:" not in again.output  # nothing to embed: no runtime runs


def test_deciding_on_a_cpu_imports_no_tensorflow(tmp_path):
    code = (
        "import sys; from cxr.extract.runtimes import choose; r = choose(); "
        "print(r.name, 'tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True
    )
    assert done.stdout.split() == ["openvino", "False", "False"]


def test_auto_falls_back_to_tensorflow_without_openvino_or_with_a_gpu(tmp_path, monkeypatch):
    monkeypatch.setattr(runtimes, "gpu_visible", lambda: True)
    chosen = runtimes.choose("auto")
    assert (chosen.name, chosen.why) == (
        "tensorflow", "auto: a GPU is visible to TensorFlow; `runtime` openvino to change"
    )  # fmt: skip
    assert runtimes._auto("int8")[0] == "openvino"  # only OpenVINO runs other precisions
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "openvino", None)  # cannot be imported
    chosen = runtimes.choose()
    assert chosen.name == "tensorflow"
    assert "auto: OpenVINO is not installed; pip install" in chosen.why
    data = make_class_folders(tmp_path / "d", per_class=2)
    [summary] = run(data, tmp_path / "f")
    assert summary.new == 4
    assert json.loads(store.load(tmp_path / "f", BACKBONE).attrs["runtimes"]) == ["tensorflow"]


@pytest.fixture(scope="module")
def films(tmp_path_factory) -> Path:
    """Twelve real shared films in class folders."""
    return shared_films(tmp_path_factory.mktemp("films"), 4)


def test_the_default_path_embeds_real_films_within_the_tolerance_of_tensorflow(
    films, tmp_path, keras_home
):
    run(films, tmp_path / "default")
    run(films, tmp_path / "tf", runtime="tensorflow")
    attrs, default = _stored(tmp_path / "default")
    assert json.loads(attrs["runtimes"]) == [runtimes.choose().name]
    _, reference = _stored(tmp_path / "tf")
    assert default.keys() == reference.keys() and len(default) == 12
    worst = max(np.abs(default[p] - reference[p]).max() for p in reference)
    assert worst < runtimes.F32_TOLERANCE
    assert max(np.abs(v).max() for v in reference.values()) > 0.1  # vectors that mean something


def test_a_missing_openvino_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setattr(runtimes, "openvino_installed", lambda: False)
    with pytest.raises(
        CxrError, match=r"OpenVINO is not installed \(pip install 'cxr-transfer\[openvino\]'\)"
    ):
        runtimes.choose("openvino")
    assert runtimes.choose("auto") == runtimes.Runtime("tensorflow", "f32")
    monkeypatch.setattr(runtimes, "openvino_installed", lambda: True)
    monkeypatch.setattr(runtimes, "gpu_visible", lambda: False)
    assert runtimes.choose("auto").name == "openvino"


def test_predict_follows_the_models_runtime_and_accepts_another_f32_one(tmp_path, keras_home):
    data = make_class_folders(tmp_path / "d", per_class=4)
    run(data, tmp_path / "f", runtime="openvino")
    model = tmp_path / "m.skops"
    trained = runner.invoke(app, ["train", "--features", str(tmp_path / "f"), "--head", "logreg",
                                  "--out", str(model)])  # fmt: skip
    assert trained.exit_code == 0, trained.output
    outputs = {}
    for runtime in ([], ["--runtime", "tensorflow"]):
        result = runner.invoke(
            app, ["predict", str(data / "covid"), "--model", str(model), "--json", "-", *runtime]
        )
        assert result.exit_code == 0, result.output
        outputs[tuple(runtime)] = json.loads(result.stdout)["predictions"]
    ov_p, tf_p = outputs[()], outputs[("--runtime", "tensorflow")]
    for a, b in zip(ov_p, tf_p, strict=True):
        assert a["path"] == b["path"]
        np.testing.assert_allclose(list(a["probabilities"].values()),
                                   list(b["probabilities"].values()), atol=1e-3)  # fmt: skip
