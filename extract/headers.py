"""What a DICOM header says of a film, pseudonymised: the patient, the view, the scanner, ...

`cxr manifest` writes these columns to a CSV; `cxr features` stores them with the embeddings
when it reads class folders of DICOM files, so folds are grouped by patient without a manifest.
Patient ids and institution names never leave as they are: a keyed hash (HMAC-SHA256) stands
in for each, the same for the same patient as long as the key is the same. The key is, in this
order: ``--key``, ``$CXR_ID_KEY``, or the study's own key file ``<features>/.id-key`` (created
on first use, readable by its owner only, never put in a store or a manifest). A key file that
is a symbolic link, not a regular file, open to group or others, or shorter than 128 bits is
refused (`cxr.trust.read_key`): anyone who can read or guess the key can recompute every
pseudonym. Headers are read without the pixel data (``cxr.extract.images.read_dicom``); their
values lose control characters (a PACS writer's NUL padding), which no store or CSV can hold.
The header cache is sealed with this user's secret (`cxr.trust`): one planted in a shared
features folder could otherwise set any film's patient, view or scanner.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import warnings
from pathlib import Path

from cxr.errors import CxrError
from cxr.extract.images import read_dicom
from cxr.files import open_regular, printable
from cxr.settings import flag
from cxr.trust import CacheWarning, WeakKey, new_key, read_key, read_sealed_json, write_sealed_json

KEY_VARIABLE = "CXR_ID_KEY"
KEY_FILE = ".id-key"
CACHE_FILE = ".headers.json"
CACHE_FORMAT = "cxr-headers/1"
LIMIT = 1 << 30  # the header cache: about 400 bytes a film
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
COLUMNS = (*HEADER_COLUMNS.values(), *EXTRA)  # what a film's header adds to its row
PSEUDONYM = re.compile(r"^[a-z]-[0-9a-f]{16}$")
AGE_CAP = 90


def pseudonym(key: bytes, kind: str, value: str) -> str:
    """A stable, keyed stand-in for an identifier ("" and pseudonyms stay as they are):
    the kind's initial, a dash and 16 hex digits, e.g. ``p-515ed53fa630eb79``."""
    if not value or PSEUDONYM.match(value):
        return value
    digest = hmac.new(key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()
    return f"{kind[0]}-{digest[:16]}"


class StudyKey:
    """The secret of one study's pseudonyms, found (or made) when first needed."""

    def __init__(self, features: Path, given: str | None = None):
        self.file = Path(features) / KEY_FILE
        self.given = given
        self.created = False
        self._secret: bytes | None = None

    @property
    def source(self) -> str:
        """Where the key came from, for the run's notes (never the key itself)."""
        if self.given:
            return flag("key")  # written into `cxr manifest`'s JSON as it is
        if os.environ.get(KEY_VARIABLE):
            return f"${KEY_VARIABLE}"
        return f"the key file {self.file}" + (" (created now)" if self.created else "")

    @property
    def secret(self) -> bytes:
        if self._secret is None:
            self._secret = self._find()
        return self._secret

    @property
    def fingerprint(self) -> str:
        """Which key, without it: pseudonyms made with another key are other pseudonyms."""
        return hashlib.sha256(b"cxr-id-key:" + self.secret).hexdigest()[:16]

    def _find(self) -> bytes:
        chosen = self.given or os.environ.get(KEY_VARIABLE)
        if chosen:
            return chosen.encode()
        try:
            self.created = new_key(self.file)
            return read_key(self.file)
        except WeakKey as exc:
            raise CxrError(f"{self.file}: {exc}") from None
        except OSError as exc:
            raise CxrError(
                f"{self.file}: cannot create the key that pseudonymises patient ids "
                f"({exc.strerror or exc}); give `key` or set {KEY_VARIABLE}"
            ) from None


def read_header(file: Path) -> tuple[dict[str, str], str]:
    """A film's header columns (``COLUMNS``, plus ``patient_id`` and ``institution`` as they
    are), read without the pixel data; or ({}, the reason it could not be read)."""
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
    header["age"] = years(header["age"])
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    header["transfer_syntax"] = syntax.name if syntax is not None else ""
    header["frames"] = _text(ds.get("NumberOfFrames")) or "1"
    header["patient_id"] = _text(ds.get("PatientID"))
    header["institution"] = _text(ds.get("InstitutionName"))
    return header, ""


def shareable(header: dict[str, str], key: StudyKey) -> dict[str, str]:
    """A header's columns as a store keeps them: ``patient_id`` and ``source`` (the
    institution) pseudonymised, the others as they are."""
    out = {c: header.get(c, "") for c in COLUMNS}
    for column, kind, raw in (
        ("patient_id", "patient", "patient_id"),
        ("source", "site", "institution"),
    ):
        value = header.get(raw, "")
        out[column] = pseudonym(key.secret, kind, value) if value else ""  # no key needed for ""
    return out


class HeaderCache:
    """Pseudonymised header columns by content hash (``<features>/.headers.json``), so a re-run
    reads no header of a film it has seen; entries made with another key are not used."""

    def __init__(self, features: Path, key: StudyKey):
        self.path = Path(features) / CACHE_FILE
        self.key = key
        self.known: dict[str, dict[str, str]] = {}
        self.changed = False
        self._loaded = False

    def columns(self, sha256: str, file: Path) -> tuple[dict[str, str], str]:
        """(the film's shareable columns, "") or ({}, why its header could not be read)."""
        if not self._loaded:
            self._load()
        if sha256 in self.known:
            return self.known[sha256], ""
        header, reason = read_header(file)
        if reason:
            return {}, reason
        self.known[sha256] = shareable(header, self.key)
        self.changed = True
        return self.known[sha256], ""

    def _load(self) -> None:
        self._loaded = True
        if not os.path.lexists(self.path):
            return
        try:
            document, reason = read_sealed_json(self.path, f"headers:{self.path.name}", LIMIT)
        except FileNotFoundError:
            return
        if not isinstance(document, dict) or document.get("format") != CACHE_FORMAT:
            why = reason or "not a header cache"
            warnings.warn(f"{self.path}: header cache ignored ({why})", CacheWarning, 4)
            return
        if document.get("key") != self.key.fingerprint:
            return  # made with another key: its pseudonyms are other pseudonyms
        files = document.get("files")
        if isinstance(files, dict) and all(_columns(v) for v in files.values()):
            self.known = files
        else:
            warnings.warn(f"{self.path}: header cache ignored (malformed)", CacheWarning, 4)

    def save(self) -> None:
        if not self.changed:
            return
        document = {"format": CACHE_FORMAT, "key": self.key.fingerprint, "files": self.known}
        if write_sealed_json(self.path, document, f"headers:{self.path.name}"):
            self.changed = False  # else a cache lost: it costs only time


def _columns(value: object) -> bool:
    """A film's cached columns: every one of ``COLUMNS`` plus patient and source, as text."""
    return (
        isinstance(value, dict)
        and set(value) == {*COLUMNS, "patient_id", "source"}
        and all(isinstance(v, str) for v in value.values())
    )


def _text(element) -> str:
    if element is None:
        return ""
    value = element.value if hasattr(element, "value") else element
    return "" if value is None else printable(str(value)).strip()


def years(age: str) -> str:
    """DICOM ages (``045Y``, ``006M``, ``021D``) in years, as a number a head can use; 90 and
    over as 90 (the HIPAA safe-harbour rule)."""
    if len(age) == 4 and age[:3].isdigit() and age[3] in "DWMY":
        value = int(age[:3]) / {"D": 365.25, "W": 52.18, "M": 12, "Y": 1}[age[3]]
        if value >= AGE_CAP:
            return str(AGE_CAP)
        return f"{value:g}" if age[3] == "Y" else f"{value:.2f}"
    return ""  # not a DICOM age string: nothing a head could use
