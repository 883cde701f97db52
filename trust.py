"""What the tool reads back from a folder others can write: only what this user sealed.

A features folder travels (a tar, a group drive) with its caches: fitted predictions, scores,
file hashes, DICOM headers, perceptual hashes. Whoever could write the folder could write a
cache entry, and an entry's name is computable from public data, so a planted entry would
decide a result. Every cache the tool reads back is therefore sealed: an HMAC-SHA256, under a
secret of this user's kept outside any features folder, over what the entry is for and its
bytes. An entry without a valid seal (a colleague's, a forged or a damaged one) is ignored, with
one warning, and computed again; nothing in it is parsed first.

The secret is ``cache.key`` in ``$CXR_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/cxr``, else
``~/.config/cxr``: 32 random bytes as hex, created on first use with ``O_EXCL`` and mode 0600.
A key file, this one or a study's ``.id-key``, is refused when it is a symbolic link, not a
regular file, open to group or others, or shorter than 128 bits (`read_key`): a key that
others can read, or guess, protects nothing. Without a usable secret the caches are neither
read nor written (one warning says why and how to fix it).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import math
import os
import secrets
import stat
import string
import warnings
from pathlib import Path
from typing import Any

from cxr.files import UnusableFile, create_new, open_regular, replace_file

CONFIG_VARIABLE = "CXR_CONFIG_DIR"
SECRET_FILE = "cache.key"
MAGIC = b"cxr-sealed/1\n"
MIN_BITS = 128
MAX_KEY = 4096  # bytes of a key file


class CacheWarning(UserWarning):
    """A cache entry that was ignored (and computed again), or a cache that is not used."""


class Unsealed(Exception):
    """A cache entry that cannot be trusted; str() is why, in a few words."""


class WeakKey(ValueError):
    """A key file that must not be used; str() says why and how to fix it."""


def config_dir() -> Path:
    chosen = os.environ.get(CONFIG_VARIABLE)
    if chosen:
        return Path(chosen)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path("~/.config").expanduser())
    return Path(base) / "cxr"


def secret_path() -> Path:
    return config_dir() / SECRET_FILE


def user_secret() -> bytes | None:
    """This user's cache secret (made on first use), or None with one warning if it cannot be
    made or used."""
    return _secret_at(secret_path())


@functools.cache
def _secret_at(path: Path) -> bytes | None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        new_key(path)
        return read_key(path)
    except (OSError, WeakKey) as exc:
        reason = str(exc) if isinstance(exc, WeakKey) else (exc.strerror or str(exc))
        warnings.warn(
            f"{path}: caches are not used ({reason}); set ${CONFIG_VARIABLE} to a folder of "
            "your own to use them",
            CacheWarning,
            2,
        )
        return None


def new_key(path: Path) -> bool:
    """Create the key file ``path`` (a new random key, mode 0600, `cxr.files.create_new`:
    never replacing or writing through anything already there); False if it existed."""
    return create_new(path, (secrets.token_hex(32) + "\n").encode(), 0o600)


def read_key(path: Path) -> bytes:
    """A key file's key; WeakKey (saying how to fix it) for a symbolic link, anything but a
    regular file, a file open to group or others, or a key shorter than 128 bits."""
    try:
        with open_regular(path, follow_links=False) as fh:
            mode = os.fstat(fh.fileno()).st_mode
            data = fh.read(MAX_KEY + 1)
    except UnusableFile as exc:
        raise WeakKey(f"the key file is {exc}; delete it to make a new one") from None
    if mode & 0o077:
        raise WeakKey(
            f"the key file can be read by others (mode {stat.S_IMODE(mode):03o}); "
            f"`chmod 600 {path}`, and make a new key if others may have read it"
        )
    key = data.strip()
    if len(data) > MAX_KEY:
        raise WeakKey(f"the key file is larger than {MAX_KEY} bytes, not a key")
    if key_bits(key) < MIN_BITS:
        raise WeakKey(
            f"the key holds about {key_bits(key):.0f} bits, fewer than {MIN_BITS}; delete it "
            "to make a new one (or write 32 random hex digits or more into it)"
        )
    return key


ALPHABETS = (  # the smallest that holds every character of a key decides its bits per character
    set(string.hexdigits),
    set(string.ascii_letters + string.digits + "+/=-_"),
    set(string.printable) - set(string.whitespace[1:]),
)


def key_bits(key: bytes) -> float:
    """An upper bound of a key's entropy: its length times the bits of the smallest alphabet
    (hex, base64, printable text, bytes) holding it; a key of fewer than 8 distinct characters
    counts as one character per distinct one (``aaaa...`` is not a key)."""
    text = key.decode("latin-1")
    size = next((len(a) for a in ALPHABETS if set(text) <= a), 256)
    length = len(text) if len(set(text)) >= 8 else len(set(text))
    return length * math.log2(size)


def _mac(secret: bytes, purpose: str, payload: bytes | memoryview) -> bytes:
    digest = hmac.new(secret, b"cxr-cache/1\0" + purpose.encode() + b"\0", hashlib.sha256)
    digest.update(payload)
    return digest.hexdigest().encode()


def write_sealed(path: Path, payload: bytes, purpose: str) -> bool:
    """Write ``payload`` sealed for ``purpose`` (what it is and under which name) to ``path``,
    atomically; False without a usable secret. OSError if it cannot be written."""
    secret = user_secret()
    if secret is None:
        return False
    replace_file(path, MAGIC + _mac(secret, purpose, payload) + b"\n" + payload)
    return True


def read_sealed(path: Path, purpose: str, limit: int) -> bytes:
    """The payload of a sealed file; FileNotFoundError if there is none, Unsealed (why) if it
    is not this user's for ``purpose``: a link, not a regular file, larger than ``limit``
    (nothing is read then), unreadable, or without a valid seal."""
    secret = user_secret()
    if secret is None:
        raise Unsealed("caches are off")
    try:
        with open_regular(path, follow_links=False) as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > limit + len(MAGIC) + 65:
                raise Unsealed(f"{size:,} bytes, more than the limit of {limit:,}")
            blob = fh.read(size + 1)  # it may have grown meanwhile: checked below
    except FileNotFoundError:
        raise
    except UnusableFile as exc:
        raise Unsealed(str(exc)) from None
    except OSError as exc:
        raise Unsealed(f"unreadable ({exc.strerror or exc})") from None
    head, payload = blob[: len(MAGIC) + 65], memoryview(blob)[len(MAGIC) + 65 :]
    if len(payload) > limit or not head.startswith(MAGIC) or head[-1:] != b"\n":
        raise Unsealed("not written by you (no seal)")
    if not hmac.compare_digest(head[len(MAGIC) : -1], _mac(secret, purpose, payload)):
        raise Unsealed("not written by you, or changed since (its seal does not match)")
    return bytes(payload)


def read_sealed_json(path: Path, purpose: str, limit: int) -> tuple[Any, str]:
    """(the JSON value of a sealed file, "") or (None, why it cannot be used);
    FileNotFoundError if there is none."""
    try:
        return json.loads(read_sealed(path, purpose, limit)), ""
    except Unsealed as exc:
        return None, str(exc)
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, nested too deep
        return None, f"unreadable ({type(exc).__name__})"


def write_sealed_json(path: Path, value: Any, purpose: str) -> bool:
    """`write_sealed` of ``value`` as JSON; False if it was not written (no secret, or the
    folder refused: a cache, which costs only time)."""
    try:
        return write_sealed(path, json.dumps(value).encode(), purpose)
    except OSError:
        return False
