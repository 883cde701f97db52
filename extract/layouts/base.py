"""What every layout reader provides, and the options that tell a reader how to read.

A layout turns a folder as a distributor ships it into entries (one per film: path, label,
patient, source, metadata columns, the lung mask it ships), and says out loud what it read
and what it left out (``Listing.notes``). It never guesses: what it cannot read as the task
the user means is refused with a CxrError naming the option that reads it.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from cxr.errors import CxrError
from cxr.extract.dataset import IMAGE_SUFFIXES, Entry, shown_name

ROLES = ("path", "label", "patient", "source")  # what --column can name
DEFAULT_COLUMNS = {"path": "path", "label": "label", "patient": "patient_id", "source": "source"}
# Folders archives and desktops leave beside the films: never data, named once when ignored.
JUNK = frozenset({"__macosx", "$recycle.bin", "system volume information", "thumbs.db"})


@dataclass(frozen=True)
class ReadOptions:
    """How to read a data set, checked once (``parse``): manifest columns by role, a pattern
    that takes the patient id from a file name, rules that map a collection's findings to
    labels (tried before its own), and whether manifest paths may leave the data folder."""

    columns: tuple[tuple[str, str], ...] = ()
    patient_from_name: str = ""
    label_map: tuple[tuple[str, str], ...] = ()
    allow_outside: bool = False

    @classmethod
    def parse(
        cls,
        columns: Mapping[str, str] | Sequence[str] | None = None,
        patient_from_name: str = "",
        label_map: Mapping[str, str] | Sequence[str] | None = None,
        allow_outside: bool = False,
    ) -> ReadOptions:
        """Python values (``columns={"label": "diagnosis"}``, ``label_map={"Fungal":
        "fungal"}``) or the CLI's items (``label=diagnosis``, ``Pneumonia/Fungal=fungal``: an
        empty label leaves such rows out), checked by `of`."""
        named = _pairs(columns, "columns", "ROLE=COLUMN (e.g. `columns` label=diagnosis)")
        rules = _pairs(label_map, "label_map", "TEXT=LABEL (TEXT= leaves such rows out)")
        return cls.of(dict(named), patient_from_name, rules, allow_outside)

    @classmethod
    def of(
        cls,
        columns: Mapping[str, str] | None = None,
        patient_from_name: str = "",
        label_map: Mapping[str, str] | Sequence[tuple[str, str]] = (),
        allow_outside: bool = False,
    ) -> ReadOptions:
        """Python values (``columns={"label": "diagnosis"}``, ``label_map={"Fungal": "fungal"}``),
        checked: CxrError naming the option that is wrong."""
        named = tuple((columns or {}).items())
        for role, name in named:
            if role not in ROLES or not name:
                raise CxrError(
                    f"`columns` {role}={name}: ROLE is one of {', '.join(ROLES)}, COLUMN a name"
                )
        if patient_from_name:
            try:
                re.compile(patient_from_name)
            except re.error as exc:
                raise CxrError(
                    f"`patient_from_name` {patient_from_name}: not a regular expression ({exc})"
                ) from None
        rules = tuple(label_map.items() if isinstance(label_map, Mapping) else label_map)
        if any(not text for text, _ in rules):
            raise CxrError("`label_map`: give TEXT=LABEL with a TEXT to find in the finding")
        return cls(named, patient_from_name, rules, allow_outside)

    def label(self, text: str, rules: Sequence[tuple[str, str]] = (), other: str = "") -> str:
        """The label of a finding, class or file name: that of the first rule (``--label-map``'s,
        then the layout's ``rules``) whose TEXT ``text`` contains, case aside; else ``other``.
        "" leaves the row out."""
        folded = text.casefold()
        found = (label for key, label in (*self.label_map, *rules) if key.casefold() in folded)
        return next(found, other)

    def column(self, role: str) -> str:
        return dict(self.columns).get(role, DEFAULT_COLUMNS[role])

    def patient_of(self, name: str) -> str:
        """The patient id ``--patient-from-name`` finds in a file name (its first group, else
        the whole match); "" when it finds none or was not given."""
        if not self.patient_from_name:
            return ""
        found = re.search(self.patient_from_name, Path(name).name)
        if found is None:
            return ""
        return next((g for g in found.groups() if g), found.group(0))


@dataclass
class Listing:
    """A data set as a layout read it: entries still to hash, rejects with their reasons, the
    metadata columns, the files it read the rows from, and what it says about them."""

    layout: str
    reads: str  # "patients from file names, split from folders": shown in the layout line
    root: Path
    entries: list[Entry]
    rejects: list[tuple[Entry, str]] = field(default_factory=list)
    meta_columns: tuple[str, ...] = ()
    manifest: Path | None = None  # the one table the rows came from, when there is one
    notes: list[str] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)  # films beside the table but not in it
    headers: bool = False  # DICOM headers may supply patient ids (nothing else names them)

    @property
    def masks(self) -> bool:
        return any(entry.mask is not None for entry in self.entries)


class Layout:
    """One way data sets are shipped. Subclasses document what they read, in their docstring,
    and in ``reads``, the line the run prints."""

    name: ClassVar[str]
    reads: ClassVar[str]

    @classmethod
    def recognise(cls, root: Path) -> bool:
        """Whether ``root`` is laid out this way (cheap: names only, a header at most)."""
        return False

    def read(self, root: Path, options: ReadOptions) -> Listing:
        raise NotImplementedError


# ---- helpers the readers share -------------------------------------------------------------


def visible(folder: Path) -> list[Path]:
    """A folder's entries, sorted, without hidden names and archive junk (``__MACOSX``)."""
    try:
        children = sorted(folder.iterdir())
    except OSError as exc:
        raise CxrError(f"{folder}: cannot list the folder ({exc.strerror or exc})") from None
    return [c for c in children if not c.name.startswith(".") and c.name.casefold() not in JUNK]


def junk_note(folder: Path) -> list[str]:
    """A note naming the archive junk beside the data ([] when there is none): never read."""
    try:
        names = sorted(c.name + "/" for c in folder.iterdir() if c.name.casefold() in JUNK)
    except OSError:
        return []
    return [f"ignored {', '.join(names)} (archive metadata, not films)"] if names else []


def subfolder(folder: Path, name: str) -> Path | None:
    """``folder/name`` matched without regard to case (``Normal`` and ``NORMAL`` alike)."""
    if not folder.is_dir():
        return None
    return next(
        (c for c in visible(folder) if c.is_dir() and c.name.casefold() == name.casefold()), None
    )


def image_files(folder: Path, recursive: bool = True) -> list[Path]:
    """Every file under ``folder`` (sorted, none hidden, no archive junk): each one is listed,
    and what is not a film is rejected when it is read, never skipped without a word."""
    found = []
    for child in visible(folder):
        if child.is_dir():
            if recursive:
                found.extend(image_files(child))
        else:
            found.append(child)
    return found


def has_image_suffix(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def entry(root: Path, file: Path, label: str, **fields) -> tuple[Entry, str]:
    """An entry for ``file`` (its path relative to ``root``), and why its name cannot be
    stored ("" when it can)."""
    path, problem = shown_name(file.relative_to(root).as_posix())
    return Entry(path=path, file=file, label=label, **fields), problem


def split_entries(
    pairs: Iterable[tuple[Entry, str]],
) -> tuple[list[Entry], list[tuple[Entry, str]]]:
    entries, rejects = [], []
    for item, problem in pairs:
        if problem:
            rejects.append((item, problem))
        else:
            entries.append(item)
    return entries, rejects


def counted(counts: Counter, most: int = 6) -> str:
    """``a 3, b 2, ...``: the most common values of a Counter, for a note."""
    shown = ", ".join(f"{value or '(empty)'} {n}" for value, n in counts.most_common(most))
    return shown + (f", ... ({len(counts) - most} more)" if len(counts) > most else "")


def unlisted(folders: Iterable[Path], listed: Iterable[Path], root: Path) -> list[str]:
    """Image files (by suffix) in ``folders`` that no row names: a film added after the table
    was written would otherwise be left out without a word."""
    known = {os.path.abspath(p) for p in listed}
    return sorted(
        shown_name(file.relative_to(root).as_posix())[0]
        for folder in folders
        if folder.is_dir()
        for file in image_files(folder)
        if has_image_suffix(file) and os.path.abspath(file) not in known
    )


def _pairs(
    given: Mapping[str, str] | Sequence[str] | None, name: str, form: str
) -> list[tuple[str, str]]:
    """A mapping's items, or ``KEY=VALUE`` texts split (CxrError naming the setting)."""
    if isinstance(given, Mapping):
        return list(given.items())
    pairs = []
    for item in [given] if isinstance(given, str) else given or ():
        key, sep, value = str(item).partition("=")
        if not sep:
            raise CxrError(f"`{name}` {item}: give {form}")
        pairs.append((key.strip(), value.strip()))
    return pairs
