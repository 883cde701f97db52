"""The films of a data set as entries, and their identity: the sha256 of their bytes.

A layout (`cxr.extract.layouts`) lists the entries, `cxr.extract.discovery` hashes them; what
this module holds is shared by both and by every stage after them:

- anything but a regular file (a FIFO, a device, a socket, a symlink to one) is never opened
  (``cxr.files.open_regular``): it becomes a reject when it is hashed;
- a file name that is not UTF-8 (POSIX names are bytes; Python keeps the odd ones as surrogate
  escapes, which the store's UTF-8 text cannot hold) is rejected, shown with the odd bytes as
  ``\\xNN``. Not stored under an invented name: the stored path is how `cxr audit`, exclusion
  files and people find the file again, and an altered name would point at nothing;
- a manifest path that is absolute or climbs out of the data folder with ``..`` is refused
  unless the caller allows it (``cxr features --allow-outside-data``): a manifest from
  elsewhere must not make the tool read files its user did not point it at.
"""

from __future__ import annotations

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
from cxr.files import UnusableFile
from cxr.store.schema import Reject

MANIFEST_NAME = "manifest.csv"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom")
KNOWN_COLUMNS = ("path", "label", "patient_id", "source")


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
    mask: Path | None = None  # the lung mask its collection ships beside it

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
    unlisted: list[str] = field(default_factory=list)  # films beside the table, not in it
    layout: str = "folders"
    reads: str = ""  # what the layout read, in words
    notes: tuple[str, ...] = ()  # what the layout left out or ignored, said once each
    header_ids: int = 0  # films whose patient id came from their DICOM header


def hash_entries(
    listed: list[Entry], hashes: HashCache
) -> tuple[list[Entry], list[Reject], list[int]]:
    """Hash every file (threads: hashing releases the GIL); files that ``hashes`` knows
    unchanged are not read. (entries with their sha256, rejects, each entry's size)."""
    entries, rejects, sizes = [], [], []
    for entry, digest, size, error in _hash_all(listed, hashes):
        if error:
            rejects.append(entry.reject(error))
        else:
            entries.append(replace(entry, sha256=digest))
            sizes.append(size)
    return entries, rejects, sizes


def with_header(entry: Entry, headers: HeaderCache) -> Entry:
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
    return replace(  # what the layout said first (--patient-from-name, a split folder)
        entry,
        patient_id=entry.patient_id or columns["patient_id"],
        source=entry.source or columns["source"],
        meta={**entry.meta, **{c: columns[c] for c in HEADER_COLUMNS}},
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


def outside_data(rel: str) -> str:
    """How a manifest path leaves the data folder ("" if it does not)."""
    if Path(rel).is_absolute():
        return "an absolute path"
    if os.path.normpath(rel).split(os.sep)[0] == "..":
        return "it climbs out with .."
    return ""


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


def _hash_all(entries: list[Entry], hashes: HashCache) -> Iterator[tuple[Entry, str, int, str]]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        yield from pool.map(lambda entry: _hash_one(entry, hashes), entries)


def _hash_one(entry: Entry, hashes: HashCache) -> tuple[Entry, str, int, str]:
    try:
        digest = hashes.sha256(entry.file)
        size = entry.file.stat().st_size
    except FileNotFoundError:
        return entry, "", 0, "file not found"
    except UnusableFile as exc:
        return entry, "", 0, str(exc)
    except OSError as exc:
        return entry, "", 0, f"unreadable ({exc.strerror or exc})"
    return entry, digest, size, ""
