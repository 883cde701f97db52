"""The figures a run wrote: recorded by the run, embedded in its report, logged when tracked.

`cxr evaluate --plots DIR` and `cxr audit --plots DIR` record in their document what they
wrote (``figures``: the folder as given, and each file's name in it with its sha256, `written`).
That record is the only list of figures anything uses: the HTML report embeds those files as
``data:`` URIs (nothing is re-drawn, and the report needs no matplotlib) and a tracked run
logs them (`cxr.tracking.log`); nothing is found by listing a folder or by a path a document
names. A figure is used only when the folder is the document's own folder or inside it (not a
link out), its name is a plain PNG file name there (no ``/``, no ``..``, not hidden), it is a
regular file (a symbolic link is not followed), within the size limits, a PNG, and still the
file the run wrote (its sha256); anything else is reported as text with the reason, so a
crafted or reused document reads nothing else into a page or a run.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from cxr.files import UnusableFile, read_regular

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURE_LIMIT = 8 << 20  # one figure
TOTAL_LIMIT = 64 << 20  # every figure of one page


class FigureFile(TypedDict):
    file: str  # its name in the folder
    sha256: str  # of the bytes the run wrote


class Figures(TypedDict):
    """What one run's --plots wrote, in the order drawn."""

    folder: str  # as given to --plots (relative to where the run was, or absolute)
    files: list[FigureFile]


def written(folder: Path, paths: Sequence[str]) -> Figures:
    """The record of the figures a run has just written to ``folder`` (``paths``: as the
    writers returned them, inside ``folder``; one that is not there was not written)."""
    files = []
    for path in paths:
        try:
            digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        except OSError:
            continue
        files.append(FigureFile(file=Path(path).name, sha256=digest))
    return Figures(folder=str(folder), files=files)


@dataclass(frozen=True)
class Figure:
    name: str  # as the record gives it
    data: bytes | None  # None: not used, ``reason`` says why
    reason: str = ""

    @property
    def data_uri(self) -> str | None:
        if self.data is None:
            return None
        return "data:image/png;base64," + base64.b64encode(self.data).decode("ascii")


def recorded(document: dict[str, Any], path: Path, limit: int = TOTAL_LIMIT) -> list[Figure]:
    """The figures a document records, each read (or the reason it is not), until ``limit``
    bytes are read; a document (``path``: where it is) with plots but no record lists them
    as not embedded."""
    record = document.get("figures")
    if record is None:
        named = [*document.get("plots", []), *_result_plots(document)]
        why = "not recorded as written by the run that made the document (an older cxr?)"
        return [Figure(str(name), None, why) for name in named]
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("folder"), str)
        or not isinstance(record.get("files"), list)
        or not all(_is_file_record(f) for f in record["files"])
    ):
        return [Figure("figures", None, "the document's record of its figures is malformed")]
    folder = _folder(record["folder"], path.parent)
    if isinstance(folder, str):
        return [Figure(f["file"], None, folder) for f in record["files"]]
    figures, budget = [], limit
    with _opened(folder) as fd:
        for entry in record["files"]:
            figure = _read(fd, entry, budget) if budget > 0 else None
            figure = figure or Figure(entry["file"], None, "page full")
            budget -= len(figure.data or b"")
            figures.append(figure)
    return figures


def _result_plots(document: dict[str, Any]) -> list[object]:
    results = document.get("results")
    if not isinstance(results, list):
        return []
    return [p for r in results if isinstance(r, dict) for p in r.get("plots", [])]


def _is_file_record(entry: object) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("file"), str)
        and isinstance(entry.get("sha256"), str)
    )


def _folder(given: str, base: Path) -> Path | str:
    """The recorded folder, as given (relative to where the run was) or by its name beside the
    document (moved together), if it is the document's folder or inside it; else why not."""
    candidates = dict.fromkeys((Path(given), base / Path(given).name))
    for folder in candidates:
        try:
            if folder.is_symlink() or not folder.is_dir():
                continue
            if folder.resolve().is_relative_to(base.resolve()):
                return folder
        except (OSError, ValueError):
            continue
    return f"the figures folder {given} is not a folder inside {base} (where the document is)"


@contextmanager
def _opened(folder: Path) -> Iterator[int | None]:
    """The folder opened (never through a link): every figure is read relative to it."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd: int | None = os.open(folder, flags)
    except OSError:
        fd = None
    try:
        yield fd
    finally:
        if fd is not None:
            os.close(fd)


def _read(folder: int | None, entry: FigureFile, budget: int) -> Figure:
    name = entry["file"]
    if not _plain(name):
        return Figure(name, None, "not a PNG file name inside the figures folder")
    if folder is None:
        return Figure(name, None, "the figures folder cannot be opened")
    try:
        data = read_regular(Path(name), min(FIGURE_LIMIT, budget), False, folder)
    except FileNotFoundError:
        return Figure(name, None, "not found")
    except UnusableFile as exc:
        return Figure(name, None, str(exc))
    except OSError as exc:
        return Figure(name, None, exc.strerror or str(exc))
    if not data.startswith(PNG_SIGNATURE):
        return Figure(name, None, "not a PNG image")
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        return Figure(name, None, "changed since the run wrote it (another run's figure?)")
    return Figure(name, data)


def _plain(name: str) -> bool:
    """A file name directly in the folder: no separator, not hidden (so no ``..``), a PNG."""
    return (
        bool(name)
        and not name.startswith(".")
        and not any(c in name for c in "/\\\0")
        and name.lower().endswith(".png")
    )
