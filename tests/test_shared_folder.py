"""A shared features folder (issue 38): what someone who could write it may and may not do to
the next user. Each test builds the folder the way an attacker, a careless colleague or a
shared lab drive would: planted or malformed cache entries, symbolic links at the names the
tool creates, a study key anyone can read. Caches are this user's or are not used; nothing the
tool writes goes through a planted link; every case is one warning or one line, never a
traceback, and never a forged result.

The attacks are written as an attacker writes them (plain files, no seal), so the same tests
ran against the code before the caches were sealed, and failed there."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import SYNTHETIC_ATTRS, dicom_bytes, make_class_folders, save_png, xray_like
from typer.testing import CliRunner

import cxr
from cxr.cli import app
from cxr.errors import CxrError

runner = CliRunner()
FAST = {"heads": ["logreg"], "folds": 3, "bootstrap": 50, "jobs": 1, "predictions": True}
SEAL = b"cxr-sealed/1\n"  # a sealed file's first line; the attacker's files have none
VICTIM = "a file the attacker wants overwritten\n"


def report(features: Path, **options) -> str:
    return json.dumps(cxr.evaluate(features, **{**FAST, **options}).report, sort_keys=True)


def payload(path: Path) -> bytes:
    """A cache file's content without its seal (what the attacker copies and edits)."""
    data = path.read_bytes()
    return data[len(SEAL) + 65 :] if data.startswith(SEAL) else data


def npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def cache_warnings(run) -> tuple[object, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run()
    return result, [str(w.message) for w in caught if "cache" in str(w.message)]


@pytest.fixture
def shared(make_synthetic_store, tmp_path, monkeypatch):
    """A weak store (an honest balanced accuracy well below 1), the honest report, and the
    attacker's own fit entries, made from the same public store under their own secret: the
    entries' names are computable from public data."""
    features = make_synthetic_store(separation=0.8, seed=4).parent
    honest = report(features, cache=False)
    mine = os.environ["CXR_CONFIG_DIR"]
    elsewhere = tmp_path / "attacker"
    shutil.copytree(features, elsewhere)
    monkeypatch.setenv("CXR_CONFIG_DIR", str(tmp_path / "attacker-config"))
    report(elsewhere)
    monkeypatch.setenv("CXR_CONFIG_DIR", mine)
    [entry] = (elsewhere / ".fits").glob("*.npz")
    with np.load(io.BytesIO(payload(entry))) as found:
        arrays = dict(found)
    return features, honest, entry, arrays


def plant(features: Path, entry: Path, data: bytes) -> Path:
    target = features / ".fits" / entry.name
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(data)
    return target


# ---- the fit cache -------------------------------------------------------------------------------


def test_a_planted_perfect_fit_entry_cannot_forge_the_score(shared):
    """Before: `cxr evaluate` reported balanced accuracy 1.00 from the planted entry."""
    features, honest, entry, arrays = shared
    perfect = np.eye(arrays["proba"].shape[1])[arrays["y"]]
    plant(features, entry, npz(**{**arrays, "proba": perfect}))
    again, warned = cache_warnings(lambda: report(features))
    assert json.loads(honest)["results"][0]["metrics"]["balanced_accuracy"]["pooled"] < 0.9
    assert again == honest
    assert len(warned) == 1 and "cached fit ignored (not written by you" in warned[0]


def test_planted_scores_cannot_forge_the_score(shared):
    features, honest, entry, _ = shared
    documents = {p: json.loads(payload(p)) for p in entry.parent.glob("*.json")}
    [scores] = [p for p, d in documents.items() if "metrics" in d["value"]]
    document = documents[scores]
    document["value"]["metrics"]["balanced_accuracy"]["pooled"] = 0.99
    plant(features, scores, json.dumps(document).encode())
    again, warned = cache_warnings(lambda: report(features))
    assert again == honest
    assert len(warned) == 1 and "cached result ignored (not written by you" in warned[0]


def test_planted_analyses_cannot_hide_a_confound_or_a_difference(shared):
    """The confound checks, neighbourhoods and paired comparisons are kept in the fit folder
    too: an entry of the attacker's that empties one is ignored like a planted score."""
    features, honest, entry, _ = shared
    planted = 0
    for path in entry.parent.glob("*.json"):
        document = json.loads(payload(path))
        if "metrics" in document["value"]:
            continue
        document["value"] = [] if isinstance(document["value"], list) else {}
        plant(features, path, json.dumps(document).encode())
        planted += 1
    assert planted >= 3  # confounds, a neighbourhood, the comparisons
    again, warned = cache_warnings(lambda: report(features))
    assert again == honest
    assert len(warned) == planted
    assert all("cached result ignored (not written by you" in w for w in warned)


def _meta(arrays, **changes) -> np.ndarray:
    meta = {**json.loads(arrays["meta"].tobytes()), **changes}
    return np.frombuffer(json.dumps(meta).encode(), np.uint8)


MALFORMED = {
    "nan-probability": lambda a: {**a, "proba": np.where(a["proba"] > 0.5, np.nan, a["proba"])},
    "minus-inf-probability": lambda a: {**a, "proba": -np.inf * a["proba"]},
    "probability-above-one": lambda a: {**a, "proba": a["proba"] * 3},
    "fold-out-of-range": lambda a: {**a, "fold": a["fold"] + 10**6},
    "fold-negative": lambda a: {**a, "fold": a["fold"] - 7},
    "deep-json": lambda a: {**a, "meta": np.frombuffer(b"[" * 100_000, np.uint8)},
    "mistyped-json": lambda a: {**a, "meta": _meta(a, best_params={}, warnings=[1, 2])},
    "json-list": lambda a: {**a, "meta": np.frombuffer(b"[1, 2]", np.uint8)},
    "huge-declared-shape": lambda a: {**a, "proba": np.lib.stride_tricks.as_strided(
        np.zeros(1), shape=(10**9, 3), strides=(0, 0))[:0]},
    "empty": lambda a: {**a, "proba": a["proba"][:0], "row": a["row"][:0]},
    "strings": lambda a: {**a, "proba": a["proba"].astype(str), "fold": a["fold"].astype(str)},
}  # fmt: skip


@pytest.mark.parametrize("malformed", MALFORMED)
def test_a_malformed_fit_entry_is_one_warning_never_a_traceback(shared, malformed):
    """Before: NaN or -inf probabilities, fold indices out of range or negative, nested or
    mistyped JSON ended in tracebacks, or were scored."""
    features, honest, entry, arrays = shared
    plant(features, entry, npz(**MALFORMED[malformed](arrays)))
    again, warned = cache_warnings(lambda: report(features))
    assert again == honest
    assert len(warned) == 1 and "cached fit ignored" in warned[0]


@pytest.mark.parametrize("malformed", MALFORMED)
def test_the_entries_own_checks_hold_behind_the_seal(shared, malformed):
    """The same entries sealed with this user's own secret (a bug, a bit flip): still one
    warning, never a traceback, never scored."""
    from cxr.trust import write_sealed

    features, honest, entry, arrays = shared
    target = plant(features, entry, b"")
    write_sealed(target, npz(**MALFORMED[malformed](arrays)), f"fit:{entry.name}")
    again, warned = cache_warnings(lambda: report(features))
    assert again == honest
    assert len(warned) == 1 and "cached fit ignored" in warned[0]
    assert "not written by you" not in warned[0]


def _zip_bomb(arrays, inflated: int = 512 << 20) -> bytes:
    """An entry whose ``proba.npy`` is deflated zeros declaring ``inflated`` bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            if name != "proba":
                archive.writestr(f"{name}.npy", npz_member(array))
        with archive.open("proba.npy", "w", force_zip64=True) as member:
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                header, {"descr": "<f8", "fortran_order": False, "shape": (inflated // 24, 3)}
            )
            member.write(header.getvalue())
            zeros = bytes(1 << 22)
            for _ in range(inflated // len(zeros)):
                member.write(zeros)
    return buffer.getvalue()


def npz_member(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize("sealed", [False, True], ids=["planted", "sealed"])
def test_an_npz_zip_bomb_is_refused_before_it_is_inflated(shared, sealed):
    """Before: 512 MB (4.2 GB in the issue) resident before the entry was refused."""
    features, honest, entry, arrays = shared
    bomb = _zip_bomb(arrays)
    assert len(bomb) < 4 << 20
    target = plant(features, entry, bomb)
    if sealed:
        from cxr.trust import write_sealed

        write_sealed(target, bomb, f"fit:{entry.name}")
    tracemalloc.start()
    again, warned = cache_warnings(lambda: report(features))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert again == honest and peak < 128 << 20
    assert len(warned) == 1 and "cached fit ignored" in warned[0]


def test_a_fits_folder_that_is_a_link_is_not_written_or_emptied(make_synthetic_store, tmp_path):
    """Before: entries went into the folder the link named, and evicting the oldest deleted
    that folder's own .json and .npz files."""
    from cxr.classify.fitcache import FitCache

    features = make_synthetic_store().parent
    elsewhere = tmp_path / "someone's results"
    elsewhere.mkdir()
    (elsewhere / "table.json").write_text("{}")
    (features / ".fits").symlink_to(elsewhere)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cxr.evaluate(features, **FAST)
        FitCache(features / ".fits", max_bytes=0).put_json("k", {"a": 1})
    assert [p.name for p in elsewhere.iterdir()] == ["table.json"]
    assert any("fit cache not used (a symbolic link" in str(w.message) for w in caught)


# ---- the hash, header and audit caches, and OpenVINO's ------------------------------------------


def test_a_planted_hash_cache_cannot_swap_one_films_identity_for_anothers(tmp_path):
    """Before: a film took the sha256 the planted cache gave it, so the store would hold
    another film's embedding under its name."""
    from cxr.extract.discovery import discover
    from cxr.extract.hashing import HashCache

    data = make_class_folders(tmp_path / "data", per_class=2)
    features = tmp_path / "features"
    features.mkdir()
    cache = features / ".hashes.json"
    a, b = data / "covid" / "img000.png", data / "normal" / "img000.png"
    info = a.stat()
    swapped = hashlib.sha256(b.read_bytes()).hexdigest()
    files = {str(a.resolve()): [info.st_size, info.st_mtime_ns, info.st_ino, swapped]}
    cache.write_text(json.dumps({"format": "cxr-hashes/1", "files": files}))
    found, warned = cache_warnings(lambda: discover(data, None, HashCache(cache)))
    by_path = {e.path: e.sha256 for e in found.entries}
    assert by_path["covid/img000.png"] == hashlib.sha256(a.read_bytes()).hexdigest()
    assert len(warned) == 1 and "hash cache ignored (not written by you" in warned[0]


@pytest.mark.parametrize(
    "files",
    [[1, 2], {"x": "abc"}, {"x": [1, 2, 3]}, {"x": [1, 2, 3, "not a sha"]}],
    ids=["list", "text", "short", "bad-digest"],
)
def test_a_malformed_hash_cache_is_one_warning(tmp_path, files):
    from cxr.extract.discovery import discover
    from cxr.extract.hashing import HashCache
    from cxr.trust import write_sealed

    data = make_class_folders(tmp_path / "data", per_class=2)
    cache = tmp_path / ".hashes.json"
    write_sealed(cache, json.dumps({"format": "cxr-hashes/1", "files": files}).encode(),
                 "hashes:.hashes.json")  # fmt: skip
    found, warned = cache_warnings(lambda: discover(data, None, HashCache(cache)))
    assert len(found.entries) == 4 and len(warned) == 1 and "malformed" in warned[0]


def test_a_planted_header_cache_cannot_set_a_films_patient(tmp_path):
    """The cache names its key only by a fingerprint, which a copy of the folder carries: an
    edited cache gave every film the patient, view or scanner the attacker chose."""
    from cxr.extract.headers import HeaderCache, StudyKey

    film = tmp_path / "covid" / "a.dcm"
    film.parent.mkdir()
    film.write_bytes(dicom_bytes(xray_like(1).astype(np.uint16), PatientID="P1", ViewPosition="PA"))
    sha = hashlib.sha256(film.read_bytes()).hexdigest()
    key = StudyKey(tmp_path, "a study key of 32 hex digits: " + "ab" * 16)
    honest = HeaderCache(tmp_path, key)
    columns, _ = honest.columns(sha, film)
    honest.save()
    document = json.loads(payload(honest.path))
    document["files"][sha].update(patient_id="p-0000000000000000", view="AP")
    honest.path.write_text(json.dumps(document))
    (found, _), warned = cache_warnings(lambda: HeaderCache(tmp_path, key).columns(sha, film))
    assert found == columns and found["view"] == "PA"
    assert len(warned) == 1 and "header cache ignored (not written by you" in warned[0]


def _films(tmp_path: Path) -> tuple[list[str], list[Path], Path]:
    files = [save_png(tmp_path / "data" / f"{n}.png", n, (120, 100)) for n in range(2)]
    ids = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    return ids, files, tmp_path / "features"


def _phash_file(path: Path, ids, hashes, **dataset) -> None:
    from cxr.audit.phash import METHOD

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs["method"] = METHOD
        if isinstance(ids, np.ndarray):  # numbers, not text
            f.create_dataset("id", data=ids)
        else:
            f.create_dataset("id", data=np.asarray(ids, dtype=object), dtype=h5py.string_dtype())
        f.create_dataset("hash", data=hashes, **dataset)


def test_a_planted_audit_cache_cannot_make_two_films_one(tmp_path):
    """Before: two different films took one planted hash and the audit called them copies."""
    from cxr.audit.cache import cache_path, hashes_for
    from cxr.audit.phash import LEVELS, WORDS

    ids, files, features = _films(tmp_path)
    honest, _, _ = hashes_for(ids, files, features)
    assert not np.array_equal(honest[ids[0]], honest[ids[1]])
    same = np.zeros((2, LEVELS, WORDS), np.uint64)
    _phash_file(cache_path(features), ids, same)
    found, notes, computed = hashes_for(ids, files, features)
    assert computed == 2 and not np.array_equal(found[ids[0]], found[ids[1]])
    assert len(notes) == 1 and "hash cache ignored (not written by you" in notes[0]


def _malformed_phash(kind: str, ids):
    from cxr.audit.phash import LEVELS, WORDS

    good = np.ones((2, LEVELS, WORDS), np.uint64)
    return {
        "wrong-shape": (ids, good[:, :1], {}),
        "ids-of-the-wrong-type": (np.arange(2), good, {}),
        "ids-of-the-wrong-length": ([ids[0]], good, {}),
        "gzip-bomb": (ids, np.zeros(((256 << 20) // (LEVELS * WORDS * 8), LEVELS, WORDS),
                                    np.uint64), {"compression": "gzip", "chunks": True}),
    }[kind]  # fmt: skip


@pytest.mark.parametrize(
    "kind", ["wrong-shape", "ids-of-the-wrong-type", "ids-of-the-wrong-length", "gzip-bomb"]
)
@pytest.mark.parametrize("sealed", [False, True], ids=["planted", "sealed"])
def test_a_malformed_audit_cache_is_a_note_never_a_traceback(tmp_path, kind, sealed):
    """Before: a traceback for each, and the bomb inflated before anything was checked."""
    from cxr.audit.cache import cache_path, hashes_for

    ids, files, features = _films(tmp_path)
    listed, hashes, dataset = _malformed_phash(kind, ids)
    path = cache_path(features)
    _phash_file(path, listed, hashes, **dataset)
    if sealed:
        from cxr.trust import write_sealed

        write_sealed(path, path.read_bytes(), "phash:phash.h5")
    tracemalloc.start()
    found, notes, computed = hashes_for(ids, files, features)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert computed == 2 and set(found) == set(ids)
    assert len(notes) == 1 and "hash cache ignored" in notes[0]
    assert peak < 128 << 20


def test_an_openvino_cache_someone_else_wrote_is_not_loaded(tmp_path):
    """A Keras home on a shared drive: a model folder whose meta.json names its files' sha256
    was loaded (and its probe figure reported) whoever wrote it."""
    ov = pytest.importorskip("openvino")
    from cxr.extract import ov_cache

    opset = ov.opset13 if hasattr(ov, "opset13") else ov.runtime.opset13
    x = opset.parameter([1, 4], np.float32)
    model = ov.Model([opset.relu(x)], [x], "planted")
    folder = tmp_path / "cxr-openvino" / "mobilenet_v2-x"
    folder.mkdir(parents=True)
    ov.save_model(model, str(folder / "model.xml"))
    digests = {
        n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in ("model.xml", "model.bin")
    }
    meta = {"format": ov_cache.CACHE_FORMAT, "files": digests, "probe": {"f32": 0.0}}
    (folder / "meta.json").write_text(json.dumps(meta))
    assert ov_cache.read_meta(folder) is None
    assert ov_cache.cached(folder) is None


# ---- files the tool creates: planted links -------------------------------------------------------


@pytest.fixture
def victim(tmp_path) -> Path:
    path = tmp_path / "victim" / "precious.txt"
    path.parent.mkdir()
    path.write_text(VICTIM)
    return path


def _store_attrs() -> dict:
    return {**SYNTHETIC_ATTRS, "backbone": "mobilenet_v2", "dim": 4}


def _write_hashes(folder: Path, make_store=None) -> None:
    from cxr.extract.hashing import HashCache

    data = make_class_folders(folder.parent / "data", per_class=1)
    cache = HashCache(folder / ".hashes.json")
    cache.sha256(data / "covid" / "img000.png")
    cache.save()


def _write_headers(folder: Path, make_store=None) -> None:
    from cxr.extract.headers import HeaderCache, StudyKey

    film = folder.parent / "a.dcm"
    film.write_bytes(dicom_bytes(xray_like(1).astype(np.uint16), PatientID="P1"))
    cache = HeaderCache(folder, StudyKey(folder, "ab" * 16))
    cache.columns(hashlib.sha256(film.read_bytes()).hexdigest(), film)
    cache.save()


def _write_manifest(folder: Path, make_store=None) -> None:
    from cxr.extract.headers import StudyKey
    from cxr.extract.manifest import build_manifest

    data = make_class_folders(folder, per_class=1)
    build_manifest(data, folder / "manifest.csv", key=StudyKey(folder, "ab" * 16))


def _write_audit_cache(folder: Path, make_store=None) -> None:
    from cxr.audit.cache import write_cache
    from cxr.audit.phash import LEVELS, WORDS

    write_cache(folder / "phash.h5", {"a" * 64: np.zeros((LEVELS, WORDS), np.uint64)})


def _write_store(folder: Path, make_store=None) -> None:
    from cxr.store.schema import ROW_COLUMNS, StoreContent, Table, write_atomic

    rows = Table.from_records([{c: "x" for c in ROW_COLUMNS}], ROW_COLUMNS)
    content = StoreContent(_store_attrs(), rows, Table.from_records([{}], ()), np.ones((1, 4)))
    write_atomic(folder / "mobilenet_v2.h5", content)


def _write_shard(folder: Path, make_store=None) -> None:
    from cxr.store.schema import reject_table, write_shard

    write_shard(folder / "0001.h5", _store_attrs(), ["a" * 64], np.ones((1, 4)), reject_table([]))


def _train_model(folder: Path, make_store) -> None:
    from cxr.classify.model import train

    store = make_store(directory=folder / "features")
    train(store.parent, head="logreg", out=folder / "m.skops")


TEMPORARY = {  # what the code before named its temporary file, and what writes it
    "..hashes.json.{pid}.tmp": _write_hashes,
    "..headers.json.{pid}.tmp": _write_headers,
    ".manifest.csv.{pid}.tmp": _write_manifest,
    ".phash.h5.{pid}.tmp": _write_audit_cache,
    ".mobilenet_v2.h5.{pid}.tmp": _write_store,
    ".0001.h5.tmp": _write_shard,
    ".m.skops.{pid}.tmp": _train_model,
}


@pytest.mark.parametrize("name", TEMPORARY)
def test_a_link_planted_at_a_temporary_name_is_never_written_through(
    make_synthetic_store, tmp_path, victim, name
):
    """Before: 7 of 7 wrote the file the link named (the hash, header, audit caches, the
    manifest, the model file, and the store's own two)."""
    folder = tmp_path / "shared"
    folder.mkdir()
    (folder / name.format(pid=os.getpid())).symlink_to(victim)
    TEMPORARY[name](folder, make_synthetic_store)
    assert victim.read_text() == VICTIM


def test_a_link_planted_under_a_figures_name_is_replaced_not_written_through(
    make_synthetic_store, tmp_path, victim
):
    """A plots folder on a shared drive: matplotlib wrote each figure through the link."""
    features = make_synthetic_store().parent
    first = tmp_path / "first"
    cxr.evaluate(features, **FAST, plots=first)
    plots = tmp_path / "shared-plots"
    plots.mkdir()
    for png in first.glob("*.png"):
        (plots / png.name).symlink_to(victim)
    cxr.evaluate(features, **FAST, plots=plots)
    assert victim.read_text() == VICTIM
    assert sorted(p.name for p in plots.iterdir() if not p.is_symlink()) == sorted(
        p.name for p in first.glob("*.png")
    )


def test_a_link_planted_as_the_stores_lock_is_refused(tmp_path, victim):
    """Before: `cxr features` truncated the file the link named and wrote its pid there."""
    from cxr.extract.writer import StoreWriter

    folder = tmp_path / "features"
    folder.mkdir()
    (folder / ".mobilenet_v2.lock").symlink_to(victim)
    refused = r"\.mobilenet_v2\.lock: the lock file is .*symbolic link"
    with pytest.raises(CxrError, match=refused), StoreWriter(folder, _store_attrs()):
        pass
    assert victim.read_text() == VICTIM
    os.link(victim, folder / ".other.lock")  # a second name for it: a hard link
    other = {**_store_attrs(), "backbone": "other"}
    with pytest.raises(CxrError, match="hard link"), StoreWriter(folder, other):
        pass
    assert victim.read_text() == VICTIM


def test_a_link_planted_as_the_models_lock_is_refused(make_synthetic_store, tmp_path, victim):
    store = make_synthetic_store()
    out = tmp_path / "models" / "m.skops"
    out.parent.mkdir()
    (out.parent / ".m.skops.lock").symlink_to(victim)
    args = ["train", "--features", str(store.parent), "--head", "logreg", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert ".m.skops.lock: the lock file is not a regular file (a symbolic link)" in result.stderr
    assert victim.read_text() == VICTIM and not out.exists()


def test_a_parts_folder_that_is_a_link_is_never_emptied(tmp_path, victim):
    """Before: publishing removed every file of the folder the link named."""
    from cxr.extract.writer import StoreWriter

    folder = tmp_path / "features"
    folder.mkdir()
    (folder / ".mobilenet_v2.parts").symlink_to(victim.parent)
    refused = pytest.raises(CxrError, match="parts folder is a symbolic link")
    with refused, StoreWriter(folder, _store_attrs()) as writer:
        writer.commit(["a" * 64], np.ones((1, 4), np.float32), [])
        writer._remove_shards()  # what publishing ends with
    assert victim.read_text() == VICTIM


def test_an_audit_folder_that_is_a_link_is_not_written_through(tmp_path, victim):
    from cxr.audit.cache import hashes_for

    ids, files, features = _films(tmp_path)
    features.mkdir()
    (features / ".audit").symlink_to(victim.parent)
    found, notes, _ = hashes_for(ids, files, features)
    assert set(found) == set(ids)
    assert [p.name for p in victim.parent.iterdir()] == ["precious.txt"]
    assert len(notes) == 1 and "hash cache not written (a symbolic link" in notes[0]


# ---- the study key -------------------------------------------------------------------------------


def _key_file(features: Path, kind: str, tmp_path: Path) -> str:
    key = features / ".id-key"
    public = tmp_path / "hostname"
    public.write_text("ws-lab-042\n")
    if kind == "link-to-a-public-file":
        key.symlink_to(public)
        return "symbolic link"
    if kind == "fifo":
        os.mkfifo(key, 0o600)
        return "FIFO"
    key.write_text({"world-readable": "ab" * 32, "one-character": "k", "hostname": "ws-lab-042",
                    "repeated": "a" * 64}[kind])  # fmt: skip
    key.chmod(0o644 if kind == "world-readable" else 0o600)
    return f"chmod 600 {key}" if kind == "world-readable" else "fewer than 128"


@pytest.mark.parametrize(
    "kind",
    ["link-to-a-public-file", "fifo", "world-readable", "one-character", "hostname", "repeated"],
)
def test_a_study_key_anyone_can_read_or_guess_is_refused(tmp_path, monkeypatch, kind):
    """Before: a link to /etc/hostname was the key, so anyone could recompute every
    pseudonym; a world-readable or one-character key was used without a word."""
    from cxr.extract.headers import StudyKey

    monkeypatch.delenv("CXR_ID_KEY", raising=False)
    features = tmp_path / "features"
    features.mkdir()
    reason = _key_file(features, kind, tmp_path)
    with pytest.raises(CxrError) as refused:
        _ = StudyKey(features).secret
    assert str(refused.value).startswith(f"{features / '.id-key'}: ")
    assert reason in str(refused.value) and "\n" not in str(refused.value)


def test_a_new_study_key_is_private_and_long(tmp_path, monkeypatch):
    from cxr.extract.headers import StudyKey

    monkeypatch.delenv("CXR_ID_KEY", raising=False)
    key = StudyKey(tmp_path / "features")
    assert len(key.secret) == 64 and key.created
    assert stat.S_IMODE((tmp_path / "features" / ".id-key").stat().st_mode) == 0o600
    assert StudyKey(tmp_path / "features").secret == key.secret


def test_the_cache_secret_is_refused_like_a_key(tmp_path, monkeypatch):
    """The user's own cache secret, if it is a link or readable by others: caches are not
    used (one warning), and the run goes on."""
    from cxr.trust import user_secret

    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "cache.key").write_text("ab" * 32)
    (folder / "cache.key").chmod(0o644)
    monkeypatch.setenv("CXR_CONFIG_DIR", str(folder))
    with pytest.warns(UserWarning, match="caches are not used .*chmod 600"):
        assert user_secret() is None
