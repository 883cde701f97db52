"""Content hashes: the identity of an image (and of a weight file) is the sha256 of its bytes.

Reading every file on every run is what makes a re-run with nothing new cost seconds (minutes
on network storage for 100k images). ``HashCache`` remembers each file's sha256 with its size,
modification time (ns) and inode, and trusts it while all three are unchanged; ``--rehash``
ignores it. The images are still checked against their sha256 when they are decoded for work.

Only regular files are hashed (`cxr.files.open_regular`): a FIFO or a device in a class folder
or a manifest is a reject, never a hang.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from cxr.files import open_regular, regular_stat

FORMAT = "cxr-hashes/1"


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
