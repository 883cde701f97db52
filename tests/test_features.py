"""Stage 1 end to end: store round trip, incremental runs, bad input, locking, crash, resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    CXR_DATA,
    dicom_bytes,
    make_class_folders,
    real_weights,
    save_png,
    small_weights,
    weight_flags,
    xray_like,
)
from PIL import Image
from test_images import POSTSCRIPT, j2k_bomb
from typer.testing import CliRunner

from cxr import store
from cxr.cli import app
from cxr.errors import CxrError
from cxr.extract import hashing, images
from cxr.extract.runner import embed_images, extract_features
from cxr.store.schema import hashes_path, parts_dir, store_path
from cxr.trust import read_sealed

BACKBONE = "mobilenet_025"
runner = CliRunner()


def run(data: Path, out: Path, weights=None, **kw):
    return extract_features(
        data=data,
        manifest=kw.pop("manifest", None),
        backbones=kw.pop("backbones", [BACKBONE]),
        weights=weights if weights is not None else small_weights(),
        features_dir=out,
        batch_size=kw.pop("batch_size", 4),
        **kw,
    )


def cli_features(data: Path, out: Path, *extra: str):
    """`cxr features DATA -b mobilenet_025 --features OUT` with the small weights, via Typer."""
    args = ["features", str(data), "-b", BACKBONE, "--features", str(out), *weight_flags(), *extra]
    return runner.invoke(app, args)


def test_store_round_trip(class_folders, tmp_path):
    out = tmp_path / "features"
    [summary] = run(class_folders, out)
    assert (summary.new, summary.cached, summary.rejected) == (8, 0, 0)
    fs = store.load(out, BACKBONE)
    assert fs.X.shape == (8, 256) and fs.X.dtype == np.float32
    assert sorted(fs.rows["path"]) == sorted(
        p.relative_to(class_folders).as_posix() for p in class_folders.rglob("*.png")
    )
    assert dict(zip(*np.unique(fs.labels, return_counts=True), strict=True)) == {
        "covid": 4,
        "normal": 4,
    }
    assert all(len(i) == 64 for i in fs.ids)
    for key in (
        "backbone",
        "input_size",
        "preprocessing",
        "weights",
        "weights_sha256",
        "versions",
        "created",
    ):
        assert key in fs.attrs
    assert "tensorflow" in json.loads(fs.attrs["versions"])
    with store.schema.h5py.File(store_path(out, BACKBONE)) as f:
        assert f["X"].chunks is not None and f["X"].compression == "gzip"


def test_unchanged_rerun_computes_nothing(class_folders, tmp_path):
    out = tmp_path / "features"
    run(class_folders, out)
    before = store_path(out, BACKBONE).stat().st_mtime_ns
    [summary] = run(class_folders, out)
    assert (summary.new, summary.cached, summary.published) == (0, 8, False)
    assert store_path(out, BACKBONE).stat().st_mtime_ns == before


def test_changed_added_and_removed_files(class_folders, tmp_path):
    out = tmp_path / "features"
    run(class_folders, out)
    old = store.load(out, BACKBONE)
    save_png(class_folders / "covid" / "img000.png", seed=100)  # changed bytes
    save_png(class_folders / "normal" / "new.png", seed=101)  # added
    (class_folders / "covid" / "img001.png").unlink()  # removed
    [summary] = run(class_folders, out)
    assert (summary.new, summary.cached) == (2, 6)
    fs = store.load(out, BACKBONE)
    paths = list(fs.rows["path"])
    assert "covid/img001.png" not in paths and "normal/new.png" in paths and len(fs) == 8
    old_id = dict(zip(old.rows["path"], old.ids, strict=True))
    new_id = dict(zip(fs.rows["path"], fs.ids, strict=True))
    assert new_id["covid/img000.png"] != old_id["covid/img000.png"]
    for path in ("covid/img002.png", "normal/img000.png"):  # untouched rows keep their vectors
        np.testing.assert_array_equal(
            fs.X[paths.index(path)], old.X[list(old.rows["path"]).index(path)]
        )


def test_other_weights_are_refused(class_folders, tmp_path):
    out = tmp_path / "features"
    run(class_folders, out, weights=["random"], seed=1)
    with pytest.raises(CxrError, match=r"other settings.*weights_seed"):
        run(class_folders, out, weights=["random"], seed=2)
    with pytest.raises(CxrError, match="resize"):
        run(class_folders, out, weights=["random"], seed=1, resize="pad")


def test_bad_inputs_are_skipped_listed_and_recorded(class_folders, tmp_path, monkeypatch):
    bad = {
        "covid/empty.png": b"",
        "covid/notes.txt": b"not an image at all\n",
        "normal/notes-copy.txt": b"not an image at all\n",  # same bytes: listed under both names
        "normal/truncated.png": (class_folders / "normal" / "img000.png").read_bytes()[:200],
        "covid/nopixels.dcm": dicom_bytes(xray_like(1).astype(np.uint16), with_pixels=False),
    }
    for rel, data in bad.items():
        (class_folders / rel).write_bytes(data)
    save_png(class_folders / "normal" / "tiny.png", seed=7, size=(10, 10))
    save_png(class_folders / "normal" / "huge.png", seed=8, size=(300, 300))
    monkeypatch.setattr(images, "MAX_PIXELS", 200 * 200)  # a bomb, scaled down for the test
    (class_folders / "covid" / "broken.png").symlink_to(tmp_path / "nowhere.png")
    out = tmp_path / "features"
    result = cli_features(class_folders, out, "--batch-size", "3")
    assert result.exit_code == 0, result.output
    for rel in [*bad, "normal/tiny.png", "normal/huge.png", "covid/broken.png"]:
        assert f"rejected {rel}:" in result.output
    fs = store.load(out, BACKBONE)
    assert len(fs) == 8
    reasons = dict(zip(fs.rejected["path"], fs.rejected["reason"], strict=True))
    assert reasons["covid/empty.png"] == "empty file"
    assert "not an image" in reasons["covid/notes.txt"]
    assert "not an image" in reasons["normal/notes-copy.txt"]
    assert "cannot decode" in reasons["normal/truncated.png"]
    assert "too small" in reasons["normal/tiny.png"]
    assert "decompression bomb" in reasons["normal/huge.png"]
    assert reasons["covid/nopixels.dcm"] == "DICOM has no pixel data"
    assert reasons["covid/broken.png"] == "file not found"
    strict = cli_features(class_folders, out, "--strict")
    assert strict.exit_code == 1 and "--strict" in strict.output  # cached rejects still count


def test_all_rejected_exits_nonzero(tmp_path):
    for label in ("covid", "normal"):
        (tmp_path / "d" / label).mkdir(parents=True)
        (tmp_path / "d" / label / "a.png").write_bytes(b"junk")
    result = cli_features(tmp_path / "d", tmp_path / "f")
    assert result.exit_code == 1 and "no image could be used" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{tmp}/missing"], "does not exist"),
        (["{tmp}/empty"], "no images found"),
        (["{tmp}/empty", "--manifest", "{tmp}/bad.csv"], "missing required column(s) label"),
        (["{tmp}/empty", "-b", "nope"], "unknown backbone 'nope'"),
        (
            ["{tmp}/empty", "--weights", "mobilenet_025={tmp}/nope.h5", "-b", "mobilenet_025"],
            "does not exist",
        ),
    ],
)
def test_user_errors_are_one_line_before_any_model(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.csv").write_text("path,diagnosis\na.png,covid\n")
    result = runner.invoke(
        app,
        ["features", *[a.format(tmp=tmp_path) for a in args], "--features", str(tmp_path / "f")],
    )
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "f").exists()


def test_manifest_columns_become_rows_and_metadata(tmp_path):
    data = make_class_folders(tmp_path / "d", per_class=2)
    (data / "list.csv").write_text(
        "path,label,patient_id,source,dataset\n"
        "covid/img000.png,covid,p1,ieee8023,ieee8023\n"
        "covid/img001.png,covid,p1,ieee8023,ieee8023\n"
        "normal/img000.png,normal,p2,kermany,kermany\n"
        "normal/gone.png,normal,p3,kermany,kermany\n"
    )
    [summary] = run(data, tmp_path / "f", manifest=data / "list.csv")
    assert (summary.new, summary.rejected) == (3, 1)
    fs = store.load(tmp_path / "f", BACKBONE, where={"dataset": ["ieee8023"]})
    assert list(fs.patient_ids) == ["p1", "p1"] and list(fs.sources) == ["ieee8023"] * 2
    assert dict(zip(fs.rejected["path"], fs.rejected["reason"], strict=True)) == {
        "normal/gone.png": "file not found"
    }


def test_missing_imagenet_weights_name_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_WEIGHTS_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    import keras.utils

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    data = make_class_folders(tmp_path / "d", per_class=1)
    result = runner.invoke(
        app, ["features", str(data), "-b", "mobilenet_v2", "--features", str(tmp_path / "f")]
    )
    assert result.exit_code == 2
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5" in result.output
    assert "CXR_WEIGHTS_DIR" in result.output


def test_weights_dir_is_used_before_any_download(tmp_path, monkeypatch):
    path = real_weights("mobilenet_025")
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "mobilenet_2_5_224_tf_no_top.h5").symlink_to(path)
    monkeypatch.setenv("CXR_WEIGHTS_DIR", str(tmp_path / "w"))
    data = make_class_folders(tmp_path / "d", per_class=1)
    run(data, tmp_path / "f", weights=["imagenet"])
    fs = store.load(tmp_path / "f", BACKBONE)
    assert fs.attrs["weights"] == "imagenet"
    assert (
        fs.attrs["weights_sha256"]
        == "dbdb03ee2a22fd895301636cd328b234bb3a9952358f436d82f46b81e0d5b0bf"
    )


@pytest.mark.realweights
@pytest.mark.parametrize("name", ["mobilenet_025", "mobilenet_v2_035", "mobilenet_v2", "xception"])
def test_real_weights_are_deterministic_and_informative(tmp_path, name):
    weights = [f"{name}={real_weights(name)}"]
    a, b = save_png(tmp_path / "a.png", 1), save_png(tmp_path / "b.png", 2)
    first = embed_images([a, b, a], backbone=name, weights=weights, batch_size=2)  # a: 2 batches
    again = embed_images([a], backbone=name, weights=weights, batch_size=2)
    np.testing.assert_array_equal(first.X[0], first.X[2])
    np.testing.assert_array_equal(first.X[0], again.X[0])
    assert np.linalg.norm(first.X[0] - first.X[1]) > 1e-3 * np.linalg.norm(first.X[0])
    assert first.attrs["weights_sha256"] and first.attrs["weights"] == "file"


def test_unchanged_files_are_not_read_again(class_folders, tmp_path, monkeypatch):
    calls = []
    real = hashing.sha256_file
    monkeypatch.setattr(hashing, "sha256_file", lambda path: calls.append(path) or real(path))
    out = tmp_path / "features"
    run(class_folders, out)
    assert len(calls) == 8 + (1 if small_weights() != ["random"] else 0)  # images (+ weights)
    calls.clear()
    [summary] = run(class_folders, out)
    assert calls == [] and summary.new == 0 and not summary.published
    changed = class_folders / "covid" / "img000.png"
    save_png(changed, 99)  # new bytes, new mtime
    [summary] = run(class_folders, out)
    assert calls == [changed] and summary.new == 1
    calls.clear()
    run(class_folders, out, rehash=True)
    assert len(calls) >= 8
    hashes_path(out).write_text("{not json")  # a damaged cache is rebuilt, never trusted
    calls.clear()
    [summary] = run(class_folders, out)
    assert len(calls) >= 8 and summary.new == 0
    cache = hashes_path(out)
    assert (
        json.loads(read_sealed(cache, f"hashes:{cache.name}", 1 << 20))["format"] == "cxr-hashes/1"
    )


def test_a_run_with_nothing_to_compute_never_imports_tensorflow(class_folders, tmp_path):
    out = tmp_path / "features"
    run(class_folders, out)
    code = (
        "import sys\nfrom cxr.cli import app\nsys.argv = ['cxr', *sys.argv[1:]]\n"
        "try:\n    app()\nfinally:\n    print('TF' if 'tensorflow' in sys.modules else 'NO-TF')"
    )
    args = ["features", str(class_folders), "-b", BACKBONE, "--features", str(out)]
    done = subprocess.run(
        [sys.executable, "-c", code, *args, *weight_flags()], capture_output=True, text=True
    )
    assert "No new images to embed" in done.stdout, done.stdout + done.stderr
    assert done.stdout.strip().endswith("NO-TF")


# ---- processes: one writer at a time, and SIGKILL at any moment -------------------------


def _slow_run(data: Path, out: Path) -> subprocess.Popen:
    """A real `cxr features` in its own process, one image per batch so it runs for a while."""
    code = "import sys; from cxr.cli import app; sys.argv = ['cxr', *sys.argv[1:]]; app()"
    args = ["features", str(data), "-b", BACKBONE, "--features", str(out), "--batch-size", "1"]
    args += weight_flags()
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=Path(__file__).parents[1],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _wait_for_shards(out: Path, proc: subprocess.Popen, count: int = 3) -> None:
    deadline = time.monotonic() + 120
    parts = parts_dir(out, BACKBONE)
    while time.monotonic() < deadline and proc.poll() is None:
        if parts.is_dir() and len(list(parts.glob("*.h5"))) >= count:
            return
        time.sleep(0.01)
    proc.kill()
    pytest.fail(f"run did not commit {count} batches in time:\n{proc.stdout.read().decode()}")


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
    data = make_class_folders(tmp_path / "d", per_class=150)
    out = tmp_path / "killed"
    proc = _slow_run(data, out)
    _wait_for_shards(out, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    committed = len(list(parts_dir(out, BACKBONE).glob("*.h5")))
    assert 0 < committed < 300 and not store_path(out, BACKBONE).exists()
    info = runner.invoke(app, ["info", "--features", str(out)])
    assert info.exit_code == 0  # a store folder mid-crash is still readable

    # One image per batch, as the killed run: a forward pass at another batch size may round
    # differently (by 1e-5 with oneDNN on some CPUs), and this compares bytes.
    [resumed] = run(data, out, batch_size=1)
    assert resumed.new == 300 - committed and resumed.cached == committed
    run(data, tmp_path / "clean", batch_size=1)
    a, b = store.load(out, BACKBONE), store.load(tmp_path / "clean", BACKBONE)
    assert list(a.rows["path"]) == list(b.rows["path"]) and list(a.ids) == list(b.ids)
    np.testing.assert_array_equal(a.X, b.X)
    assert not parts_dir(out, BACKBONE).exists()


@pytest.mark.slow
def test_second_writer_is_refused_while_one_runs(tmp_path):
    data = make_class_folders(tmp_path / "d", per_class=150)
    out = tmp_path / "f"
    proc = _slow_run(data, out)
    try:
        _wait_for_shards(out, proc, count=1)
        result = cli_features(data, out)
        assert result.exit_code == 2
        assert "another `cxr features` is writing this store" in result.output
        assert f"pid {proc.pid}" in result.output
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.realweights
def test_real_chest_xrays_embed(tmp_path):
    """A handful of the shared real images through real weights: a plumbing check on real files."""
    if not CXR_DATA.is_dir():
        pytest.skip("../shared/data/cxr not available")
    data = tmp_path / "d"
    for label in ("covid", "normal"):
        (data / label).mkdir(parents=True)
        for path in sorted((CXR_DATA / label).iterdir())[:3]:
            shutil.copy(path, data / label / path.name)
    [summary] = run(data, tmp_path / "f", weights=[f"{BACKBONE}={real_weights(BACKBONE)}"])
    assert summary.stored == 6 and summary.rejected == 0
    X = store.load(tmp_path / "f", BACKBONE).X
    assert np.isfinite(X).all() and X.std(axis=0).mean() > 1e-3


# ---- one `cxr features` run over all of it -------------------------------------------------------


def test_features_stores_the_good_films_and_names_every_odd_file(tmp_path, monkeypatch):
    """Class folders as a careless export leaves them: PostScript named .png, a Latin-1 name, a
    JPEG 2000 bomb, a float TIFF with an infinite pixel. Before, the Latin-1 name stopped the
    run at the publish (UnicodeEncodeError naming no file) and no store was ever written."""
    from PIL import EpsImagePlugin

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: 1 / 0)
    data = tmp_path / "data"
    for i, name in enumerate(("covid/a.png", "covid/b.png", "normal/c.png", "normal/d.png")):
        save_png(data / name, i)
    (data / "covid" / "ghost.png").write_bytes(POSTSCRIPT)
    save_png(data / "normal" / os.fsdecode(b"caf\xe9.png"), 7)
    (data / "covid" / "bomb.dcm").write_bytes(j2k_bomb())
    film = xray_like(8, (96, 80)).astype(np.float32)
    film[1, 1] = np.inf
    Image.fromarray(film, mode="F").save(data / "normal" / "float.tif")
    features = tmp_path / "features"
    args = ["features", str(data), "-b", "mobilenet_025", "--weights", "random"]
    result = runner.invoke(app, [*args, "--features", str(features), "--json", "-"])
    assert result.exit_code == 0, result.output
    from cxr.store import load

    fs = load(features, "mobilenet_025")
    assert sorted(fs.rows["path"]) == [
        "covid/a.png",
        "covid/b.png",
        "normal/c.png",
        "normal/d.png",
        "normal/float.tif",
    ]
    reasons = dict(zip(fs.rejected["path"], fs.rejected["reason"], strict=True))
    assert reasons["covid/ghost.png"] == "not an image (unrecognised format)"
    assert reasons["normal/caf\\xe9.png"].startswith("file name is not valid UTF-8")
    assert "possible decompression bomb" in reasons["covid/bomb.dcm"]
    assert "Traceback" not in result.output


# ---- traps a user met (issue 15; moved from tests/test_traps.py) --------------------


def features(data: Path, out: Path, *extra: str):
    args = ["features", str(data), "-b", BACKBONE, "--features", str(out), *weight_flags()]
    return runner.invoke(app, [*args, *extra])


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
