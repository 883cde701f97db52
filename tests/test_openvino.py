"""The OpenVINO runtime: same embeddings as TensorFlow, a cache that is rebuilt when damaged,
a refusal when the probe disagrees, and stores that never mix runtimes or precisions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import by_id, extract_real, make_class_folders, real_weights
from typer.testing import CliRunner

from cxr import store
from cxr.cli import app
from cxr.errors import CxrError
from cxr.extract import runtimes
from cxr.trust import read_sealed

pytest.importorskip("openvino")
BACKBONE = "mobilenet_025"
runner = CliRunner()


def run(data, out, **kw):
    return extract_real(data, out, BACKBONE, 4, **kw)


def test_openvino_f32_embeddings_equal_tensorflows(tmp_path, keras_home):
    data = make_class_folders(tmp_path / "d", per_class=3)
    run(data, tmp_path / "tf")
    run(data, tmp_path / "ov", runtime="openvino")
    tf_ids, tf_X = by_id(store.load(tmp_path / "tf", BACKBONE))
    ov_ids, ov_X = by_id(store.load(tmp_path / "ov", BACKBONE))
    assert list(tf_ids) == list(ov_ids)
    assert np.abs(tf_X - ov_X).max() < runtimes.F32_TOLERANCE
    assert np.abs(tf_X).max() > 0.1  # real weights: vectors that mean something
    attrs = store.load(tmp_path / "ov", BACKBONE).attrs
    assert (attrs["runtime"], attrs["precision"]) == ("openvino", "f32")
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
    result = runner.invoke(
        app,
        ["features", str(data), "-b", BACKBONE, "--features", str(tmp_path / "f"),
         "--weights", f"{BACKBONE}={real_weights(BACKBONE)}", "--runtime", "openvino"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "differ from TensorFlow's by up to 0.01" in result.output
    assert "use --runtime tensorflow" in result.output
    assert not (tmp_path / "f" / f"{BACKBONE}.h5").exists()


def test_runtime_and_precision_are_part_of_a_stores_identity(tmp_path, keras_home):
    data = make_class_folders(tmp_path / "d", per_class=2)
    run(data, tmp_path / "f")  # TensorFlow
    with pytest.raises(CxrError, match="runtime: stored 'tensorflow' vs now 'openvino'"):
        run(data, tmp_path / "f", runtime="openvino")
    with pytest.raises(CxrError, match="`precision` bf16 needs `runtime` openvino"):
        run(data, tmp_path / "f", precision="bf16")
    import openvino as ov

    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("this CPU has no bf16")
    run(data, tmp_path / "f", runtime="openvino", precision="bf16")  # beside, never mixed
    assert store.load(tmp_path / "f", f"{BACKBONE}+bf16").attrs["precision"] == "bf16"
    assert store.load(tmp_path / "f", BACKBONE).attrs["runtime"] == "tensorflow"


def test_a_missing_openvino_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setattr(runtimes, "openvino_installed", lambda: False)
    with pytest.raises(
        CxrError, match=r"OpenVINO is not installed \(pip install 'cxr-transfer\[openvino\]'\)"
    ):
        runtimes.choose("openvino")
    assert runtimes.choose("auto") == runtimes.Runtime("tensorflow", "f32")
    monkeypatch.setattr(runtimes, "openvino_installed", lambda: True)
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
