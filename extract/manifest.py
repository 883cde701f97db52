"""`cxr manifest`: a manifest built from DICOM headers, with patient ids that can be shared.

PACS exports carry in their headers what grouped folds and confound checks need: the patient,
the view (portable AP films come from sicker patients, a known shortcut), the modality, the
scanner. This reads the headers only (never the pixel data, not even inflated: see
``cxr.extract.images.read_dicom``) of every file in class folders or in an existing manifest, and
writes them as manifest columns. Patient ids and institution names are pseudonymised with a keyed
hash (HMAC-SHA256), so the manifest can leave the hospital while the same patient keeps the same
id across exports made with the same key; values that already are pseudonyms are kept, so
running it again on its own output changes nothing.

What leaves (unless ``keep_ids``, which writes every column as it is):
- an allow-list of columns: the header columns above, the manifest's own (path, label,
  patient_id, source) and SAFE_COLUMNS from an existing manifest; columns whose names say they
  identify a person, a visit or an image (ID_COLUMNS: subject_id, study_id, dicom_id, accession
  numbers, UIDs, names, ...) are pseudonymised, and any other column is dropped (and named);
- ages: 90 and over are written as 90 (the HIPAA safe-harbour rule), from the headers and from
  an existing manifest's age columns alike; an age that is not a number is not written;
- cells a spreadsheet would run as a formula (starting with = + - @, tab or CR) get a leading
  ``'`` (``cxr.extract.dataset.escape_cell``), which `cxr features` removes again when it reads
  the manifest, so paths, labels and values round-trip unchanged.
Paths are kept: rename files whose names carry identifiers.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import math
import os
import re
import sys
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from cxr.errors import CxrError
from cxr.extract.dataset import (
    KNOWN_COLUMNS,
    escape_cell,
    from_folders,
    from_manifest,
    outside_data,
)
from cxr.extract.images import is_dicom_file, read_dicom
from cxr.files import open_regular

KEY_VARIABLE = "CXR_ID_KEY"
# DICOM keyword -> manifest column, in the order the manifest lists them.
HEADER_COLUMNS = {
    "ViewPosition": "view",
    "Modality": "modality",
    "Manufacturer": "manufacturer",
    "ManufacturerModelName": "model",
    "BodyPartExamined": "body_part",
    "PatientSex": "sex",
    "PatientAge": "age",
    "Rows": "rows",
    "Columns": "columns",
    "PhotometricInterpretation": "photometric",
    "BitsStored": "bits_stored",
}
EXTRA = ("transfer_syntax", "frames")
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
    {*HEADER_COLUMNS.values(), *EXTRA}
    | {"dataset", "site", "finding", "split", "orig_width", "orig_height", "width", "height"}
)
PSEUDONYM = re.compile(r"^[a-z]-[0-9a-f]{16}$")
AGE_CAP = 90


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


def pseudonym(key: bytes, kind: str, value: str) -> str:
    """A stable, keyed stand-in for an identifier ("" and pseudonyms stay as they are):
    the kind's initial, a dash and 16 hex digits, e.g. ``p-515ed53fa630eb79``."""
    if not value or PSEUDONYM.match(value):
        return value
    digest = hmac.new(key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()
    return f"{kind[0]}-{digest[:16]}"


def build_manifest(
    data: Path,
    out: Path,
    *,
    key: str | None = None,
    keep_ids: bool = False,
) -> ManifestSummary:
    """Write ``out`` (``-``: stdout) for the class folders (or the manifest CSV) ``data``; paths
    stay relative to the data folder, so `cxr features DATA --manifest OUT` reads it as is."""
    secret = (key or os.environ.get(KEY_VARIABLE, "")).encode()
    if not keep_ids and not secret:
        raise CxrError(
            f"patient ids are pseudonymised with a secret key: give --key or set {KEY_VARIABLE} "
            "(keep it with the data: the same key gives the same ids), or --keep-ids to write "
            "the real ids"
        )
    unreadable: dict[str, str] = {}
    if data.is_file() and data.suffix.lower() == ".csv":
        entries, rejects, meta = from_manifest(data, data.parent)
        entries += [entry for entry, _ in rejects]  # listed twice or unlabelled: still listed
    else:
        (entries, rejects), meta = from_folders(data), ()
        unreadable.update((entry.path, reason) for entry, reason in rejects)  # odd names
    meta, dropped = _allowed(meta, keep_ids)
    columns = (*KNOWN_COLUMNS, *meta, *HEADER_COLUMNS.values(), *EXTRA)
    columns = tuple(dict.fromkeys(columns))
    rows, dicom = [], 0
    for entry in entries:
        row = {"path": entry.path, "label": entry.label, "source": entry.source, **entry.meta}
        patient = entry.patient_id
        if outside_data(entry.path) or "\0" in entry.path:  # listed, never opened
            unreadable[entry.path] = "outside the data folder: its header was not read"
        elif is_dicom_file(entry.file):
            header, reason = _header(entry.file)
            if reason:
                unreadable[entry.path] = reason
            else:
                dicom += 1
                patient = patient or header.pop("patient_id", "")
                institution = header.pop("institution", "")
                row.update({k: v for k, v in header.items() if not row.get(k)})
                if institution and not row.get("source"):
                    row["source"] = (
                        institution if keep_ids else pseudonym(secret, "site", institution)
                    )
        row["patient_id"] = patient if keep_ids else pseudonym(secret, "patient", patient)
        for column in meta:
            if AGE_COLUMNS.search(column):
                row[column] = _capped_age(row.get(column, ""))
            elif not keep_ids and ID_COLUMNS.search(column):
                row[column] = pseudonym(secret, "identifier", row.get(column, ""))
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


def _allowed(meta: tuple[str, ...], keep_ids: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(an existing manifest's columns that are written, those dropped): allowed as they are,
    ages (capped), or identifiers (pseudonymised); with ``keep_ids``, every column."""
    if keep_ids:
        return meta, ()
    kept = tuple(
        c for c in meta if c in SAFE_COLUMNS or AGE_COLUMNS.search(c) or ID_COLUMNS.search(c)
    )
    return kept, tuple(c for c in meta if c not in kept)


def _header(file: Path) -> tuple[dict[str, str], str]:
    """The manifest's DICOM columns, read without the pixel data; or the reason it failed."""
    try:
        with warnings.catch_warnings(), open_regular(file) as fh:
            warnings.simplefilter("ignore")  # odd but readable headers are the norm in exports
            ds = read_dicom(fh, header_only=True)
    except Exception as exc:  # pydicom raises many types for garbage input
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return {}, f"cannot read DICOM header ({reason})"
    if not any(k in ds for k in ("SOPClassUID", "Modality", "PatientID", "PixelData")):
        return {}, "not a DICOM file (no SOP class, modality, patient or pixel data)"
    header = {column: _text(ds.get(keyword)) for keyword, column in HEADER_COLUMNS.items()}
    header["age"] = _years(header["age"])
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    header["transfer_syntax"] = syntax.name if syntax is not None else ""
    header["frames"] = _text(ds.get("NumberOfFrames")) or "1"
    header["patient_id"] = _text(ds.get("PatientID"))
    header["institution"] = _text(ds.get("InstitutionName"))
    return header, ""


def _text(element) -> str:
    if element is None:
        return ""
    value = element.value if hasattr(element, "value") else element
    return "" if value is None else str(value).strip()


def _capped_age(value: str) -> str:
    """An age from any source, in years, 90 and over as 90; "" unless it is a number."""
    value = value.strip()
    if _years(value):
        return _years(value)
    try:
        years = float(value)
    except ValueError:
        return ""
    if not math.isfinite(years) or years < 0:
        return ""
    return str(AGE_CAP) if years >= AGE_CAP else value


def _years(age: str) -> str:
    """DICOM ages (``045Y``, ``006M``, ``021D``) in years, as a number a head can use."""
    if len(age) == 4 and age[:3].isdigit() and age[3] in "DWMY":
        years = int(age[:3]) / {"D": 365.25, "W": 52.18, "M": 12, "Y": 1}[age[3]]
        if years >= AGE_CAP:
            return str(AGE_CAP)
        return f"{years:g}" if age[3] == "Y" else f"{years:.2f}"
    return ""  # not a DICOM age string: nothing a head could use


def _write(out: Path, columns: tuple[str, ...], rows: list[dict[str, str]]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, extrasaction="ignore", lineterminator="\n")
    writer.writerow({c: escape_cell(c) for c in columns})
    writer.writerows({c: escape_cell(str(row.get(c, ""))) for c in columns} for row in rows)
    if str(out) == "-":
        sys.stdout.write(text.getvalue())
        return
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text.getvalue(), encoding="utf-8")
        os.replace(tmp, out)
    except OSError as exc:
        raise CxrError(f"{out}: cannot write the manifest ({exc.strerror})") from None
    finally:
        tmp.unlink(missing_ok=True)
