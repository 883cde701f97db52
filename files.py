"""Reading a file a user named: regular files only, bounded, one line when it cannot be done.

A FIFO blocks its reader until someone writes, and ``/dev/zero`` never ends: either, given as an
image, a manifest, an exclusion file or a configuration, would hang a run before it printed
anything. A file is checked with ``os.stat`` before it is opened (a device is never opened at
all), then opened with ``O_NONBLOCK`` and checked again on the descriptor, in case it was
swapped for something else in between. Both stages use this (no heavy import here). And the
CSV cells the tool writes are escaped here, so a spreadsheet never runs one as a formula, and
every file the tool replaces is written here atomically, so a reader never sees half of one.

Files the tool creates are created here, and only here: a temporary file under a fresh name
(``mkstemp``: ``O_CREAT|O_EXCL|O_NOFOLLOW``) in the target folder, renamed onto the target (a
rename replaces a planted symbolic link, it never writes through it); a lock file opened with
``O_NOFOLLOW`` that must be a regular file with no other name; a folder of the tool's own
files (a cache, work in progress) that must not be a symbolic link. A shared folder whose
writer planted links at the names the tool uses can then redirect nothing.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib

from cxr.errors import CxrError

TEXT_LIMIT = 64 << 20  # a configuration, exclusion or manifest file larger than this is a mistake
TOML_DEPTH = 16  # tables and lists in a configuration nest a few levels, never dozens


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


def regular_stat(
    path: Path, follow_links: bool = True, dir_fd: int | None = None
) -> os.stat_result:
    """``os.stat`` of a regular file (``os.lstat`` unless ``follow_links``: a link is then not
    one); NotRegularFile for anything else. ``dir_fd``: ``path`` is relative to that folder."""
    result = os.stat(path, dir_fd=dir_fd, follow_symlinks=follow_links)
    if not stat.S_ISREG(result.st_mode):
        raise NotRegularFile(result.st_mode)
    return result


def open_regular(path: Path, follow_links: bool = True, dir_fd: int | None = None) -> BinaryIO:
    """The file opened for reading, if it is a regular file (checked before and after opening;
    ``O_NONBLOCK``: a FIFO swapped in meanwhile cannot block the open). Without
    ``follow_links`` a symbolic link is refused, even one swapped in meanwhile (``O_NOFOLLOW``):
    for files the tool wrote itself, which a link can only have replaced. ``dir_fd``: ``path``
    is relative to that open folder."""
    regular_stat(path, follow_links, dir_fd)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags if follow_links else flags | os.O_NOFOLLOW, dir_fd=dir_fd)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(mode)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(
    path: Path, limit: int | None = None, follow_links: bool = True, dir_fd: int | None = None
) -> bytes:
    """A regular file's bytes; FileTooLarge above ``limit`` (nothing is read then)."""
    with open_regular(path, follow_links, dir_fd) as fh:
        size = os.fstat(fh.fileno()).st_size
        if limit is not None and size > limit:
            raise FileTooLarge(size, limit)
        if limit is None:
            return fh.read()
        data = fh.read(min(size, limit) + 1)  # a buffer of its size, not of the limit
        if len(data) == min(size, limit) + 1:  # it grew meanwhile (or says 0, as /proc does)
            data += fh.read(limit + 1 - len(data))
        if len(data) > limit:
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


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """A TOML file a user named, parsed; CxrError naming it for what `read_text` refuses, bad
    TOML, or values nested deeper than ``TOML_DEPTH`` (the parser recurses: 5,000 levels end
    in a RecursionError, and the code reading the values would recurse too)."""
    text = read_text(Path(path), what)
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CxrError(f"{path}: cannot read TOML ({exc})") from None
    except RecursionError:
        document = None
    if document is None or _depth(document) > TOML_DEPTH:
        raise CxrError(f"{path}: the {what} nests values deeper than {TOML_DEPTH} levels")
    return document


def _depth(value: object) -> int:
    """How deeply tables and lists nest in ``value`` (without recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > TOML_DEPTH:
            continue
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return deepest


def write_atomic(path: Path, data: bytes, what: str) -> None:
    """Write ``data`` to ``path`` atomically (`replace_file`); CxrError naming the file and
    ``what`` if it cannot be done."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_file(path, data)
    except OSError as exc:
        raise CxrError(f"{path}: cannot write {what} ({exc.strerror or exc})") from None


def replace_file(path: Path, data: bytes | memoryview, *, sync: bool = False) -> None:
    """Write ``data`` to a new temporary file in ``path``'s folder and rename it onto ``path``:
    a reader, or a run interrupted meanwhile, never sees half a file; concurrent writers never
    share a temporary name, and a link planted at either name is never written through.
    ``sync``: the file and its folder are fsynced (whole or absent after a power cut too).
    OSError if it cannot be done (the temporary file is removed)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), _default_mode())
            fh.write(data)
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    if sync:
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


NOT_OWN = "a symbolic link, not a folder of the tool's own"


def create_new(path: Path, data: bytes, mode: int = 0o600) -> bool:
    """Create ``path`` holding ``data`` (``O_CREAT|O_EXCL|O_NOFOLLOW``: never replacing or
    writing through anything already there, a link included); False if something was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode
        )
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return True


def own_folder(path: Path) -> Path:
    """``path`` as a folder of the tool's own files (a cache, work in progress), made if
    missing; UnusableFile if it is a symbolic link or not a folder: files written or deleted
    there would land in whatever folder the link names."""
    path.mkdir(parents=True, exist_ok=True)
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode):
        raise UnusableFile(NOT_OWN)
    if not stat.S_ISDIR(mode):
        raise UnusableFile("not a folder")
    return path


class LockHeld(Exception):
    """Another process holds the lock; ``holder`` is the pid it wrote ("unknown" if none)."""

    def __init__(self, holder: str):
        super().__init__(holder)
        self.holder = holder


def acquire_lock(path: Path) -> int:
    """An exclusive ``flock`` on ``path`` (created if missing) holding this process's pid; the
    descriptor to close to release it (the kernel releases it too when the process dies).
    LockHeld if another process holds it. UnusableFile if ``path`` is a symbolic link, not a
    regular file, or a file with another name (a hard link): writing the pid would overwrite
    the file it stands for."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotRegularFile(stat.S_IFLNK) from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFile(info.st_mode)
        if info.st_nlink != 1:
            raise UnusableFile(f"a file with {info.st_nlink} names (a hard link)")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            raise LockHeld(holder or "unknown") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return fd
    except BaseException:
        os.close(fd)
        raise


def take_lock(path: Path, *, busy: str, fix: str = "wait for it to finish") -> int:
    """`acquire_lock` for a command: the descriptor to close to release it, or a CxrError of one
    line: ``busy`` (who holds it and what) with the holder's pid and ``fix``, or the lock file
    that cannot be one. A storage fault (OSError) is left to the caller, who knows what is safe."""
    try:
        return acquire_lock(path)
    except LockHeld as held:
        raise CxrError(f"{busy} (pid {held.holder}); {fix}") from None
    except UnusableFile as exc:
        raise CxrError(f"{path}: the lock file is {exc}; remove it") from None


def _default_mode() -> int:
    """The mode ``open`` would give a new file (0o666 less the umask): mkstemp's 0o600 would
    hide a report from the web server or colleague that could read it before."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# Where a reader may start a new cell: a comma, a semicolon (German or French spreadsheets), a
# tab, or a line break (a reader that ignores quotes splits there too).
SEPARATORS = ",;\t\r\n"
_STARTS = re.escape("".join(FORMULA_STARTS))
_ESCAPE = re.compile(f"(?:^|(?<=[{SEPARATORS}]))(?=[{_STARTS}]|'[{_STARTS}'])")
_UNESCAPE = re.compile(f"(?:^|(?<=[{SEPARATORS}]))'(?=[{_STARTS}'])")


def escape_cell(value: str) -> str:
    """A CSV cell a spreadsheet shows as text, whatever its list separator: a ' before = + - @
    tab or CR at the start of the cell and after every separator inside it (OWASP's rule;
    ``x;=1+1`` is two cells to a reader that splits on ``;``), and before a ' that the reader
    would otherwise take for this escape. ``unescape_cell`` undoes it exactly."""
    return _ESCAPE.sub("'", value)


def unescape_cell(value: str) -> str:
    return _UNESCAPE.sub("", value)


def csv_cell(value: str) -> str:
    """A cell of text as the tool writes it into any CSV: `printable`, then `escape_cell` (a
    path keeps its characters: `escape_cell` alone)."""
    return escape_cell(printable(value))


# Control characters (C0, DEL, C1): a NUL cannot be stored in HDF5 text or a POSIX name, and
# none belongs in a header value or a table cell; the whitespace ones become a space.
_CONTROLS = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f]")
_SPACES = re.compile("[\t\n\v\f\r]")


def printable(text: str) -> str:
    """``text`` without control characters (tab, line breaks and form feeds become a space):
    what a header value or a manifest cell keeps of a buggy export's NULs and escapes."""
    return _CONTROLS.sub("", _SPACES.sub(" ", text))
