"""`cxr manifest`: DICOM headers into manifest columns, pseudonymised patient ids."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pydicom
from helpers import dicom_bytes, save_png, small_weights, xray_like
from typer.testing import CliRunner

from cxr.classify.tasks import TaskSpec, select
from cxr.cli import app
from cxr.extract.headers import StudyKey, pseudonym
from cxr.extract.layouts import ReadOptions
from cxr.extract.runner import extract_features
from cxr.progress import Silent
from cxr.store import load

runner = CliRunner()
PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def read(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as fh:
        return {row["path"]: row for row in csv.DictReader(fh)}


def chest_films(root: Path) -> Path:
    """Two patients, PA and AP films, DICOM with real-looking headers, plus one PNG."""
    films = {
        "covid/a1.dcm": ("PAT-001", "PA", "M", "045Y"),
        "covid/a2.dcm": ("PAT-001", "AP", "M", "045Y"),
        "normal/b1.dcm": ("PAT-002", "PA", "F", "006M"),
    }
    for i, (path, (patient, view, sex, age)) in enumerate(films.items()):
        file = root / path
        file.parent.mkdir(parents=True, exist_ok=True)
        pixels = xray_like(i, (64, 64)).astype(np.uint16) * 16
        file.write_bytes(
            dicom_bytes(
                pixels,
                PatientID=patient,
                ViewPosition=view,
                PatientSex=sex,
                PatientAge=age,
                Manufacturer="ACME",
                InstitutionName="St Elsewhere",
            )
        )
    save_png(root / "normal" / "c1.png", 9, (64, 64))
    return root


def test_headers_become_columns_and_ids_a_keyed_hash(tmp_path):
    data = chest_films(tmp_path / "data")
    out = tmp_path / "manifest.csv"
    result = runner.invoke(app, ["manifest", str(data), "--out", str(out), "--key", "k1"])
    assert result.exit_code == 0, result.output
    rows = read(out)
    a1, a2, b1, c1 = (
        rows[p] for p in ("covid/a1.dcm", "covid/a2.dcm", "normal/b1.dcm", "normal/c1.png")
    )
    assert (a1["view"], a2["view"], a1["sex"], a1["age"], a1["modality"]) == (
        "PA",
        "AP",
        "M",
        "45",
        "CR",
    )
    assert b1["age"] == "0.50" and b1["manufacturer"] == "ACME"
    assert a1["patient_id"] == a2["patient_id"] == pseudonym(b"k1", "patient", "PAT-001")
    assert a1["patient_id"] != b1["patient_id"] and "PAT" not in out.read_text()
    assert "Elsewhere" not in out.read_text() and a1["source"].startswith("s-")
    assert c1["label"] == "normal" and c1["patient_id"] == "" and c1["view"] == ""
    other = tmp_path / "other.csv"
    runner.invoke(app, ["manifest", str(data), "--out", str(other), "--key", "k2"])
    assert read(other)["covid/a1.dcm"]["patient_id"] != a1["patient_id"]  # the key matters
    kept = tmp_path / "kept.csv"
    runner.invoke(app, ["manifest", str(data), "--out", str(kept), "--keep-ids"])
    assert read(kept)["covid/a1.dcm"]["patient_id"] == "PAT-001"


def test_without_a_key_the_studys_own_key_file_is_made_once_and_kept_private(tmp_path, monkeypatch):
    """`cxr manifest DATA` as the README writes it: no --key, no $CXR_ID_KEY (it failed before).
    A key is made beside the features, readable by its owner only, named in the output, and the
    same key (so the same pseudonyms) serves the next run and `cxr features`."""
    monkeypatch.delenv("CXR_ID_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    data = chest_films(tmp_path / "data")
    result = runner.invoke(app, ["manifest", str(data)])
    assert result.exit_code == 0, result.output
    key = tmp_path / "features" / ".id-key"
    assert key.is_file() and oct(key.stat().st_mode & 0o777) == "0o600"
    assert "the key file features/.id-key (created now)" in result.output.replace("\n", " ")
    written = data / "manifest.csv"  # where `cxr features DATA` looks
    first = read(written)["normal/b1.dcm"]["patient_id"]
    assert first == pseudonym(key.read_text().strip().encode(), "patient", "PAT-002")
    again = runner.invoke(app, ["manifest", str(data)])
    assert again.exit_code == 2 and "exists; pass --force" in again.stderr
    assert runner.invoke(app, ["manifest", str(data), "--force"]).exit_code == 0
    assert read(written)["normal/b1.dcm"]["patient_id"] == first
    monkeypatch.setenv("CXR_ID_KEY", "from-the-environment")
    result = runner.invoke(app, ["manifest", str(data), "--out", str(tmp_path / "m.csv")])
    expected = pseudonym(b"from-the-environment", "patient", "PAT-002")
    assert result.exit_code == 0 and read(tmp_path / "m.csv")["normal/b1.dcm"]["patient_id"] == (
        expected
    )


def test_real_third_party_headers(tmp_path):
    data = tmp_path / "data" / "any"
    data.mkdir(parents=True)
    for name in ("CT_small.dcm", "MR_small.dcm", "JPGExtended.dcm"):
        shutil.copy(PYDICOM_FILES / name, data / name)
    (data / "junk.dcm").write_bytes(b"not a dicom at all")
    out = tmp_path / "m.csv"
    result = runner.invoke(
        app, ["manifest", str(data.parent), "--out", str(out), "--keep-ids", "--json", "-"]
    )
    assert result.exit_code == 0, result.output
    rows = read(out)
    for name in ("CT_small.dcm", "MR_small.dcm", "JPGExtended.dcm"):
        ds = pydicom.dcmread(PYDICOM_FILES / name, stop_before_pixels=True)
        row = rows[f"any/{name}"]
        assert (row["modality"], row["patient_id"], row["rows"]) == (
            ds.Modality,
            str(ds.PatientID),
            str(ds.Rows),
        )
        assert row["transfer_syntax"] == ds.file_meta.TransferSyntaxUID.name
    assert rows["any/junk.dcm"]["modality"] == ""  # listed, no header: features will reject it


def test_features_and_evaluate_use_the_header_columns(tmp_path):
    data = chest_films(tmp_path / "data")
    for i in range(3, 9):  # more patients, so both classes have films of both views
        label, view = ("covid", "PA") if i % 2 else ("normal", "AP")
        pixels = xray_like(i, (64, 64)).astype(np.uint16) * 16
        (data / label / f"x{i}.dcm").write_bytes(
            dicom_bytes(pixels, PatientID=f"PAT-1{i}", ViewPosition=view if i > 4 else "PA")
        )
    out = tmp_path / "manifest.csv"
    runner.invoke(app, ["manifest", str(data), "--out", str(out), "--key", "k"])
    extract_features(
        data=data,
        manifest=out,
        backbones=["mobilenet_025"],
        weights=small_weights(),
        features_dir=tmp_path / "features",
        batch_size=4,
    )
    fs = load(tmp_path / "features", "mobilenet_025")
    assert set(fs.column("view")) == {"PA", "AP", ""} and fs.has_patient_ids is False
    pa = select(fs, TaskSpec.from_options(where=["view=PA"]))
    assert len(pa.y) == int(np.sum(fs.column("view") == "PA")) and set(pa.classes) == {
        "covid",
        "normal",
    }


class Notes(Silent):
    """Silent progress that keeps the run's notes."""

    def __init__(self, notes: list[str]) -> None:
        self.notes = notes

    def note(self, text: str) -> None:
        self.notes.append(text)


def test_a_manifests_patient_ids_are_not_called_dicom_headers(tmp_path):
    """Ids from a manifest's column are the manifest's: the note about ids read from DICOM
    headers (and pseudonymised) is for class folders of DICOM films only."""
    data = tmp_path / "data"
    for i, label in enumerate(["covid", "normal"] * 2):
        save_png(data / label / f"{i}.png", seed=i)
    with (data / "manifest.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "patient_id", "source", "view"])
        for i, label in enumerate(["covid", "normal"] * 2):
            w.writerow([f"{label}/{i}.png", label, f"P{i % 2}", "site", "PA"])
    notes: list[str] = []
    run = dict(data=data, manifest=data / "manifest.csv", backbones=["mobilenet_025"],
               weights=["random"], features_dir=tmp_path / "features", batch_size=4)  # fmt: skip
    extract_features(**run, progress=Notes(notes))
    assert len(set(load(tmp_path / "features", "mobilenet_025").patient_ids)) == 2
    assert not any("DICOM film(s)" in n for n in notes), notes


def test_features_on_dicom_class_folders_store_their_patients_without_a_manifest(
    tmp_path, monkeypatch
):
    """`cxr features` on a PACS export's class folders: the patient ids and the view come from
    the headers, pseudonymised, so folds group the patient's films (before, none was stored
    unless `cxr manifest` ran first); a re-run reads no header again."""
    monkeypatch.delenv("CXR_ID_KEY", raising=False)
    data, features = chest_films(tmp_path / "data"), tmp_path / "features"
    notes: list[str] = []
    run = dict(data=data, manifest=None, backbones=["mobilenet_025"], weights=small_weights(),
               features_dir=features, batch_size=4)  # fmt: skip
    extract_features(**run, progress=Notes(notes))
    fs = load(features, "mobilenet_025")
    rows = dict(zip(fs.rows["path"], fs.patient_ids, strict=True))
    key = (features / ".id-key").read_text().strip().encode()
    assert rows["covid/a1.dcm"] == rows["covid/a2.dcm"] == pseudonym(key, "patient", "PAT-001")
    assert rows["normal/b1.dcm"] == pseudonym(key, "patient", "PAT-002")
    assert rows["normal/c1.png"] == ""  # a PNG has no header: its own group
    assert "PAT-001" not in fs.patient_ids and "St Elsewhere" not in fs.sources
    assert dict(zip(fs.rows["path"], fs.column("view"), strict=True))["covid/a2.dcm"] == "AP"
    assert any("3 DICOM film(s)" in n and "pseudonymised with the key file" in n for n in notes)
    data_ = select(fs, TaskSpec())
    groups = dict(zip(data_.paths, data_.groups, strict=True))
    assert groups["covid/a1.dcm"] == groups["covid/a2.dcm"] != groups["normal/c1.png"]

    def unread(file):
        raise AssertionError(f"{file}: read again")

    monkeypatch.setattr("cxr.extract.headers.read_header", unread)
    extract_features(**run)  # the cached columns, by content hash
    assert list(load(features, "mobilenet_025").patient_ids) == list(fs.patient_ids)


def test_a_flat_export_gives_a_manifest_with_labels_to_fill_in(tmp_path):
    """Files straight in the export folder, no class folders: 'no images found' before."""
    data = tmp_path / "export"
    for n, name in enumerate(("IM000001", "IM000002")):
        data.mkdir(exist_ok=True)
        pixels = xray_like(n, (64, 64)).astype(np.uint16) * 16
        (data / name).write_bytes(dicom_bytes(pixels, PatientID=f"P{n}", ViewPosition="PA"))
    result = runner.invoke(app, ["manifest", str(data), "--key", "k"])
    assert result.exit_code == 0, result.output
    rows = read(data / "manifest.csv")
    assert sorted(rows) == ["IM000001", "IM000002"]
    assert all(r["label"] == "" and r["view"] == "PA" for r in rows.values())
    assert all(r["patient_id"].startswith("p-") for r in rows.values())


def test_a_shared_manifest_carries_no_identifier(tmp_path):
    """Completing an existing manifest: identifying columns are pseudonymised, pseudonyms are
    kept as they are (running it again changes nothing), ages over 89 become 90."""
    data = chest_films(tmp_path / "data")
    (data / "covid" / "old.dcm").write_bytes(
        dicom_bytes(xray_like(5, (64, 64)).astype(np.uint16), PatientID="PAT-9", PatientAge="093Y")
    )
    (data / "covid" / "junk.dcm").write_bytes(b"hello, not a DICOM")
    given = tmp_path / "hospital.csv"
    given.write_text(
        "path,label,patient_name,mrn,site\n"
        "covid/a1.dcm,covid,Jane Roe,MRN-77,east\n"
        "covid/old.dcm,covid,John Doe,MRN-78,east\n"
        "covid/junk.dcm,covid,,,east\n"
    )
    shutil.copy(given, data / "hospital.csv")
    first = tmp_path / "first.csv"
    result = runner.invoke(
        app, ["manifest", str(data / "hospital.csv"), "--out", str(first), "--key", "k"]
    )
    assert result.exit_code == 0, result.output
    text = first.read_text()
    for secret in ("Jane", "John", "MRN-", "PAT-", "Elsewhere"):
        assert secret not in text, secret
    rows = read(first)
    assert rows["covid/old.dcm"]["age"] == "90" and rows["covid/a1.dcm"]["site"] == "east"
    assert rows["covid/junk.dcm"]["modality"] == "" and "junk.dcm" in result.stdout
    shutil.copy(first, data / "again.csv")
    second = tmp_path / "second.csv"
    runner.invoke(app, ["manifest", str(data / "again.csv"), "--out", str(second), "--key", "k"])
    assert second.read_text() == text  # pseudonyms stay pseudonyms


def test_the_manifest_can_go_to_stdout(tmp_path):
    data = chest_films(tmp_path / "data")
    result = runner.invoke(app, ["manifest", str(data), "--out", "-", "--key", "k"])
    assert result.exit_code == 0 and result.stdout.startswith("path,label,patient_id")
    assert "Wrote" in result.stderr and not (tmp_path / "-").exists()


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
