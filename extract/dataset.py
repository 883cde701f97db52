"""Discover a data set (class folders or a manifest) and fingerprint every file by its bytes.

User errors that make the whole run pointless (missing path, empty folder, manifest without the
required columns) raise CxrError before any model is loaded; a single bad file only becomes a
reject with a reason.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from cxr.errors import CxrError
from cxr.extract.hashing import HashCache
from cxr.extract.images import is_dicom_file
from cxr.store.schema import Reject

MANIFEST_NAME = "manifest.csv"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom")
REQUIRED_COLUMNS = ("path", "label")
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
    data: Path | None, manifest: Path | None, hashes: HashCache | None = None
) -> Discovery:
    """List the data set, then hash every file (threads: hashing releases the GIL); files that
    ``hashes`` knows unchanged are not read."""
    if manifest is None and data is not None and (data / MANIFEST_NAME).is_file():
        manifest = data / MANIFEST_NAME
    if manifest is not None:
        root = data if data is not None else manifest.parent
        listed, rejects, meta_columns = from_manifest(manifest, root)
        unlisted = _unlisted(root, listed + [entry for entry, _ in rejects])
    elif data is None:
        raise CxrError("give a data folder (class folders) or --manifest CSV")
    else:
        root, listed, meta_columns, unlisted = data, from_folders(data), (), []
        rejects = []
    entries, unusable = [], [entry.reject(reason) for entry, reason in rejects]
    for entry, digest, error in _hash_all(listed, hashes or HashCache()):
        if error:
            unusable.append(entry.reject(error))
        else:
            entries.append(replace(entry, sha256=digest))
    return Discovery(root, entries, unusable, manifest, meta_columns, unlisted)


def _unlisted(root: Path, listed: list[Entry]) -> list[str]:
    """Image files (by suffix) under the root that the manifest does not name: a film dropped
    into covid/ after the manifest was written would otherwise be ignored without a word."""
    known = {entry.file.resolve() for entry in listed}
    return sorted(
        file.relative_to(root).as_posix()
        for file in root.rglob("*")
        if file.suffix.lower() in IMAGE_SUFFIXES
        and not any(p.startswith(".") for p in file.relative_to(root).parts)
        and file.resolve() not in known
    )


def from_folders(data: Path) -> list[Entry]:
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
    entries = [
        Entry(path=file.relative_to(data).as_posix(), file=file, label=class_dir.name)
        for class_dir in class_dirs
        for file in sorted(class_dir.rglob("*"))
        if (file.is_file() or file.is_symlink())
        and not any(p.startswith(".") for p in file.relative_to(data).parts)
    ]
    if not entries:
        raise CxrError(
            f"{data}: no images found (expected one sub-folder per class, e.g. covid/, normal/)"
        )
    return entries


def from_manifest(manifest: Path, root: Path) -> tuple[list[Entry], list[tuple[Entry, str]], tuple]:
    if not manifest.is_file():
        raise CxrError(f"{manifest}: manifest does not exist")
    if not root.is_dir():
        raise CxrError(f"{root}: data folder does not exist")
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = tuple(reader.fieldnames or ())
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
    for row in rows:
        rel = (row["path"] or "").strip()
        file = Path(rel) if Path(rel).is_absolute() else root / rel
        entry = Entry(
            path=rel,
            file=file,
            label=(row["label"] or "").strip(),
            patient_id=(row.get("patient_id") or "").strip(),
            source=(row.get("source") or "").strip(),
            meta={c: row.get(c) or "" for c in meta_columns},
        )
        if rel in seen:
            rejects.append((entry, "listed twice in the manifest"))
        elif not entry.label:
            rejects.append((entry, "no label in the manifest"))
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
    except OSError as exc:
        return entry, "", f"unreadable ({exc.strerror or exc})"
    return entry, digest, ""
