"""Discover a data set (class folders or a manifest) and fingerprint every file by its bytes.

User errors that make the whole run pointless (missing path, empty folder, manifest without the
required columns) raise CxrError before any model is loaded; a single bad file only becomes a
reject with a reason:

- anything but a regular file (a FIFO, a device, a socket, a symlink to one): never opened
  (``cxr.files.open_regular``);
- a file name that is not UTF-8 (POSIX names are bytes; Python keeps the odd ones as surrogate
  escapes, which the store's UTF-8 text cannot hold): rejected here, shown with the odd bytes as
  ``\\xNN``. Not stored under an invented name: the stored path is how `cxr audit`, exclusion
  files and people find the file again, and an altered name would point at nothing;
- a manifest path that is absolute or climbs out of the data folder with ``..``, unless the
  caller allows it (``cxr features --allow-outside-data``): a manifest from elsewhere must not
  make the tool read files its user did not point it at.

Manifest cells are read through ``unescape_cell``, the inverse of the spreadsheet escaping that
`cxr manifest` writes (``escape_cell``), so paths and labels come back as they were.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from cxr.errors import CxrError
from cxr.extract.hashing import HashCache
from cxr.extract.headers import COLUMNS as HEADER_COLUMNS
from cxr.extract.headers import HeaderCache
from cxr.extract.images import DICOM_SUFFIXES, is_dicom_file
from cxr.files import UnusableFile, printable, unescape_cell
from cxr.store.schema import Reject

MANIFEST_NAME = "manifest.csv"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom")
REQUIRED_COLUMNS = ("path", "label")
KNOWN_COLUMNS = ("path", "label", "patient_id", "source")
OUTSIDE = (
    "outside the data folder ({how}); pass --allow-outside-data to read files the manifest "
    "names there"
)


@dataclass(frozen=True)
class Entry:
    """One image file of the data set, with everything the store keeps about it."""

    path: str  # as shown to the user and stored: relative to the data root
    file: Path
    label: str
    patient_id: str = ""
    source: str = ""
    meta: dict[str, str] = field(default_factory=dict)
    sha256: str = ""

    def record(self) -> dict[str, str]:
        return {
            "id": self.sha256,
            "path": self.path,
            "label": self.label,
            "patient_id": self.patient_id,
            "source": self.source,
        }

    def reject(self, reason: str) -> Reject:
        return Reject(self.path, reason, self.sha256, self.label)


@dataclass(frozen=True)
class Discovery:
    root: Path
    entries: list[Entry]  # hashed and readable
    rejects: list[Reject]  # could not even be read
    manifest: Path | None
    meta_columns: tuple[str, ...]
    unlisted: list[str] = field(default_factory=list)  # images under the root, not in the manifest


def discover(
    data: Path | None,
    manifest: Path | None,
    hashes: HashCache | None = None,
    *,
    allow_outside: bool = False,
    headers: HeaderCache | None = None,
) -> Discovery:
    """List the data set, then hash every file (threads: hashing releases the GIL); files that
    ``hashes`` knows unchanged are not read. ``allow_outside``: read manifest paths that are
    absolute or climb out of the data folder (`cxr features --allow-outside-data`). With
    ``headers``, class folders' DICOM films get their header's columns, the patient id and the
    institution pseudonymised (a manifest, when there is one, says what it says instead)."""
    if manifest is None and data is not None and (data / MANIFEST_NAME).is_file():
        manifest = data / MANIFEST_NAME
    for given in (data, manifest):
        if given is not None and shown_name(str(given))[1]:
            raise CxrError(f"{shown_name(str(given))[0]}: {shown_name(str(given))[1]}")
    if manifest is not None:
        root = data if data is not None else manifest.parent
        listed, rejects, meta_columns = from_manifest(manifest, root, allow_outside=allow_outside)
        unlisted = _unlisted(root, listed + [entry for entry, _ in rejects])
    elif data is None:
        raise CxrError("give a data folder (class folders) or --manifest CSV")
    else:
        listed, rejects = from_folders(data)
        root, meta_columns, unlisted = data, (), []
    entries, unusable = [], [entry.reject(reason) for entry, reason in rejects]
    for entry, digest, error in _hash_all(listed, hashes or HashCache()):
        if error:
            unusable.append(entry.reject(error))
        else:
            entries.append(replace(entry, sha256=digest))
    if manifest is None and headers is not None:
        entries = [_with_header(entry, headers) for entry in entries]
        if any(entry.meta for entry in entries):
            meta_columns = HEADER_COLUMNS
    return Discovery(root, entries, unusable, manifest, meta_columns, unlisted)


def _with_header(entry: Entry, headers: HeaderCache) -> Entry:
    """A DICOM film with its header's columns (other files, and unreadable headers: as they are;
    the decoder has the last word on the pixels)."""
    suffix = entry.file.suffix.lower()
    if suffix in IMAGE_SUFFIXES and suffix not in DICOM_SUFFIXES:
        return entry  # a PNG is not opened to be sure
    if suffix not in DICOM_SUFFIXES and not is_dicom_file(entry.file):
        return entry
    columns, problem = headers.columns(entry.sha256, entry.file)
    if problem:
        return entry
    return replace(
        entry,
        patient_id=columns["patient_id"],
        source=columns["source"],
        meta={c: columns[c] for c in HEADER_COLUMNS},
    )


def _unlisted(root: Path, listed: list[Entry]) -> list[str]:
    """Image files (by suffix) under the root that the manifest does not name: a film dropped
    into covid/ after the manifest was written would otherwise be ignored without a word."""
    known = {entry.file.resolve() for entry in listed}
    return sorted(
        shown_name(file.relative_to(root).as_posix())[0]
        for file in root.rglob("*")
        if file.suffix.lower() in IMAGE_SUFFIXES
        and not any(p.startswith(".") for p in file.relative_to(root).parts)
        and file.resolve() not in known
    )


def shown_name(name: str) -> tuple[str, str]:
    """(the name as it can be shown and stored, "" or why it cannot be stored as it is): a
    POSIX name that is not UTF-8 has its odd bytes written as \\xNN."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(name).decode("utf-8", "backslashreplace")
        return shown, "file name is not valid UTF-8; rename it (e.g. convmv -f latin1 -t utf8)"
    return name, ""


def from_folders(data: Path) -> tuple[list[Entry], list[tuple[Entry, str]]]:
    """Every file under the class folders (none hidden), and those rejected already by their
    name; anything that is not a regular file is listed, and rejected when it is hashed."""
    if not data.exists():
        raise CxrError(f"{data}: data folder does not exist")
    if not data.is_dir():
        raise CxrError(
            f"{data}: not a folder (expected one sub-folder per class, or use --manifest)"
        )
    class_dirs = sorted(d for d in data.iterdir() if d.is_dir() and not d.name.startswith("."))
    by_case: dict[str, str] = {}
    for d in class_dirs:
        other = by_case.setdefault(d.name.casefold(), d.name)
        if other != d.name:
            raise CxrError(
                f"{data}: class folders {other}/ and {d.name}/ differ only in case and would be "
                "two classes; merge them into one folder"
            )
    entries, rejects = [], []
    for class_dir in class_dirs:
        for file in sorted(class_dir.rglob("*")):
            if file.is_dir() or any(p.startswith(".") for p in file.relative_to(data).parts):
                continue
            path, problem = shown_name(file.relative_to(data).as_posix())
            entry = Entry(path=path, file=file, label=shown_name(class_dir.name)[0])
            if problem:
                rejects.append((entry, problem))
            else:
                entries.append(entry)
    if not entries and not rejects:
        raise CxrError(
            f"{data}: no images found (expected one sub-folder per class, e.g. covid/, normal/)"
        )
    return entries, rejects


def outside_data(rel: str) -> str:
    """How a manifest path leaves the data folder ("" if it does not)."""
    if Path(rel).is_absolute():
        return "an absolute path"
    if os.path.normpath(rel).split(os.sep)[0] == "..":
        return "it climbs out with .."
    return ""


def from_manifest(
    manifest: Path, root: Path, *, allow_outside: bool = False
) -> tuple[list[Entry], list[tuple[Entry, str]], tuple]:
    if not manifest.is_file():
        raise CxrError(f"{manifest}: manifest does not exist")
    if not root.is_dir():
        raise CxrError(f"{root}: data folder does not exist")
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = tuple(unescape_cell(c) for c in reader.fieldnames or ())
            reader.fieldnames = list(columns)
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CxrError(f"{manifest}: cannot read manifest ({exc})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise CxrError(
            f"{manifest}: missing required column(s) {', '.join(missing)} "
            f"(has: {', '.join(columns) or 'none'})"
        )
    if not rows:
        raise CxrError(f"{manifest}: manifest lists no images")
    meta_columns = tuple(c for c in columns if c not in KNOWN_COLUMNS)
    entries, rejects, seen = [], [], set()
    for raw in rows:
        row = {c: unescape_cell(raw.get(c) or "") for c in columns}
        rel = row["path"].strip()
        row = {c: printable(value) for c, value in row.items()}  # a NUL in `path`: a reject
        file = Path(rel) if Path(rel).is_absolute() else root / rel
        entry = Entry(
            path=rel,
            file=file,
            label=row["label"].strip(),
            patient_id=row.get("patient_id", "").strip(),
            source=row.get("source", "").strip(),
            meta={c: row[c] for c in meta_columns},
        )
        if rel in seen:
            rejects.append((entry, "listed twice in the manifest"))
        elif not entry.label:
            rejects.append((entry, "no label in the manifest"))
        elif "\0" in rel:
            rejects.append((entry, "the manifest's path holds a NUL character"))
        elif outside_data(rel) and not allow_outside:
            rejects.append((entry, OUTSIDE.format(how=outside_data(rel))))
        else:
            seen.add(rel)
            entries.append(entry)
    return entries, rejects, meta_columns


def list_images(inputs: Sequence[Path]) -> list[Path]:
    """Image files named directly, plus the image files directly inside named folders (sorted):
    known suffixes, and DICOM files whatever their name."""
    images: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            images.extend(sorted(p for p in item.iterdir() if p.is_file() and _is_image_file(p)))
        elif item.is_file():
            images.append(item)
        else:
            raise CxrError(f"{item}: no such image file or folder")
    if not images:
        raise CxrError(
            f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, inputs))}"
        )
    return images


def _is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES or is_dicom_file(path)


def _hash_all(entries: list[Entry], hashes: HashCache) -> Iterator[tuple[Entry, str, str]]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        yield from pool.map(lambda entry: _hash_one(entry, hashes), entries)


def _hash_one(entry: Entry, hashes: HashCache) -> tuple[Entry, str, str]:
    try:
        digest = hashes.sha256(entry.file)
    except FileNotFoundError:
        return entry, "", "file not found"
    except UnusableFile as exc:
        return entry, "", str(exc)
    except OSError as exc:
        return entry, "", f"unreadable ({exc.strerror or exc})"
    return entry, digest, ""
