"""Reading a file a user named: regular files only, bounded, one line when it cannot be done.

A FIFO blocks its reader until someone writes, and ``/dev/zero`` never ends: either, given as an
image, a manifest, an exclusion file or a configuration, would hang a run before it printed
anything. A file is checked with ``os.stat`` before it is opened (a device is never opened at
all), then opened with ``O_NONBLOCK`` and checked again on the descriptor, in case it was
swapped for something else in between. Both stages use this (no heavy import here). And the
CSV cells the tool writes are escaped here, so a spreadsheet never runs one as a formula, and
every file the tool replaces is written here atomically, so a reader never sees half of one.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO

from cxr.errors import CxrError

TEXT_LIMIT = 64 << 20  # a configuration, exclusion or manifest file larger than this is a mistake


KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symbolic link"),
)


class UnusableFile(OSError):
    """A path the tool will not read; str() is the reject reason."""


class NotRegularFile(UnusableFile):
    """A path that names something other than a regular file."""

    def __init__(self, mode: int):
        kind = next((name for test, name in KINDS if test(mode)), "not a file")
        super().__init__(f"not a regular file ({kind})")


class FileTooLarge(UnusableFile):
    def __init__(self, size: int, limit: int):
        super().__init__(f"too large to be one image ({size:,} bytes; limit {limit:,})")


def regular_stat(path: Path, follow_links: bool = True) -> os.stat_result:
    """``os.stat`` of a regular file (``os.lstat`` unless ``follow_links``: a link is then not
    one); NotRegularFile for anything else."""
    result = os.stat(path, follow_symlinks=follow_links)
    if not stat.S_ISREG(result.st_mode):
        raise NotRegularFile(result.st_mode)
    return result


def open_regular(path: Path, follow_links: bool = True) -> BinaryIO:
    """The file opened for reading, if it is a regular file (checked before and after opening;
    ``O_NONBLOCK``: a FIFO swapped in meanwhile cannot block the open). Without
    ``follow_links`` a symbolic link is refused, even one swapped in meanwhile (``O_NOFOLLOW``):
    for files the tool wrote itself, which a link can only have replaced."""
    regular_stat(path, follow_links)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags if follow_links else flags | os.O_NOFOLLOW)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(mode)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: Path, limit: int | None = None) -> bytes:
    """A regular file's bytes; FileTooLarge above ``limit`` (nothing is read then)."""
    with open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        if limit is not None and size > limit:
            raise FileTooLarge(size, limit)
        data = fh.read() if limit is None else fh.read(limit + 1)  # it may grow meanwhile
        if limit is not None and len(data) > limit:
            raise FileTooLarge(len(data), limit)
        return data


def read_text(path: Path, what: str, limit: int = TEXT_LIMIT) -> str:
    """A small text file a user named (UTF-8, a byte-order mark allowed); CxrError naming the
    file and why it cannot be read (missing, not a regular file, too large, not UTF-8)."""
    try:
        data = read_regular(Path(path), limit)
    except FileNotFoundError:
        raise CxrError(f"{path}: {what} not found") from None
    except UnusableFile as exc:
        raise CxrError(f"{path}: cannot read the {what}: {exc}") from None
    except OSError as exc:
        raise CxrError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            pass
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CxrError(
            f"{path}: the {what} is not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from None


def write_atomic(path: Path, data: bytes, what: str) -> None:
    """Write ``data`` to ``path`` through a temporary file in its folder and ``os.replace``: a
    reader, or a run interrupted meanwhile, never sees half a file, and concurrent writers never
    share a temporary name. CxrError naming the file and ``what`` if it cannot be done."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), _default_mode())
            fh.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        raise CxrError(f"{path}: cannot write {what} ({exc.strerror or exc})") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def _default_mode() -> int:
    """The mode ``open`` would give a new file (0o666 less the umask): mkstemp's 0o600 would
    hide a report from the web server or colleague that could read it before."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def escape_cell(value: str) -> str:
    """A CSV cell a spreadsheet shows as text: a leading ' before = + - @ tab or CR (and before
    a ' that the reader would otherwise take for this escape). ``unescape_cell`` undoes it."""
    return "'" + value if value.startswith(FORMULA_STARTS) or _escaped(value) else value


def unescape_cell(value: str) -> str:
    return value[1:] if _escaped(value) else value


def _escaped(value: str) -> bool:
    return value[:1] == "'" and value[1:2] in (*FORMULA_STARTS, "'")
