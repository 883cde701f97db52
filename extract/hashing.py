"""Content hashes: the identity of an image (and of a weight file) is the sha256 of its bytes.

Reading every file on every run is what makes a re-run with nothing new cost seconds (minutes
on network storage for 100k images). ``HashCache`` remembers each file's sha256 with its size,
modification time (ns) and inode, and trusts it while all three are unchanged; ``--rehash``
ignores it. The images are still checked against their sha256 when they are decoded for work.

Only regular files are hashed or read (``open_regular``): a FIFO blocks its reader until someone
writes, and ``/dev/zero`` never ends, so either, in a class folder or a manifest, would hang a
run before it printed anything. A file is checked with ``os.stat`` before it is opened (a device
is never opened at all), then opened with ``O_NONBLOCK`` and checked again on the descriptor, in
case it was swapped for something else in between.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from pathlib import Path
from typing import BinaryIO

FORMAT = "cxr-hashes/1"


KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
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


def regular_stat(path: Path) -> os.stat_result:
    """``os.stat`` (following symlinks) of a regular file; NotRegularFile for anything else."""
    result = os.stat(path)
    if not stat.S_ISREG(result.st_mode):
        raise NotRegularFile(result.st_mode)
    return result


def open_regular(path: Path) -> BinaryIO:
    """The file opened for reading, if it is a regular file (checked before and after opening;
    ``O_NONBLOCK``: a FIFO swapped in meanwhile cannot block the open)."""
    regular_stat(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
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


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open_regular(path) as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class HashCache:
    """sha256 by (path, size, mtime, inode), kept in one JSON file (``None``: memory only)."""

    def __init__(self, path: Path | None = None, *, trust: bool = True):
        self.path = path
        self._lock = threading.Lock()
        self._known: dict[str, list] = {}
        self._changed = False
        if path is not None and trust and path.is_file():
            try:
                document = json.loads(path.read_text())
                if document.get("format") == FORMAT:
                    self._known = document["files"]
            except (OSError, ValueError, KeyError, AttributeError):
                self._changed = True  # unreadable: rebuilt from the files, then replaced

    def sha256(self, file: Path) -> str:
        """The file's sha256, read from the cache when its stat is unchanged (thread-safe)."""
        info = regular_stat(file)
        key = os.path.abspath(file)
        signature = [info.st_size, info.st_mtime_ns, info.st_ino]
        known = self._known.get(key)
        if known is not None and known[:3] == signature:
            return known[3]
        digest = sha256_file(file)
        with self._lock:
            self._known[key] = [*signature, digest]
            self._changed = True
        return digest

    def save(self) -> None:
        """Write the cache atomically if anything was learned; a failure only costs speed."""
        if self.path is None or not self._changed:
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"format": FORMAT, "files": self._known}))
            os.replace(tmp, self.path)
            self._changed = False
        except OSError:
            tmp.unlink(missing_ok=True)
