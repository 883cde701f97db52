"""--precision int8: NNCF quantisation calibrated on the user's films, cached and checked by
sha256, a store of its own whose vectors stay near f32's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import by_id, extract_real, make_class_folders, shared_films
from typer.testing import CliRunner

from cxr import store
from cxr.cli import app
from cxr.errors import CxrError
from cxr.extract import runtimes
from cxr.trust import read_sealed

pytest.importorskip("openvino")
pytest.importorskip("nncf")
runner = CliRunner()
BACKBONE = "mobilenet_025"
INT8 = f"{BACKBONE}+int8"  # a store of its own, beside the f32 one
SHARED = Path("/work/shared/data/cxr")
# Measured on 36 shared films calibrated on 12 (mobilenet_025, the smallest real backbone):
# relative L2 difference from f32 up to 0.38; bound with margin.
MAX_RELATIVE = 0.6


@pytest.fixture(scope="module")
def films(tmp_path_factory) -> Path:
    """A few dozen real shared films in class folders (real weights on real films: vectors
    that mean something)."""
    return shared_films(tmp_path_factory.mktemp("films"), 12)


def run(data, out, precision="f32", runtime="openvino", **kw):
    return extract_real(
        data, out, BACKBONE, 8, runtime=runtime, precision=precision, calibration=12, **kw
    )


@pytest.mark.slow
def test_an_int8_store_is_near_f32_and_records_its_calibration(films, tmp_path, keras_home):
    run(films, tmp_path / "f")
    run(films, tmp_path / "f", "int8", seed=3)
    f32_ids, f32 = by_id(store.load(tmp_path / "f", BACKBONE))
    int8_ids, int8 = by_id(store.load(tmp_path / "f", INT8))
    assert list(f32_ids) == list(int8_ids)
    relative = np.linalg.norm(int8 - f32, axis=1) / np.linalg.norm(f32, axis=1)
    assert 0 < relative.max() < MAX_RELATIVE  # quantised: other vectors, but close ones
    attrs = store.load(tmp_path / "f", INT8).attrs
    assert (json.loads(attrs["runtimes"]), attrs["precision"]) == (["openvino"], "int8")
    assert (attrs["calibration_size"], attrs["calibration_seed"]) == (12, 3)
    assert len(attrs["calibration_sha256"]) == 64
    assert attrs["runtime_max_abs_diff"] > runtimes.F32_TOLERANCE  # measured, not refused
    quantised = [f for f in keras_home.iterdir() if "-int8-" in f.name]
    [folder] = quantised
    meta = json.loads(read_sealed(folder / "meta.json", "openvino:meta.json", 1 << 20))
    assert meta["key"]["calibration_sha256"] == attrs["calibration_sha256"]
    assert meta["key"]["calibration_seed"] == 3
    assert meta["probe"]["int8"] == attrs["runtime_max_abs_diff"]
    # Another seed is another sample, another quantisation: never added to this store.
    with pytest.raises(CxrError, match="calibration_sha256"):
        run(films, tmp_path / "f", "int8", seed=4)


@pytest.mark.slow
def test_the_quantised_model_is_reused_and_a_tampered_one_quantised_again(
    films, tmp_path, keras_home, monkeypatch
):
    import nncf

    calls: list[int] = []
    real = nncf.quantize
    monkeypatch.setattr(nncf, "quantize", lambda *a, **k: calls.append(1) or real(*a, **k))
    run(films, tmp_path / "a", "int8")
    run(films, tmp_path / "b", "int8")
    assert calls == [1]  # the second run loaded the cached int8 model
    [folder] = [f for f in keras_home.iterdir() if "-int8-" in f.name]
    xml = (folder / "model.xml").read_text()
    (folder / "model.xml").write_text(xml.replace("</net>", "<!-- edited --></net>"))
    warnings: list[str] = []
    from cxr.progress import Silent

    class Collect(Silent):
        def warn(self, text: str) -> None:
            warnings.append(text)

    run(films, tmp_path / "c", "int8", progress=Collect())
    assert calls == [1, 1]  # never loaded unchecked: quantised again
    assert len(warnings) == 1 and "does not match its sha256" in warnings[0]
    _, first = by_id(store.load(tmp_path / "a", INT8))
    _, again = by_id(store.load(tmp_path / "c", INT8))
    np.testing.assert_array_equal(first, again)  # same sample, same model, same vectors


def test_int8_needs_openvino_and_a_data_set(tmp_path):
    with pytest.raises(CxrError, match="`precision` int8 needs `runtime` openvino"):
        runtimes.choose("tensorflow", "int8")
    with pytest.raises(CxrError, match="int8 runs in-process"):
        run(tmp_path, tmp_path / "f", "int8", scheduler="local:1")
    from cxr.extract.runner import embed_images

    with pytest.raises(CxrError, match="no calibration sample"):
        embed_images([tmp_path], backbone=BACKBONE, weights=[], runtime="openvino",
                     precision="int8")  # fmt: skip


def test_int8_with_tensorflow_is_one_line_before_any_work(tmp_path):
    data = make_class_folders(tmp_path / "d", per_class=2)
    result = runner.invoke(
        app,
        ["features", str(data), "--features", str(tmp_path / "f"), "--precision", "int8",
         "--runtime", "tensorflow"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--precision int8 needs --runtime openvino" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "f").exists()


def test_int8_never_shares_an_f32_store(films, tmp_path, keras_home):
    """f32 runtimes share a store; a precision is identity: int8 rows are refused in an f32
    store even when it lies where the int8 store would be."""
    run(films, tmp_path / "f", runtime="tensorflow")
    shutil.copy(tmp_path / "f" / f"{BACKBONE}.h5", tmp_path / "f" / f"{INT8}.h5")
    with pytest.raises(CxrError, match="precision: stored 'f32' vs now 'int8'"):
        run(films, tmp_path / "f", "int8")
