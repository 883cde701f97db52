"""The public collections laid out exactly as their distributors ship them, rebuilt from the real
shared films (../shared/data/cxr): the tests read them, and `make docs` quotes the first honest
result on each. What each copy holds that the original does not is said in its function.

- ``kermany``: ``chest_xray/{train,test,val}/{NORMAL,PNEUMONIA}/`` with Kermany's own file names,
  the Kaggle archive's nested second copy ``chest_xray/chest_xray/`` and ``__MACOSX/``.
- ``covidx``: ``train/``, ``test/``, ``train.txt``, ``test.txt`` ("patient file class source").
- ``cohen``: ``images/``, ``volumes/``, ``metadata.csv`` with the collection's own header.
- ``radiography``: ``COVID-19_Radiography_Dataset/<Class>/{images,masks}/`` (299 px films,
  256 px masks) and the ``<Class>.metadata.xlsx`` sheets.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from helpers import CXR_DATA
from PIL import Image

# The header of Cohen's metadata.csv (github.com/ieee8023/covid-chestxray-dataset, 2020 on).
COHEN_HEADER = (
    *("patientid", "offset", "sex", "age", "finding", "RT_PCR_positive", "survival"),
    *("intubated", "intubation_present", "went_icu", "in_icu", "needed_supplemental_O2"),
    *("extubated", "temperature", "pO2_saturation", "leukocyte_count", "neutrophil_count"),
    *("lymphocyte_count", "view", "modality", "date", "location", "folder", "filename", "doi"),
    *("url", "license", "clinical_notes", "other_notes", ""),
)
# The shared manifest's findings (Cohen's flat vocabulary of 2020) in the collection's later one.
HIERARCHY = {
    "COVID-19": "Pneumonia/Viral/COVID-19",
    "COVID-19, ARDS": "Pneumonia/Viral/COVID-19",
    "SARS": "Pneumonia/Viral/SARS",
    "Varicella": "Pneumonia/Viral/Varicella",
    "Influenza": "Pneumonia/Viral/Influenza",
    "Streptococcus": "Pneumonia/Bacterial/Streptococcus",
    "Klebsiella": "Pneumonia/Bacterial/Klebsiella",
    "Mycoplasma Bacterial Pneumonia": "Pneumonia/Bacterial/Mycoplasma",
    "E.Coli": "Pneumonia/Bacterial/E.Coli",
    "Legionella": "Pneumonia/Bacterial/Legionella",
    "Chlamydophila": "Pneumonia/Bacterial/Chlamydophila",
    "Bacterial": "Pneumonia/Bacterial",
}
COVIDX_SOURCES = {"ieee8023": "cohen", "actualmed": "actmed", "figure1": "fig1"}
KAGGLE_CLASSES = {  # class folder: (shared label, shared sources), as the database composed them
    "COVID": ("covid", ("ieee8023", "actualmed", "figure1")),
    "Normal": ("normal", ("kermany",)),
    "Viral Pneumonia": ("viral", ("kermany",)),
    "Lung_Opacity": ("bacterial", ("ieee8023",)),  # adult films, as RSNA's are
}
KAGGLE_URLS = {
    "ieee8023": "https://github.com/ieee8023/covid-chestxray-dataset",
    "actualmed": "https://github.com/agchung/Actualmed-COVID-chestxray-dataset",
    "figure1": "https://github.com/agchung/Figure1-COVID-chestxray-dataset",
    "kermany": "https://www.kaggle.com/paultimothymooney/chest-xray-pneumonia",
    "Lung_Opacity": "https://www.kaggle.com/c/rsna-pneumonia-detection-challenge/data",
}


def rows(per_group: int | None = None, *, sources=None, labels=None) -> list[dict[str, str]]:
    """The shared manifest's rows, at most ``per_group`` per (label, source), one per patient
    then (so small copies still hold many patients), in the manifest's order."""
    with open(CXR_DATA / "manifest.csv", newline="") as fh:
        every = list(csv.DictReader(fh))
    kept, seen, counts = [], set(), {}
    for row in every:
        group = (row["label"], row["source"])
        if (sources and row["source"] not in sources) or (labels and row["label"] not in labels):
            continue
        if per_group is not None:
            if counts.get(group, 0) >= per_group or (group, row["patient_id"]) in seen:
                continue
            seen.add((group, row["patient_id"]))
        counts[group] = counts.get(group, 0) + 1
        kept.append(row)
    return kept


def original_name(row: dict[str, str]) -> str:
    """The file name the film has in its own collection (from ``origin``: repo:path@commit)."""
    return row["origin"].split(":", 1)[1].rsplit("@", 1)[0].rsplit("/", 1)[-1]


def bucket(text: str, buckets: int = 10) -> int:
    """A stable number in [0, buckets) for a patient or a file, to assign splits."""
    return int(hashlib.sha256(text.encode()).hexdigest(), 16) % buckets


def _copy(row: dict[str, str], target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(CXR_DATA / row["path"], target)
    return target


def kermany(dest: Path, per_group: int | None = None) -> Path:
    """``dest/chest_xray`` as the Kaggle archive ships it. The shared films are all from
    Kermany's train split: here a tenth of the patients moves to test/ and one patient in
    twenty to val/ (by a hash of the patient: ``person1000_bacteria``, ``IM-0439`` of
    ``IM-0439-0001-0002.jpeg``), so that every split folder has films."""
    root = dest / "chest_xray"
    for row in rows(per_group, sources=("kermany",)):
        patient = re.match(r"person\d+_[a-z]+|(NORMAL2-)?IM-\d+", original_name(row))
        assert patient is not None, row["path"]
        split = {0: "test", 1: "test", 2: "val"}.get(bucket(patient.group(0), 20), "train")
        folder = "NORMAL" if row["label"] == "normal" else "PNEUMONIA"
        film = _copy(row, root / split / folder / original_name(row))
        if bucket(film.name) == 0:  # the archive's nested copy, and macOS's AppleDouble junk
            nested = root / "chest_xray" / split / folder / film.name
            nested.parent.mkdir(parents=True, exist_ok=True)
            os.link(film, nested)
            junk = root / "__MACOSX" / split / folder / f"._{film.name}"
            junk.parent.mkdir(parents=True, exist_ok=True)
            junk.write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(64))
    (root / "train" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(32))
    return root


def covidx(dest: Path, per_group: int | None = None) -> Path:
    """``dest/COVIDx`` as COVIDx CXR-3 ships: positives are the shared COVID-19 films (sources
    cohen, actmed, fig1, as COVIDx names them), negatives Kermany's films (COVIDx takes them
    from RSNA). The test split takes a tenth of the films, by image, not by patient: as
    COVIDx's did."""
    dest = dest / "COVIDx"
    lines: dict[str, list[str]] = {"train": [], "test": []}
    for row in rows(per_group):
        positive = row["label"] == "covid"
        split = "test" if bucket(row["path"]) == 0 else "train"
        name = original_name(row)
        _copy(row, dest / split / name)
        source = COVIDX_SOURCES.get(row["source"], row["source"])
        patient = row["orig_patient_id"].split("-", 1)[-1]
        label = "positive" if positive else "negative"
        lines[split].append(f"{patient} {name} {label} {source}")
    for split, found in lines.items():
        (dest / f"{split}.txt").write_text("\n".join(found) + "\n")
    return dest


def cohen(dest: Path, per_group: int | None = None) -> Path:
    """``dest/covid-chestxray-dataset`` as Cohen's repository ships: ``images/`` and
    ``metadata.csv`` (the shared ieee8023 films, findings in the collection's later vocabulary),
    plus what the collection holds that
    is no frontal X-ray of the four classes: a lateral view, a CT slice, a CT volume and a
    fungal pneumonia (films of the shared set stand in for their images), and an image no row
    names."""
    dest = dest / "covid-chestxray-dataset"
    images = dest / "images"
    table = []
    for row in rows(per_group, sources=("ieee8023",)):
        name = original_name(row)
        _copy(row, images / name)
        table.append(
            {
                "patientid": row["orig_patient_id"].removeprefix("ieee8023-"),
                "finding": HIERARCHY[row["finding"]],
                "view": row["view"],
                "modality": "X-ray",
                "folder": "images",
                "filename": name,
                "url": row["orig_url"] or "https://github.com/ieee8023/covid-chestxray-dataset",
            }
        )
    first = table[0]
    extra = [
        {**first, "filename": "lateral.jpg", "view": "L"},
        {**first, "filename": "ct-slice.jpg", "view": "Axial", "modality": "CT"},
        {**first, "folder": "volumes", "filename": "coronacases_001.nii.gz", "modality": "CT"},
        {**first, "filename": "fungal.jpg", "finding": "Pneumonia/Fungal/Pneumocystis"},
    ]
    for row in extra:
        if row["folder"] == "images":
            shutil.copyfile(images / first["filename"], images / row["filename"])
    (dest / "volumes").mkdir()
    (dest / "volumes" / "coronacases_001.nii.gz").write_bytes(b"\x1f\x8b" + bytes(64))
    shutil.copyfile(images / first["filename"], images / "unlisted.jpg")
    with open(dest / "metadata.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, COHEN_HEADER)
        writer.writeheader()
        writer.writerows(table + extra)
    return dest


def lung_mask(size: int = 256) -> np.ndarray:
    """A lung-shaped mask (two ellipses, 0 and 255), as the database's masks are drawn."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    lungs = ((xx - 0.3) / 0.15) ** 2 + ((yy - 0.5) / 0.32) ** 2 <= 1
    lungs |= ((xx - 0.7) / 0.15) ** 2 + ((yy - 0.5) / 0.32) ** 2 <= 1
    return (lungs * 255).astype(np.uint8)


def radiography(dest: Path, per_group: int | None = None) -> Path:
    """``dest/COVID-19_Radiography_Dataset`` as Kaggle ships it: 299 px gray PNG films, 256 px
    masks of the same name, a metadata sheet per class (``FILE NAME`` in the sheet's own case:
    ``NORMAL-1`` for ``Normal-1.png``). Lung_Opacity holds the shared adult bacterial films."""
    from openpyxl import Workbook

    root = dest / "COVID-19_Radiography_Dataset"
    mask = Image.fromarray(lung_mask())
    for folder, (label, sources) in KAGGLE_CLASSES.items():
        book = Workbook()
        sheet = book.active
        sheet.append(["FILE NAME", "FORMAT", "SIZE", "URL"])
        for n, row in enumerate(rows(per_group, sources=sources, labels=(label,)), 1):
            name = f"{folder}-{n}"
            film = Image.open(CXR_DATA / row["path"]).convert("L").resize((299, 299))
            (root / folder / "images").mkdir(parents=True, exist_ok=True)
            (root / folder / "masks").mkdir(parents=True, exist_ok=True)
            film.save(root / folder / "images" / f"{name}.png")
            mask.save(root / folder / "masks" / f"{name}.png")
            sheet_name = name.upper() if folder == "Normal" else name
            url = KAGGLE_URLS.get(folder, KAGGLE_URLS[row["source"]])
            sheet.append([sheet_name, "PNG", "256*256", url])
        book.save(root / f"{folder}.metadata.xlsx")
    (root / "README.md.txt").write_text("COVID-19 CHEST X-RAY DATABASE\n")
    return root


def paths(root: Path) -> Iterator[str]:
    """Every file under ``root``, relative (for assertions about what a copy holds)."""
    for file in sorted(root.rglob("*")):
        if file.is_file():
            yield file.relative_to(root).as_posix()
