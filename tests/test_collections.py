"""Data as it comes: the public collections laid out as their distributors ship them (rebuilt
from the real shared films, `shipped`), read as the right task with plain `cxr features DATA`,
or refused with a line naming --layout; and a store that belongs to its data."""

from __future__ import annotations

import csv
import io
import subprocess
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import shipped
from helpers import CXR_DATA, ROOT, make_class_folders, real_weights, save_png
from PIL import Image
from typer.testing import CliRunner

from cxr.cli import app
from cxr.errors import CxrError
from cxr.extract.discovery import discover
from cxr.extract.images import Rejected, decode
from cxr.extract.layouts import LAYOUTS, ReadOptions
from cxr.extract.regions import Region
from cxr.store import load

pytestmark = pytest.mark.skipif(not CXR_DATA.is_dir(), reason="../shared/data/cxr not available")
runner = CliRunner()
PER_GROUP = 6


def features(data: Path, out: Path, *args: str):
    weights = f"mobilenet_025={real_weights('mobilenet_025')}"
    return runner.invoke(
        app,
        ["features", str(data), "-b", "mobilenet_025", "--weights", weights, "--features", str(out),
         *args],
    )  # fmt: skip


def labels(found) -> Counter:
    return Counter(e.label for e in found.entries)


# ---- each collection, read as shipped ----------------------------------------------------------


def test_kermany_as_shipped(tmp_path):
    shipped.kermany(tmp_path, PER_GROUP)
    found = discover(tmp_path, None)  # the folder that holds chest_xray/, as unzipped
    assert found.layout == "kermany" and found.root == tmp_path / "chest_xray"
    assert labels(found) == {"bacterial": 6, "viral": 6, "normal": 6}  # not test / train / val
    by_name = {Path(e.path).name: e for e in found.entries}
    assert by_name["person1004_bacteria_2935.jpeg"].patient_id == "person1004_bacteria"
    assert {e.meta["split"] for e in found.entries} <= {"train", "test", "val"}
    assert len({e.meta["split"] for e in found.entries}) > 1
    normal = next(e for e in found.entries if e.label == "normal")
    assert normal.patient_id.startswith(("IM-", "NORMAL2-IM-"))  # IM-0117 of IM-0117-0001
    assert normal.patient_id.count("-") == 1 + normal.patient_id.startswith("NORMAL2")
    assert not any("chest_xray/" in e.path or "MACOSX" in e.path for e in found.entries)
    notes = " ".join(found.notes)
    assert "ignored __MACOSX/" in notes and "ignored chest_xray/" in notes
    assert "inside" in notes  # it says which folder it read


def test_covidx_as_shipped(tmp_path):
    root = shipped.covidx(tmp_path, PER_GROUP)
    found = discover(root, None)
    assert found.layout == "covidx"
    assert set(labels(found)) == {"covid", "non-covid"}
    splits = Counter(e.meta["split"] for e in found.entries)
    assert set(splits) == {"train", "test"}  # a column, not two classes
    assert {e.source for e in found.entries} == {"cohen", "actmed", "fig1", "kermany"}
    assert all(e.patient_id for e in found.entries)
    lines = (root / "train.txt").read_text().splitlines()
    (root / "train.txt").write_text("\n".join([*lines, lines[0]]) + "\n")
    again = discover(root, None)
    assert [r.reason for r in again.rejects] == ["listed twice in train.txt"]


def test_covidx_refuses_two_label_files_for_one_split(tmp_path):
    root = shipped.covidx(tmp_path, 2)
    (root / "train_COVIDx9A.txt").write_text((root / "train.txt").read_text())
    with pytest.raises(CxrError, match=r"train.txt and train_COVIDx9A.txt both label"):
        discover(root, None)


def test_cohen_as_shipped(tmp_path):
    root = shipped.cohen(tmp_path, PER_GROUP)
    found = discover(root, None)
    assert found.layout == "cohen" and found.manifest == root / "metadata.csv"
    assert labels(found) == {"covid": 6, "bacterial": 6, "viral": 6}  # not one class, images
    names = {Path(e.path).name for e in found.entries}
    assert not names & {"lateral.jpg", "ct-slice.jpg", "fungal.jpg", "coronacases_001.nii.gz"}
    [left] = [n for n in found.notes if n.startswith("left out")]
    assert "view L 1" in left and "modality CT 2" in left and "Fungal" in left
    assert found.unlisted == ["images/unlisted.jpg"]
    first = found.entries[0]
    assert first.patient_id and first.meta["view"] in ("PA", "AP", "AP Supine")
    assert first.meta["finding"].startswith("Pneumonia/")
    assert set(found.meta_columns) >= {"finding", "view", "sex", "age", "offset"}
    fungal = discover(root, None, options=ReadOptions.parse(label_map=["Fungal=fungal"]))
    assert labels(fungal)["fungal"] == 1


def test_cohen_reads_the_flat_vocabulary_of_its_early_versions(tmp_path):
    root = shipped.cohen(tmp_path, PER_GROUP)
    table = root / "metadata.csv"
    flat = {v: k for k, v in shipped.HIERARCHY.items()}
    with open(table, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        row["finding"] = flat.get(row["finding"], row["finding"])
    with open(table, "w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert labels(discover(tmp_path, None)) == {"covid": 6, "bacterial": 6, "viral": 6}  # wrapped


def test_radiography_as_shipped(tmp_path):
    shipped.radiography(tmp_path, PER_GROUP)
    found = discover(tmp_path, None)
    assert found.layout == "covid-radiography"
    assert labels(found) == {"covid": 18, "normal": 6, "viral": 6, "lung_opacity": 6}
    assert all("/images/" in e.path for e in found.entries)  # no mask embedded as a film
    assert all(e.mask is not None and e.mask.parent.name == "masks" for e in found.entries)
    sources = Counter(e.source for e in found.entries if e.label == "normal")
    assert sources == {"kaggle.com/paultimothymooney/chest-xray-pneumonia": 6}  # NORMAL-1 rows
    assert "github.com/ieee8023/covid-chestxray-dataset" in {e.source for e in found.entries}
    assert any("no patient ids" in n for n in found.notes)


def test_radiography_masks_serve_the_lungs_regions_with_no_folder(tmp_path):
    root = shipped.radiography(tmp_path, 2)
    found = discover(root, None)
    entry = found.entries[0]
    film = decode((root / entry.path).read_bytes())[..., 0]
    kept = Region.parse("lungs-only").apply(film, entry)
    mask = np.asarray(Image.fromarray(shipped.lung_mask()).resize((299, 299), 0)) > 0
    assert film.shape == (299, 299) and (kept[~mask] == 0).all()
    assert (kept[mask] == film[mask]).all()  # the 256 px mask scaled to the 299 px film
    result = features(root, tmp_path / "f", "--region", "lungs-only")
    assert result.exit_code == 0, result.output
    store = load(tmp_path / "f", "mobilenet_025@lungs-only")
    assert len(store) == len(found.entries) and store.attrs["layout"] == "covid-radiography"
    refused = features(make_class_folders(tmp_path / "plain"), tmp_path / "g", "--region",
                       "lungs-only")  # fmt: skip
    assert refused.exit_code == 2
    assert "the folders layout ships no lung masks" in refused.output
    assert "--region lungs-only:DIR" in refused.output


def test_a_bad_metadata_sheet_costs_its_sources_only(tmp_path):
    root = shipped.radiography(tmp_path, 2)
    (root / "Normal.metadata.xlsx").write_bytes(b"not a zip")
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("xl/worksheets/sheet1.xml", b"\0" * (300 << 20))  # 300 MB of zeros
    (root / "COVID.metadata.xlsx").write_bytes(bomb.getvalue())
    found = discover(root, None)
    notes = " ".join(found.notes)
    assert "Normal.metadata.xlsx: not an xlsx workbook" in notes
    assert "COVID.metadata.xlsx: inflates to" in notes
    assert not any(e.source for e in found.entries if e.label in ("normal", "covid"))
    assert all(e.source for e in found.entries if e.label == "viral")


def test_kermany_end_to_end_with_plain_cxr_features(tmp_path):
    root = shipped.kermany(tmp_path / "download", PER_GROUP)
    result = features(tmp_path / "download", tmp_path / "f")
    assert result.exit_code == 0, result.output
    line = result.output.replace("\n", " ")
    assert "layout: kermany (labels from class folders and file names, patients from file " in line
    store = load(tmp_path / "f", "mobilenet_025")
    assert Counter(store.labels) == {"bacterial": 6, "viral": 6, "normal": 6}
    assert store.attrs["data_root"] == str(root) and store.attrs["layout"] == "kermany"
    frame = store.to_frame()
    assert set(frame["split"]) <= {"train", "test", "val"} and all(store.patient_ids)


def test_the_python_api_reads_a_collection_with_its_options(tmp_path):
    import cxr

    root = shipped.cohen(tmp_path / "download", 3)
    [summary] = cxr.extract_features(
        root,
        ["mobilenet_025"],
        weights=[f"mobilenet_025={real_weights('mobilenet_025')}"],
        features=tmp_path / "f",
        layout="cohen",
        label_map={"Fungal": "fungal", "Bacterial": ""},
    )
    store = load(tmp_path / "f", "mobilenet_025")
    assert Counter(store.labels) == {"covid": 3, "viral": 3, "fungal": 1}
    assert summary.stored == 7 and store.attrs["layout"] == "cohen"
    with pytest.raises(CxrError, match="`columns` kind=x"):
        cxr.extract_features(root, features=tmp_path / "g", columns={"kind": "x"})


# ---- traps, refused with the option that reads them --------------------------------------------


def test_split_folders_as_classes_are_refused(tmp_path):
    for split in ("train", "test", "val"):
        make_class_folders(tmp_path / "d" / split, per_class=2, start=len(split))
    with pytest.raises(CxrError, match=r"are split folders, not classes: `layout` split-folders"):
        discover(tmp_path / "d", None)
    found = discover(tmp_path / "d", None, layout="split-folders")
    assert labels(found) == {"covid": 6, "normal": 6}
    assert Counter(e.meta["split"] for e in found.entries) == {"train": 4, "test": 4, "val": 4}
    forced = discover(tmp_path / "d", None, layout="folders")
    assert set(labels(forced)) == {"train", "test", "val"}  # what the user asked for


def test_a_folder_that_would_be_one_class_is_refused(tmp_path):
    root = shipped.radiography(tmp_path, 2)
    with pytest.raises(CxrError, match=r"masks/ among the class folders: masks, not films"):
        discover(root / "COVID", None)  # one level too deep: images/ and masks/ as classes
    with pytest.raises(CxrError, match=r"holds 6 file\(s\) but no class folders"):
        discover(root / "COVID" / "images", None)
    make_class_folders(tmp_path / "archive" / "data", per_class=1)
    with pytest.raises(CxrError, match=r"holds one folder, data/, which would be the only class"):
        discover(tmp_path / "archive", None)
    export = tmp_path / "export_2024"
    save_png(export / "films" / "P01_a.png", 1)
    (export / "export.csv").write_text("image;diagnosis\nfilms/P01_a.png;covid\n")
    with pytest.raises(CxrError, match=r"films/.*the labels may be in export.csv beside it"):
        discover(export, None)
    assert labels(discover(export, None, layout="folders")) == {"films": 1}


def test_kermany_one_split_given_alone_keeps_its_name(tmp_path):
    root = shipped.kermany(tmp_path, PER_GROUP)
    found = discover(root / "train", None)
    assert found.layout == "kermany" and {e.meta["split"] for e in found.entries} == {"train"}


def test_split_folders_of_films_without_classes_are_refused(tmp_path):
    for n, split in enumerate(("training", "validation")):
        save_png(tmp_path / "d" / split / "a.png", n)
    with pytest.raises(CxrError, match="hold films but no class folders"):
        discover(tmp_path / "d", None)


def test_masks_among_the_class_folders_are_refused(tmp_path):
    for n, label in enumerate(("covid", "normal")):
        save_png(tmp_path / "d" / label / "films" / "a.png", n)
        save_png(tmp_path / "d" / label / "lung_masks" / "a.png", n)
    with pytest.raises(CxrError, match="lung_masks/ among the class folders: masks, not films"):
        discover(tmp_path / "d", None)


def test_class_folders_cut_into_the_same_parts_are_refused(tmp_path):
    for n, label in enumerate(("covid", "normal")):
        save_png(tmp_path / "d" / label / "site1" / "a.png", n)
    with pytest.raises(CxrError, match=r"every class folder holds the same sub-folders \(site1/"):
        discover(tmp_path / "d", None)
    assert labels(discover(tmp_path / "d", None, layout="folders")) == {"covid": 1, "normal": 1}


def test_a_mask_or_a_blank_among_films_is_rejected_and_named(tmp_path):
    mask = Image.fromarray(shipped.lung_mask(128))
    buf = io.BytesIO()
    mask.save(buf, "PNG")
    with pytest.raises(Rejected, match="only two grey levels: a mask"):
        decode(buf.getvalue())
    smooth = io.BytesIO()  # resized with smoothing: 200 grey levels, nearly all black or white
    mask.resize((299, 299), Image.Resampling.BICUBIC).save(smooth, "PNG")
    with pytest.raises(Rejected, match=r"9.% of its pixels at its darkest or brightest value"):
        decode(smooth.getvalue())
    data = shipped.radiography(tmp_path, 10)  # real films beside it
    mask.save(data / "Normal" / "images" / "mask.png")
    found = discover(data, None)
    assert any("far smaller than the films beside them" in n and "Normal/images/mask.png" in n
               for n in found.notes)  # fmt: skip


def test_an_unknown_layout_name_lists_the_choices(tmp_path):
    with pytest.raises(CxrError, match="`layout` nih: choose from auto, folders"):
        discover(make_class_folders(tmp_path / "d"), None, layout="nih")
    help_text = runner.invoke(app, ["features", "--help"], terminal_width=200).output
    assert all(name in help_text for name in LAYOUTS)  # --help lists the registry


# ---- a manifest whose columns have other names -------------------------------------------------


def test_a_table_with_its_own_column_names_needs_no_script(tmp_path):
    data = make_class_folders(tmp_path / "d", per_class=3)
    files = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.png"))
    table = tmp_path / "export.csv"
    table.write_text(
        "image;diagnosis;subject\n"  # a European spreadsheet's export
        + "\n".join(f"{f};{f.split('/')[0]};S{i % 2}" for i, f in enumerate(files))
        + "\n"
    )
    with pytest.raises(CxrError, match=r"missing required column\(s\) path, label .*`columns`"):
        discover(data, table)
    options = ReadOptions.parse(["path=image", "label=diagnosis", "patient=subject"])
    found = discover(data, table, options=options)
    assert labels(found) == {"covid": 3, "normal": 3}
    assert {e.patient_id for e in found.entries} == {"S0", "S1"}
    with pytest.raises(CxrError, match="`columns` kind=x: ROLE is one of path, label"):
        ReadOptions.parse(["kind=x"])


def test_patients_from_file_names(tmp_path):
    for n, name in enumerate(("p1_a.png", "p1_b.png", "p2_a.png")):
        save_png(tmp_path / "d" / ("covid" if n else "normal") / name, n)
    options = ReadOptions.parse(patient_from_name=r"^(p\d+)_")
    found = discover(tmp_path / "d", None, options=options)
    assert sorted(e.patient_id for e in found.entries) == ["p1", "p1", "p2"]
    with pytest.raises(CxrError, match=r"`patient_from_name` .*not a regular expression"):
        ReadOptions.parse(patient_from_name="(")
    nothing = ReadOptions.parse(patient_from_name=r"PAT\d+")
    with pytest.raises(CxrError, match=r"finds no patient in any file name \(e.g. p\d_.\.png\)"):
        discover(tmp_path / "d", None, options=nothing)
    wide = discover(tmp_path / "d", None, options=ReadOptions.parse(patient_from_name="p"))
    assert any("1 patient(s) in 3 of 3 films; one patient for all" in n for n in wide.notes)


def test_cxr_manifest_writes_what_the_layout_read(tmp_path):
    root = shipped.kermany(tmp_path, 3)
    out = tmp_path / "m.csv"
    result = runner.invoke(app, ["manifest", str(root), "--out", str(out), "--keep-ids",
                                 "--features", str(tmp_path / "f")])  # fmt: skip
    assert result.exit_code == 0, result.output
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["label"] for r in rows} == {"bacterial", "viral", "normal"}
    assert all(r["patient_id"] and r["split"] for r in rows)
    again = discover(root, out)  # read back as a manifest: the same rows
    assert labels(again) == {"bacterial": 3, "viral": 3, "normal": 3}
    assert again.header_ids == 0  # JPEG films: no patient ids said to come from DICOM headers


# ---- a store belongs to its data ---------------------------------------------------------------


def test_a_second_data_root_never_drops_a_stores_rows(tmp_path):
    first = make_class_folders(tmp_path / "one", per_class=3)
    second = make_class_folders(tmp_path / "two", per_class=3, start=50)  # the same file names
    out = tmp_path / "features"
    assert features(first, out).exit_code == 0
    refused = features(second, out)
    assert refused.exit_code == 2
    message = refused.output.replace("\n", "")
    assert f"holds 6 rows of {first}" in message and f"this run reads {second}" in message
    assert "would drop or replace 6 of them" in message
    assert "--replace" in message and "its own --features folder" in message
    assert len(load(out, "mobilenet_025")) == 6  # nothing lost
    grown = make_class_folders(first, per_class=4)  # the same root, one more film per class
    assert features(grown, out).exit_code == 0 and len(load(out, "mobilenet_025")) == 8
    replaced = features(second, out, "--replace")
    assert replaced.exit_code == 0, replaced.output
    assert "store updated" not in replaced.output  # new films were embedded
    assert len(load(out, "mobilenet_025")) == 6


def test_make_features_gives_each_data_root_its_own_folder():
    def folder(*args: str) -> str:
        done = subprocess.run(["make", "-n", "features", *args], cwd=ROOT, capture_output=True,
                              text=True, check=True)  # fmt: skip
        return done.stdout.split("--features ")[1].split()[0]

    assert folder() == "features"
    assert folder("DATA=/data/chest_xray/") == "features-chest_xray"
    assert folder("MANIFEST=../shared/data/cxr/other.csv") == "features-cxr-other"
