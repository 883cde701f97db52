"""Hostile and odd inputs (issue 21): every file a user hands the tool may be an attack or a
careless export. Each test builds the file the way an attacker or the export would, and checks
that the tool neither crashes, hangs, runs code, nor touches what it was not given: one line
(a CxrError, or a per-file reject reason) naming the file and the reason, and nothing already
computed is lost. Crashes that would kill the test process (segfaults) run in a subprocess."""

from __future__ import annotations

import errno
import io
import json
import os
import struct
import subprocess
import sys
import types
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
import skops.io as sio
from helpers import save_png, xray_like
from PIL import Image
from typer.testing import CliRunner

import cxr
from cxr import files
from cxr.classify.heads import build_head
from cxr.classify.model import MODEL_FORMAT, load_model, predict
from cxr.cli import app
from cxr.errors import CxrError
from cxr.extract.discovery import discover
from cxr.extract.headers import StudyKey
from cxr.extract.images import Rejected, decode_pixels
from cxr.extract.layouts import ReadOptions
from cxr.files import UnusableFile, open_regular

runner = CliRunner()
CLASSES = ["a", "b", "c"]
PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


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


# ---- cxr train ----------------------------------------------------------------------------------


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


# ---- decoders: only the formats the tool supports ----------------------------------------------

POSTSCRIPT = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nnewpath 0 0 moveto 64 64 lineto stroke\n"
)


def test_postscript_named_png_never_reaches_ghostscript(monkeypatch):
    """Pillow identifies PostScript by its content and hands it to Ghostscript; only PNG, JPEG,
    BMP and TIFF may be opened."""
    from PIL import EpsImagePlugin

    calls = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: calls.append(a) or 1 / 0)
    with pytest.raises(Rejected, match=r"^not an image \(unrecognised format\)$"):
        decode_pixels(POSTSCRIPT, "film.png")
    assert calls == []


def test_one_function_opens_every_image_and_every_dicom():
    """features, predict and the audit's hashes decode through extract/images.py alone (and
    `cxr manifest` reads headers through it), so its limits hold everywhere."""
    package = Path(cxr.__file__).parent
    openers = {
        path.relative_to(package).as_posix()
        for path in package.rglob("*.py")
        if path.relative_to(package).parts[0] not in ("tests", "benchmarks", ".venv")
        and ("Image.open(" in path.read_text() or "dcmread(" in path.read_text())
    }
    assert openers == {"extract/images.py"}


# ---- regular files only -------------------------------------------------------------------------

DISCOVER_FIFO = """
import json, sys
from pathlib import Path
from cxr.extract.dataset import Entry
from cxr.extract.discovery import discover
from cxr.extract.manifest import build_manifest
from cxr.extract.reader import _prepare
data, fifo = Path(sys.argv[1]), Path(sys.argv[2])
found = {}
for manifest in (None, data / "list.csv"):
    found[str(manifest)] = sorted([r.path, r.reason] for r in discover(data, manifest).rejects)
found["read"] = _prepare(Entry("x.png", fifo, "covid", sha256="0" * 64), {224}, "squash")[1]
found["manifest"] = build_manifest(data, data.parent / "m.csv", key=None, keep_ids=True).rows
print(json.dumps(found))
"""


def test_fifos_and_devices_are_rejects_not_hangs(tmp_path):
    """A FIFO or a symlink to /dev/zero in a class folder or a manifest hung `cxr features` (and
    `cxr manifest`) before it printed anything; run in a subprocess with a timeout."""
    data = tmp_path / "data"
    save_png(data / "covid" / "a.png", 1)
    save_png(data / "normal" / "b.png", 2)
    os.mkfifo(data / "covid" / "pipe.png")
    (data / "normal" / "zero.png").symlink_to("/dev/zero")
    (data / "list.csv").write_text(
        "path,label\ncovid/a.png,covid\ncovid/pipe.png,covid\nnormal/zero.png,normal\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", DISCOVER_FIFO, str(data), str(data / "covid" / "pipe.png")],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("discovery hung on a FIFO or a device")
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout)
    expected = [
        ["covid/pipe.png", "not a regular file (a FIFO)"],
        ["normal/zero.png", "not a regular file (a character device)"],
    ]
    assert found["None"] == expected and found[str(data / "list.csv")] == expected
    assert found["read"] == "not a regular file (a FIFO)"  # swapped in after hashing
    assert found["manifest"] == 4  # listed; features rejects them with the reasons above


def test_open_regular_refuses_a_link_only_when_told(tmp_path, monkeypatch):
    """The fit cache reads only files it wrote: a link there was planted, even one swapped in
    after the check (``O_NOFOLLOW``)."""
    target = tmp_path / "real.npz"
    target.write_bytes(b"data")
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    with open_regular(link) as fh:
        assert fh.read() == b"data"
    with pytest.raises(UnusableFile, match=r"not a regular file \(a symbolic link\)"):
        open_regular(link, follow_links=False)
    monkeypatch.setattr(files, "regular_stat", lambda *a: None)  # the link swapped in meanwhile
    with pytest.raises(OSError) as refused:
        open_regular(link, follow_links=False)
    assert refused.value.errno == errno.ELOOP


def test_manifest_paths_outside_the_data_folder_are_refused_unless_asked(tmp_path):
    data = tmp_path / "data"
    save_png(data / "covid" / "a.png", 1)
    secret = save_png(tmp_path / "elsewhere" / "s.png", 2)
    (data / "manifest.csv").write_text(
        f"path,label\ncovid/a.png,covid\n../elsewhere/s.png,covid\n{secret},normal\n"
        "covid/../covid/a.png,covid\n"
    )
    found = discover(data, None)
    reasons = {r.path: r.reason for r in found.rejects}
    assert [e.path for e in found.entries] == ["covid/a.png", "covid/../covid/a.png"]
    assert reasons["../elsewhere/s.png"].startswith("outside the data folder (it climbs out")
    assert reasons[str(secret)].startswith("outside the data folder (an absolute path)")
    assert "--allow-outside-data" in reasons[str(secret)]
    allowed = discover(data, None, options=ReadOptions.of(allow_outside=True))
    assert len(allowed.entries) == 4 and not allowed.rejects


def test_a_name_that_is_not_utf8_is_one_reject_at_discovery(tmp_path):
    data = tmp_path / "data"
    save_png(data / "covid" / "a.png", 1)
    save_png(data / "covid" / os.fsdecode(b"caf\xe9.png"), 2)  # a Latin-1 name from a PACS
    save_png(data / "normal" / "b.png", 3)
    found = discover(data, None)
    assert [e.path for e in found.entries] == ["covid/a.png", "normal/b.png"]
    [reject] = found.rejects
    assert reject.path == "covid/caf\\xe9.png"
    assert reject.reason.startswith("file name is not valid UTF-8")


# ---- decompression bombs ------------------------------------------------------------------------


def _encapsulated(name: str, patch) -> bytes:
    """A real compressed DICOM of pydicom's whose codestream is patched by ``patch``."""
    from pydicom.encaps import encapsulate, generate_frames

    ds = pydicom.dcmread(PYDICOM_FILES / name)
    code = bytearray(next(generate_frames(ds.PixelData, number_of_frames=1)))
    patch(code)
    ds.PixelData = encapsulate([bytes(code)])
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def _j2k_bomb() -> bytes:
    """JPEG 2000 whose SIZ marker declares 40000 x 40000 px in one tile (the header: 256 x 1024):
    3.2 GB of memory to be told it cannot be decoded."""

    def patch(code):
        struct.pack_into(
            ">8I", code, code.find(b"\xff\x51") + 6, *(40000,) * 2, 0, 0, *(40000,) * 2, 0, 0
        )

    return _encapsulated("JPEG2000.dcm", patch)


def _jpeg_bomb() -> bytes:
    """Baseline JPEG whose frame header declares 30000 x 30000 x 3 (the header: 100 x 100):
    10 GB of memory, 20 s."""
    return _encapsulated(
        "SC_rgb_jpeg_dcmtk.dcm",
        lambda code: struct.pack_into(">HH", code, code.find(b"\xff\xc0") + 5, 30000, 30000),
    )


def _dicom_header(**elements):
    from pydicom.dataset import Dataset
    from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    ds.Modality, ds.PatientID, ds.PatientAge, ds.ViewPosition = "CR", "PAT-1", "093Y", "PA"
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.Rows, ds.Columns = 1, "MONOCHROME2", 64, 64
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for key, value in elements.items():
        setattr(ds, key, value)
    return ds


def _written(ds=None, *, syntax, tail: bytes = b"") -> bytes:
    """Preamble, file meta and the data set (explicit VR little endian), then ``tail``."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = (
        SecondaryCaptureImageStorage,
        generate_uid(),
    )
    meta.TransferSyntaxUID = syntax
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_file_meta_info(fp, meta)
    if ds is not None:
        write_dataset(fp, ds)
    return b"\0" * 128 + b"DICM" + fp.getvalue() + tail


def _deflated_bomb(inflated: int = 3 << 30) -> bytes:
    """Deflated explicit VR: a 64 x 64 header whose pixel data inflates to 3 GB, from 3 MB of
    file (one full-flushed megabyte of zeros, repeated). pydicom inflated all of it, even with
    stop_before_pixels; this machine's kernel killed the process."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, _dicom_header())
    pixel_data = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, inflated)
    head = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = head.compress(fp.getvalue() + pixel_data) + head.flush(zlib.Z_FULL_FLUSH)
    zeros = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = zeros.compress(bytes(1 << 20)) + zeros.flush(zlib.Z_FULL_FLUSH)
    stream += chunk * (inflated >> 20) + zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    return _written(syntax=DeflatedExplicitVRLittleEndian, tail=stream)


def _rle_bomb(side: int = 8900) -> bytes:
    """RLE, 8900 x 8900 px (under the 80-megapixel guard) x 3 samples x 32 bits: 950 MB to
    decode from a file of 700 bytes (12 segments of 2 bytes)."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless

    offsets = [64 + 2 * i for i in range(12)]
    frame = struct.pack("<16I", 12, *offsets, *[0] * 3) + b"\x81\x00" * 12
    ds = _dicom_header(Rows=side, Columns=side, SamplesPerPixel=3, PhotometricInterpretation="RGB")
    ds.PlanarConfiguration, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 0, 32, 32, 31
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    return _written(ds, syntax=RLELossless)


BOMBS = {"j2k": _j2k_bomb, "jpeg": _jpeg_bomb, "deflated": _deflated_bomb, "rle": _rle_bomb}
DECODE_UNDER_LIMIT = """
import json, resource, sys
from pathlib import Path
from cxr.extract.images import Rejected, decode_pixels
from cxr.extract.headers import read_header
limit = 1 << 30  # 1 GB of address space: every bomb above needs more
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
found = {}
for file in map(Path, sys.argv[1:]):
    try:
        decode_pixels(file.read_bytes(), file.name)
        found[file.stem] = "decoded"
    except Rejected as exc:
        found[file.stem] = str(exc)
found["header"] = read_header(Path(sys.argv[1]).with_name("deflated.dcm"))
peak = [line for line in open("/proc/self/status") if line.startswith("VmHWM")]
found["peak_mb"] = int(peak[0].split()[1]) // 1024  # this image's own peak (ru_maxrss may
# report the forking parent's)
print(json.dumps(found))
"""


def test_decompression_bombs_are_refused_before_memory_is_taken(tmp_path):
    """Tiny files declaring huge sizes where the 80-megapixel guard (Rows x Columns of the DICOM
    header) did not look; decoded in a subprocess allowed 1 GB of address space."""
    files = []
    for name, make in BOMBS.items():
        files.append(tmp_path / f"{name}.dcm")
        files[-1].write_bytes(make())
        assert files[-1].stat().st_size < 4 << 20
    done = subprocess.run(
        [sys.executable, "-c", DECODE_UNDER_LIMIT, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout)
    for name in BOMBS:
        assert "possible decompression bomb" in found[name], (name, found[name])
    assert "40000x40000" in found["j2k"] and "30000x30000" in found["jpeg"]
    assert "3 samples x 32 bits" in found["rle"] and "more than its header" in found["deflated"]
    header, reason = found["header"]  # cxr manifest reads the header without the 3 GB of pixels
    assert reason == "" and header["modality"] == "CR" and header["age"] == "90"
    assert found["peak_mb"] < 300, found["peak_mb"]


def test_a_codestream_that_disagrees_with_its_header_is_refused():
    """Within the limits, but not the image the header describes: not decoded."""
    small = _encapsulated(
        "SC_rgb_jpeg_dcmtk.dcm",
        lambda code: struct.pack_into(">HH", code, code.find(b"\xff\xc0") + 5, 200, 100),
    )
    with pytest.raises(Rejected, match="declares 100x200 px, its DICOM header 100x100"):
        decode_pixels(small, "x.dcm")


# ---- numbers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("outlier", [np.inf, -np.inf, 1e30, np.nan])
def test_one_odd_float_pixel_does_not_black_out_the_film(outlier):
    """TIFF mode F with one +-inf or 1e30 pixel was embedded as an all-black (or all-white)
    film; it is windowed on the percentiles of its finite values."""
    film = xray_like(3, (96, 80)).astype(np.float32) / 255

    def tiff(values) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(values, mode="F").save(buffer, format="TIFF")
        return buffer.getvalue()

    odd = film.copy()
    odd[5, 5] = outlier
    clean, got = decode_pixels(tiff(film), "a.tif"), decode_pixels(tiff(odd), "b.tif")
    assert got.std() > 30 and np.corrcoef(got.ravel(), clean.ravel())[0, 1] > 0.99


def test_a_float_dicom_with_an_outlier_is_windowed_too():
    film = xray_like(4, (96, 80)).astype(np.float32)
    odd = film.copy()
    odd[0, 0] = 1e30
    ds = _dicom_header(Rows=80, Columns=96, BitsAllocated=32)
    for keyword in ("BitsStored", "HighBit", "PixelRepresentation"):
        delattr(ds, keyword)
    ds.FloatPixelData = odd.tobytes()
    from pydicom.uid import ExplicitVRLittleEndian

    got = decode_pixels(_written(ds, syntax=ExplicitVRLittleEndian), "f.dcm")
    assert got.std() > 30 and np.corrcoef(got.ravel(), film.ravel())[0, 1] > 0.95


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
    (data / "covid" / "bomb.dcm").write_bytes(_j2k_bomb())
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


# ---- cxr manifest: what leaves the hospital -----------------------------------------------------


def _csv_rows(path: Path) -> list[dict[str, str]]:
    import csv

    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_manifest_writes_an_allow_list_of_columns_and_caps_every_age(tmp_path):
    """A MIMIC-style export: subject, study and image ids, an accession number, a UID, a URL and
    free text; before, only names matching a regex were pseudonymised, the rest (and ages over
    89 from the CSV itself) went out verbatim."""
    from cxr.extract.manifest import build_manifest

    data = tmp_path / "data"
    save_png(data / "covid" / "a.png", 1)
    save_png(data / "normal" / "b.png", 2)
    given = data / "export.csv"
    given.write_text(
        "path,label,subject_id,study_id,dicom_id,AccessionNumber,SOPInstanceUID,finding,"
        "orig_url,notes,age\n"
        "covid/a.png,covid,10000032,50414267,02aa804e,ACC-991,1.2.840.1.5,COVID-19,"
        "https://pacs.example/10000032,seen by Dr Roe,95\n"
        "normal/b.png,normal,10000033,50414268,02aa804f,ACC-992,1.2.840.1.6,,,,42\n"
    )
    summary = build_manifest(given, tmp_path / "out.csv", key=StudyKey(tmp_path, "k"))
    text = (tmp_path / "out.csv").read_text()
    for secret in ("10000032", "50414267", "02aa804e", "ACC-991", "1.2.840.1.5", "Roe", "pacs"):
        assert secret not in text, secret
    assert set(summary.dropped) == {"orig_url", "notes"}
    a, b = _csv_rows(tmp_path / "out.csv")
    assert (a["finding"], a["age"], b["age"]) == ("COVID-19", "90", "42")
    assert a["subject_id"].startswith("i-") and a["subject_id"] != b["subject_id"]


def test_manifest_cells_a_spreadsheet_would_run_are_escaped_and_read_back(tmp_path):
    """Class folders and files named like formulas (a careless export or an attacker): the CSV
    shows them as text, and `cxr features` reads the original names back."""
    from cxr.extract.layouts.table import Manifest
    from cxr.extract.manifest import build_manifest

    data = tmp_path / "data"
    names = ["=HYPERLINK(x)/+1.png", "=HYPERLINK(x)/@a.png", "-2/'=b.png", "-2/plain.png"]
    for i, name in enumerate(names):
        save_png(data / name, i)
    out = data / "manifest.csv"
    build_manifest(data, out, key=StudyKey(tmp_path), keep_ids=True)
    for line in out.read_text().splitlines()[1:]:
        assert all(not cell.startswith(("=", "+", "-", "@")) for cell in line.split(","))
    listing = Manifest(out).read(data, ReadOptions())
    entries = listing.entries
    assert not listing.rejects and sorted(e.path for e in entries) == sorted(names)
    assert {e.label for e in entries} == {"=HYPERLINK(x)", "-2"}
    assert all(e.file.is_file() for e in entries)


# ---- stores read from disk ----------------------------------------------------------------------


def _damage(path: Path, edit) -> Path:
    import h5py

    with h5py.File(path, "r+") as f:
        edit(f)
    return path


def _replace(f, name: str, data, **kwargs) -> None:
    del f[name]
    f.create_dataset(name, data=data, **kwargs)


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda f: _replace(f, "X", f["X"][:-2]), r"X is float32 \(\d+, 8\), expected float32"),
        (lambda f: _replace(f, "X", f["X"][()].astype("f8")), "X is float64"),
        (lambda f: _replace(f, "X", f["X"][:, :4]), r"X is float32 \(\d+, 4\), expected"),
        (lambda f: _replace(f, "rows/label", f["rows/label"][:-1]), "rows/label has"),
        (
            lambda f: _replace(f, "rows/label", np.arange(len(f["X"]))),
            "rows/label is int64 .* not one column of text",
        ),
        (lambda f: f.attrs.__delitem__("backbone"), "attribute backbone is missing"),
        (lambda f: f.attrs.__setitem__("dim", "8"), "attribute dim is '8', not int"),
        (lambda f: f.attrs.__setitem__("weights_seed", 0.5), "attribute weights_seed is 0.5"),
    ],
    ids=[
        "X-short",
        "X-float64",
        "X-narrow",
        "labels-short",
        "labels-numbers",
        "no-backbone",
        "dim-text",
        "seed-float",
    ],
)
def test_a_damaged_store_is_one_line_for_every_reader(make_synthetic_store, edit, reason):
    """Before: loaded (and evaluate or train failed later, or silently fitted the wrong rows),
    and `cxr info` listed it as healthy (or failed with a KeyError)."""
    from cxr.store import StoreError, describe, load

    path = _damage(make_synthetic_store(), edit)
    for read in (load, describe):
        with pytest.raises(StoreError, match=f"mobilenet_v2.h5: damaged feature store: {reason}"):
            read(path)
    result = runner.invoke(app, ["info", "--features", str(path.parent)])
    assert result.exit_code == 2 and "damaged" in result.output and "Traceback" not in result.output


def test_a_store_with_nan_vectors_is_refused_when_loaded(make_synthetic_store):
    from cxr.store import StoreError, load

    def poison(f):
        X = f["X"][()]
        X[3, 2] = np.nan
        f["X"][...] = X

    path = _damage(make_synthetic_store(), poison)
    with pytest.raises(StoreError, match=r"1 row\(s\) have NaN or infinite .* is row 3\)"):
        load(path)


def test_a_store_cannot_make_the_tool_read_another_file(make_synthetic_store, tmp_path):
    """HDF5 can keep a dataset's bytes in any other file (external storage) or link to another
    file's object: a store handed over would be read from wherever it points."""
    import h5py

    from cxr.store import StoreError, load

    secret = tmp_path / "secret.bin"
    secret.write_bytes(os.urandom(1 << 16))
    path = make_synthetic_store()
    with h5py.File(path, "r+") as f:
        shape = f["X"].shape
        del f["X"]
        f.create_dataset("X", shape=shape, dtype="f4", external=[(str(secret), 0, 1 << 16)])
    with pytest.raises(StoreError, match="X is stored outside the store file"):
        load(path)
    other = make_synthetic_store(directory=tmp_path / "other")
    path = make_synthetic_store(backbone="xception")
    with h5py.File(path, "r+") as f:
        del f["rows/label"]
        f["rows/label"] = h5py.ExternalLink(str(other), "rows/label")
    with pytest.raises(StoreError, match="rows/label is a link to somewhere else"):
        load(path)


def test_manifest_columns_named_like_markup_are_printed_as_text(tmp_path):
    """Rich read a column name of a hospital CSV as markup: '[/]_id' crashed the summary."""
    data = tmp_path / "data"
    save_png(data / "covid" / "a.png", 1)
    (data / "m.csv").write_text("path,label,[/]_id,[bold]age\ncovid/a.png,covid,123,95\n")
    args = ["manifest", str(data / "m.csv"), "--out", str(tmp_path / "out.csv"), "--key", "k"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "[/]_id 1" in result.output and "keeps them): [bold]age" in result.output


# ---- what evaluate, audit and train print and write -----------------------------------------


def _markup_store(make_synthetic_store):
    """Labels and a metadata value a careless export could hold, read by Rich as markup."""
    path = make_synthetic_store(
        {"[left]": 10, "[/b]": 10}, meta={"site": lambda r: "[red]A" if "0" in r["id"] else "B"}
    )
    return path


def test_labels_like_markup_are_printed_as_they_are(make_synthetic_store, tmp_path):
    """`[left]` vanished from the tables; `[/b]` crashed the report after every fit, and the
    JSON was never written."""
    path = _markup_store(make_synthetic_store)
    out = tmp_path / "r.json"
    args = ["evaluate", "--features", str(path.parent), "--head", "logreg", "--folds", "3"]
    result = runner.invoke(app, [*args, "--bootstrap", "20", "--jobs", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "[left]" in result.output and "[/b]" in result.output
    assert json.loads(out.read_text())["results"][0]["classes"] == ["[/b]", "[left]"]
    import hashlib

    from cxr.store.schema import StoreContent, Table, read_content, write_atomic

    content = read_content(path)  # the films the rows name, under their content hashes
    files = [save_png(tmp_path / "data" / p, n) for n, p in enumerate(content.rows["path"])]
    ids = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    rows = Table({**content.rows.columns, "id": np.asarray(ids, dtype=object)})
    write_atomic(path, StoreContent(content.attrs, rows, content.meta, content.X))
    audit = ["audit", "--features", str(path.parent), "--data", str(tmp_path / "data")]
    audited = runner.invoke(app, [*audit, "--probe", "label"])
    assert audited.exit_code == 0, audited.output
    assert "[/b] " in audited.output and "[left] " in audited.output  # the probe's classes


def test_plot_names_stay_in_their_folder_and_within_a_name_length(make_synthetic_store, tmp_path):
    """A store attribute holding ../../../x wrote a plot outside --plots; a long label or a
    24-value --test-where crashed with 'File name too long' after every fit."""
    long_label = "pneumonia-" + "x" * 300
    path = make_synthetic_store(
        {"covid": 8, long_label: 8},
        attrs={"backbone": "../../../escaped"},
        meta={"site": lambda r: f"s{int(r['patient_id'].rsplit('-p', 1)[1]) % 4}"},
    )
    plots, out = tmp_path / "deep" / "plots", tmp_path / "r.json"
    sites = ",".join(["s1", *(f"site-{i:02d}-of-a-long-list" for i in range(24))])
    args = ["evaluate", "--features", str(path.parent), "--head", "logreg", "--test-where"]
    result = runner.invoke(
        app,
        [*args, f"site={sites}", "--bootstrap", "20", "--jobs", "1", "--plots", str(plots),
         "--json", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    written = [Path(p) for p in json.loads(out.read_text())["plots"]]
    written += [Path(p) for r in json.loads(out.read_text())["results"] for p in r["plots"]]
    assert written and all(p.parent == plots and p.is_file() for p in written)
    assert all(len(p.name.encode()) <= 255 for p in written)
    assert not list(tmp_path.glob("**/escaped*")) or all(
        p.parent == plots for p in tmp_path.glob("**/escaped*")
    )


def test_the_json_is_written_even_when_the_plots_fail(make_synthetic_store, tmp_path, monkeypatch):
    path = make_synthetic_store()

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("cxr.classify.plots.write_plots", broken)
    out = tmp_path / "r.json"
    args = ["evaluate", "--features", str(path.parent), "--head", "logreg", "--folds", "3"]
    result = runner.invoke(
        app, [*args, "--bootstrap", "20", "--plots", str(tmp_path / "p"), "--json", str(out)]
    )
    assert result.exit_code == 2
    assert "error: --plots" in result.stderr and "No space left on device" in result.stderr
    assert json.loads(out.read_text())["results"]  # the fits are not lost


@pytest.mark.parametrize(
    "option, message",
    [
        (["--jobs", "100000"], "--jobs 100000: give a number of workers"),
        (["--bootstrap", "1000000000"], "--bootstrap must be 1..100,000 replicates"),
        (["--folds", "5000"], "--folds must be 2..1000"),
        (["--curve-draws", "5000", "--train-sizes", "5,all"], "--curve-draws must be 1..100"),
    ],
)
def test_counts_out_of_bounds_are_refused_before_any_work(tmp_path, option, message):
    """Refused before a store is even looked for (the folder does not exist)."""
    result = runner.invoke(app, ["evaluate", "--features", str(tmp_path / "none"), *option])
    assert result.exit_code == 2 and message in result.stderr, result.output


CONFIG_READ = """
import sys
from pathlib import Path
from cxr.classify.heads import parse_params
from cxr.errors import CxrError
from cxr.store.exclusions import Exclusions
for read in (lambda p: Exclusions.read(p), lambda p: parse_params([], p)):
    try:
        read(Path(sys.argv[1]))
    except CxrError as exc:
        print(exc)
"""


def test_an_exclusion_or_config_path_that_is_a_fifo_is_one_line(tmp_path):
    fifo = tmp_path / "audit.json"
    os.mkfifo(fifo)
    try:
        done = subprocess.run(
            [sys.executable, "-c", CONFIG_READ, str(fifo)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("reading a FIFO named as --exclude or --config hung")
    assert done.stdout.splitlines() == [
        f"{fifo}: cannot read the exclusion file: not a regular file (a FIFO)",
        f"{fifo}: cannot read the TOML file of hyper-parameters: not a regular file (a FIFO)",
    ]


def test_a_utf16_config_is_read_and_a_latin1_one_is_one_line(tmp_path):
    from cxr.classify.heads import parse_params

    config = tmp_path / "heads.toml"
    config.write_text("[logreg]\nC = 0.5\n", encoding="utf-16")  # Windows Notepad's 'Unicode'
    assert parse_params([], config) == {"logreg": {"C": 0.5}}
    config.write_bytes("# réglages\n[logreg]\nC = 0.5\n".encode("latin-1"))
    with pytest.raises(CxrError, match=r"is not UTF-8 text .*save it as UTF-8"):
        parse_params([], config)


def test_an_audit_whose_films_all_changed_since_still_reports(make_synthetic_store, tmp_path):
    """Every film replaced since the store was built: no hash is usable, and the audit said
    nothing but a ValueError from the hash search."""
    from cxr.store import load

    path = make_synthetic_store()  # its ids are not the files' sha256: every file 'changed'
    for n, stored in enumerate(load(path).rows["path"]):
        save_png(tmp_path / "data" / stored, n)
    out = tmp_path / "audit.json"
    args = ["audit", "--features", str(path.parent), "--data", str(tmp_path / "data")]
    result = runner.invoke(app, [*args, "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["counts"]["hashed_rows"] == 0 and report["notes"]
