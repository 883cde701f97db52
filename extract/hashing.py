"""Content hashes: the identity of an image (and of a weight file) is the sha256 of its bytes.

Reading every file on every run is what makes a re-run with nothing new cost seconds (minutes
on network storage for 100k images). ``HashCache`` remembers each file's sha256 with its size,
modification time (ns) and inode, and trusts it while all three are unchanged; ``--rehash``
ignores it. The images are still checked against their sha256 when they are decoded for work.
The cache is sealed with this user's secret (`cxr.trust`): a hash cache planted in a shared
features folder could otherwise swap one film's embedding for another's; one that is not this
user's, or malformed, is ignored with one warning and rebuilt.

Only regular files are hashed (`cxr.files.open_regular`): a FIFO or a device in a class folder
or a manifest is a reject, never a hang; a file larger than an image can be
(``MAX_FILE_BYTES``, from its size, before a byte is read: a disk image named .png) too.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
import warnings
from pathlib import Path

from cxr.extract.images import MAX_FILE_BYTES
from cxr.files import FileTooLarge, open_regular, regular_stat
from cxr.trust import CacheWarning, read_sealed_json, write_sealed_json

FORMAT = "cxr-hashes/1"
LIMIT = 1 << 30  # the cache file: about 200 bytes a file
SHA256 = re.compile(r"^[0-9a-f]{64}$")


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
        if path is not None and trust and os.path.lexists(path):
            self._known = self._load(path)
            self._changed = not self._known  # unusable: rebuilt from the files, then replaced

    @staticmethod
    def _load(path: Path) -> dict[str, list]:
        try:
            document, reason = read_sealed_json(path, f"hashes:{path.name}", LIMIT)
        except FileNotFoundError:
            return {}
        files = document.get("files") if isinstance(document, dict) else None
        if isinstance(files, dict) and document.get("format") == FORMAT:
            if all(_entry(v) for v in files.values()):
                return files
            reason = "malformed entries"
        warnings.warn(
            f"{path}: hash cache ignored ({reason or 'not a hash cache'}); hashing again",
            CacheWarning,
            3,
        )
        return {}

    def sha256(self, file: Path, limit: int | None = MAX_FILE_BYTES) -> str:
        """The file's sha256, read from the cache when its stat is unchanged (thread-safe);
        FileTooLarge, before a byte is read, for a file larger than ``limit`` (an image's or a
        mask's; None for a weight file)."""
        info = regular_stat(file)
        if limit is not None and info.st_size > limit:
            raise FileTooLarge(info.st_size, limit)
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
        """Write the cache (sealed, atomically) if anything was learned; a failure only costs
        speed."""
        if self.path is None or not self._changed:
            return
        document = {"format": FORMAT, "files": self._known}
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        if write_sealed_json(self.path, document, f"hashes:{self.path.name}"):
            self._changed = False


def _entry(value: object) -> bool:
    """[size, mtime_ns, inode, sha256]."""
    return (
        isinstance(value, list)
        and len(value) == 4
        and all(type(v) is int for v in value[:3])
        and isinstance(value[3], str)
        and SHA256.match(value[3]) is not None
    )
