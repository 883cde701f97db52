"""`cxr manifest`: a manifest built from DICOM headers, with patient ids that can be shared.

PACS exports carry in their headers what grouped folds and confound checks need: the patient,
the view (portable AP films come from sicker patients, a known shortcut), the modality, the
scanner. This reads the headers only (`cxr.extract.headers`) of every file of a data set as its
layout reads it (`cxr.extract.layouts`: class folders, a public collection), in a flat export
(then the label column is left empty, to fill in) or in an existing manifest, and writes them,
with what the layout read (labels, patients, split, ...), as manifest columns. Patient ids and
institution names are pseudonymised with the study's key (`cxr.extract.headers.StudyKey`), so
the manifest can leave the hospital while the same patient keeps the same id across exports
made with the same key; values that already are pseudonyms are kept, so running it again on its
own output changes nothing.

What leaves (unless ``keep_ids``, which writes every column as it is):
- an allow-list of columns: the header columns above, the manifest's own (path, label,
  patient_id, source) and SAFE_COLUMNS from an existing manifest; columns whose names say they
  identify a person, a visit or an image (ID_COLUMNS: subject_id, study_id, dicom_id, accession
  numbers, UIDs, names, ...) are pseudonymised, and any other column is dropped (and named);
- ages: 90 and over are written as 90 (the HIPAA safe-harbour rule), from the headers and from
  an existing manifest's age columns alike; an age that is not a number is not written;
- cells a spreadsheet would run as a formula (starting with = + - @, tab or CR, at the start
  or after a separator inside the cell) get a ``'`` there (``cxr.files.escape_cell``), which
  `cxr features` removes again when it reads the manifest, so paths, labels and values
  round-trip unchanged; control characters (a NUL from a buggy export) are not written.
Paths are kept: rename files whose names carry identifiers.
"""

from __future__ import annotations

import csv
import io
import math
import re
import sys
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from cxr.extract.dataset import KNOWN_COLUMNS, Entry, outside_data, shown_name
from cxr.extract.headers import AGE_CAP, COLUMNS, StudyKey, pseudonym, read_header, years
from cxr.extract.images import is_dicom_file
from cxr.extract.layouts import AUTO, ReadOptions, choose
from cxr.extract.layouts.table import Manifest
from cxr.files import csv_cell, escape_cell, write_atomic

# Column names that say a value identifies a person, a visit or an image: pseudonymised like
# patient ids (subject_id, study_id, dicom_id, accession_number, SOPInstanceUID, mrn, ...).
ID_COLUMNS = re.compile(
    r"(?i:patient|subject|study|series|dicom|accession|instance|mrn|name|birth|address|phone"
    r"|email|ssn|(^|_)u?id$)|UID$"  # SOPInstanceUID, series_uid; not pleural_fluid
)
AGE_COLUMNS = re.compile(r"(^|_)age($|_)|^patientage$", re.I)
# An existing manifest's columns written as they are: what tasks and confound checks read, and
# nothing that names anyone (the header columns are allowed too). Others are dropped.
SAFE_COLUMNS = frozenset(
    {
        *COLUMNS,
        "dataset",
        "site",
        "finding",
        "split",
        "offset",
        "orig_width",
        "orig_height",
        "width",
        "height",
    }
)


@dataclass(frozen=True)
class ManifestSummary:
    out: Path
    rows: int
    dicom: int
    with_patient_id: int
    unreadable: dict[str, str]  # path -> why its header could not be read
    pseudonymised: bool
    columns: tuple[str, ...]
    filled: dict[str, int]  # column -> rows with a value
    dropped: tuple[str, ...] = ()  # an existing manifest's columns not on the allow-list


def default_out(data: Path) -> Path:
    """Where `cxr features DATA` looks for a manifest: ``DATA/manifest.csv`` (beside a CSV)."""
    return (data.parent if data.suffix.lower() == ".csv" else data) / "manifest.csv"


def build_manifest(
    data: Path,
    out: Path,
    *,
    key: StudyKey,
    keep_ids: bool = False,
    layout: str = AUTO,
    read: ReadOptions | None = None,
) -> ManifestSummary:
    """Write ``out`` (``-``: stdout) for the data set, the flat export or the manifest CSV
    ``data``, read as its ``layout`` (recognised when "auto"); paths stay relative to the data
    folder, so `cxr features DATA --manifest OUT` reads it as is. ``key`` pseudonymises the ids
    (not used with ``keep_ids``)."""
    unreadable: dict[str, str] = {}
    options = read or ReadOptions()
    if data.is_file() and data.suffix.lower() == ".csv":
        listing = Manifest(data).read(data.parent, options)
        entries, meta = listing.entries, listing.meta_columns
        entries += [entry for entry, _ in listing.rejects]  # listed twice or unlabelled: kept
    elif layout == AUTO and _flat(data):
        entries, meta = _flat(data), ()
    else:
        reader, root, _ = choose(data, None, layout, for_manifest=True)
        listing = reader.read(root, options)
        entries, meta = listing.entries, listing.meta_columns
        unreadable.update((entry.path, reason) for entry, reason in listing.rejects)
        if root != data:  # a collection inside an archive's folder: paths relative to DATA
            entries = [
                replace(e, path=(root / e.path).relative_to(data).as_posix()) for e in entries
            ]
    meta, dropped = _allowed(meta, keep_ids)
    columns = (*KNOWN_COLUMNS, *meta, *COLUMNS)
    columns = tuple(dict.fromkeys(columns))
    rows, dicom = [], 0
    for entry in entries:
        row = {"path": entry.path, "label": entry.label, "source": entry.source, **entry.meta}
        patient = entry.patient_id
        if outside_data(entry.path) or "\0" in entry.path:  # listed, never opened
            unreadable[entry.path] = "outside the data folder: its header was not read"
        elif is_dicom_file(entry.file):
            header, reason = read_header(entry.file)
            if reason:
                unreadable[entry.path] = reason
            else:
                dicom += 1
                patient = patient or header.pop("patient_id", "")
                institution = header.pop("institution", "")
                row.update({k: v for k, v in header.items() if not row.get(k)})
                if institution and not row.get("source"):
                    row["source"] = (
                        institution if keep_ids else pseudonym(key.secret, "site", institution)
                    )
        row["patient_id"] = patient if keep_ids else pseudonym(key.secret, "patient", patient)
        for column in meta:
            if AGE_COLUMNS.search(column):
                row[column] = _capped_age(row.get(column, ""))
            elif not keep_ids and ID_COLUMNS.search(column):
                row[column] = pseudonym(key.secret, "identifier", row.get(column, ""))
        rows.append(row)
    _write(out, columns, rows)
    return ManifestSummary(
        out=out,
        rows=len(rows),
        dicom=dicom,
        with_patient_id=sum(bool(r["patient_id"]) for r in rows),
        unreadable=unreadable,
        pseudonymised=not keep_ids,
        columns=columns,
        filled=dict(Counter(c for row in rows for c in columns if row.get(c))),
        dropped=dropped,
    )


def _flat(data: Path) -> list[Entry]:
    """A flat export (files, no class folders) as unlabelled entries; [] for anything else."""
    if not data.is_dir():
        return []
    visible = [p for p in sorted(data.iterdir()) if not p.name.startswith(".")]
    if any(p.is_dir() for p in visible):
        return []
    return [
        Entry(path=shown_name(p.name)[0], file=p, label="")
        for p in visible
        if p.name != "manifest.csv" and not shown_name(p.name)[1]
    ]


def _allowed(meta: tuple[str, ...], keep_ids: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(an existing manifest's columns that are written, those dropped): allowed as they are,
    ages (capped), or identifiers (pseudonymised); with ``keep_ids``, every column."""
    if keep_ids:
        return meta, ()
    kept = tuple(
        c for c in meta if c in SAFE_COLUMNS or AGE_COLUMNS.search(c) or ID_COLUMNS.search(c)
    )
    return kept, tuple(c for c in meta if c not in kept)


def _capped_age(value: str) -> str:
    """An age from any source, in years, 90 and over as 90; "" unless it is a number."""
    value = value.strip()
    if years(value):
        return years(value)
    try:
        number = float(value)
    except ValueError:
        return ""
    if not math.isfinite(number) or number < 0:
        return ""
    return str(AGE_CAP) if number >= AGE_CAP else value


def _write(out: Path, columns: tuple[str, ...], rows: list[dict[str, str]]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, extrasaction="ignore", lineterminator="\n")
    writer.writerow({c: csv_cell(c) for c in columns})
    writer.writerows(
        {c: (escape_cell if c == "path" else csv_cell)(str(row.get(c, ""))) for c in columns}
        for row in rows
        if "\0" not in row["path"]  # names no file (listed as unreadable): never written
    )
    if str(out) == "-":
        sys.stdout.write(text.getvalue())
        return
    write_atomic(out, text.getvalue().encode("utf-8"), "the manifest")
