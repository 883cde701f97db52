"""Perceptual hashes cached by image content (sha256), so a repeated audit decodes nothing.

The cache is ``<features>/.audit/phash.h5`` (hidden: ``find_stores`` must not take it for a
feature store): datasets ``id`` (sha256 hex) and ``hash`` (N, LEVELS, WORDS) uint64 (one
hash per crop level), attribute ``method``.
A different ``audit.phash.METHOD`` discards the cache. Only sha256s not yet cached are decoded,
and the file is replaced atomically, so an interrupted audit loses at most its own new work.
The file is sealed with this user's secret (`cxr.trust`) and checked (ids, shapes, sizes)
before a hash is decompressed: a cache planted in a shared features folder could otherwise
make any two films duplicates. One that is not this user's or is malformed is a note, and the
hashes are computed again; an ``.audit`` that is a symbolic link is neither read nor written.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterable
from pathlib import Path

import h5py
import numpy as np
from joblib import Parallel, delayed

from cxr.audit.phash import LEVELS, METHOD, WORDS, phash
from cxr.errors import CxrError
from cxr.extract.images import MAX_FILE_BYTES, Rejected, decode_pixels
from cxr.files import UnusableFile, own_folder, read_regular
from cxr.progress import Progress, Silent
from cxr.trust import Unsealed, read_sealed, write_sealed

CACHE_NAME = Path(".audit") / "phash.h5"
DECODE_WORKERS = 2
LIMIT = 4 << 30  # the cache file: about 200 bytes an image
SHA256 = re.compile(r"^[0-9a-f]{64}$")


def cache_path(features_dir: Path) -> Path:
    return Path(features_dir) / CACHE_NAME


def read_cache(path: Path) -> tuple[dict[str, np.ndarray], str]:
    """(sha256 -> hash, "") ; ({}, why it was not used) for a cache that is not this user's or
    is malformed; ({}, "") when there is none or it is from another method."""
    try:
        data = read_sealed(path, f"phash:{path.name}", LIMIT)
    except FileNotFoundError:
        return {}, ""
    except Unsealed as exc:
        return {}, f"{path}: hash cache ignored ({exc}); hashing again"
    except OSError as exc:
        return {}, f"{path}: hash cache not used ({exc.strerror or exc})"
    try:
        with h5py.File(io.BytesIO(data), "r") as f:
            if f.attrs.get("method") != METHOD:
                return {}, ""
            ids, hashes = f["id"], f["hash"]
            n = ids.shape[0] if ids.ndim == 1 else -1
            if h5py.check_string_dtype(ids.dtype) is None or n < 0 or n > len(data) // 64:
                raise ValueError("ids are not one column of text")
            if hashes.dtype != np.uint64 or hashes.shape != (n, LEVELS, WORDS):
                raise ValueError(f"hashes of shape {hashes.shape}, expected {(n, LEVELS, WORDS)}")
            listed = ids.asstr()[()].tolist()
            found = hashes[()]
    except (OSError, KeyError, ValueError, TypeError, UnicodeError) as exc:
        return {}, f"{path}: hash cache ignored (malformed: {exc}); hashing again"
    if not all(SHA256.match(i) for i in listed):
        return {}, f"{path}: hash cache ignored (malformed ids); hashing again"
    return dict(zip(listed, found, strict=True)), ""


def write_cache(path: Path, cache: dict[str, np.ndarray]) -> None:
    """The cache, sealed, replacing the file atomically; OSError (an UnusableFile for an
    ``.audit`` that is a link) if it cannot be written."""
    own_folder(path.parent)
    image = io.BytesIO()
    with h5py.File(image, "w") as f:
        f.attrs["method"] = METHOD
        ids = sorted(cache)
        f.create_dataset("id", data=np.asarray(ids, dtype=object), dtype=h5py.string_dtype())
        empty = np.zeros((0, LEVELS, WORDS), np.uint64)
        data = np.stack([cache[i] for i in ids]) if ids else empty
        f.create_dataset("hash", data=data, compression="gzip")
    write_sealed(path, image.getvalue(), f"phash:{path.name}")


def _hash_file(item: tuple[str, Path]) -> tuple[str, np.ndarray | str]:
    """(sha256, file) -> (sha256, hash) or (sha256, reason it has no hash)."""
    expected, file = item
    try:
        data = read_regular(file, MAX_FILE_BYTES)  # the features run's reader, the same limits
    except UnusableFile as exc:
        return expected, f"{file}: {exc}"
    except OSError as exc:
        return expected, f"{file}: unreadable ({exc.strerror or exc})"
    if hashlib.sha256(data).hexdigest() != expected:
        return expected, f"{file}: changed since `cxr features` (sha256 differs); re-extract"
    try:
        return expected, phash(decode_pixels(data, file.name))
    except Rejected as exc:
        return expected, f"{file}: {exc}"
    except Exception as exc:  # a decoder's own bug costs one file's hash, never the audit
        return expected, f"{file}: cannot decode ({type(exc).__name__}: {str(exc)[:200]})"


def hashes_for(
    ids: Iterable[str],
    files: Iterable[Path],
    features_dir: Path,
    progress: Progress | None = None,
    jobs: int = DECODE_WORKERS,
) -> tuple[dict[str, np.ndarray], list[str], int]:
    """Hashes of every id (decoding only uncached ones); returns (hashes, notes, n_computed).

    ``files[i]`` is where the image with ``ids[i]`` lives. A missing file is a CxrError naming it
    (moved data: use --data); an undecodable or changed file gets a note and no hash.
    """
    path = cache_path(features_dir)
    cache, problem = read_cache(path)
    notes = [problem] if problem else []
    todo = {}
    for sha, file in zip(ids, files, strict=True):
        if sha not in cache and sha not in todo:
            if not file.is_file():
                raise CxrError(f"{file}: image not found (moved? give the data folder with --data)")
            todo[sha] = file
    if todo:
        steps = progress or Silent()
        # Threads here (decoding releases the GIL); tasks on the workers under a Dask backend.
        hashed = Parallel(n_jobs=jobs, prefer="threads", return_as="generator")(
            delayed(_hash_file)(item) for item in todo.items()
        )
        with steps.step("perceptual hashes of new images", len(todo)) as done:
            for sha, result in hashed:
                if isinstance(result, str):
                    notes.append(result)
                else:
                    cache[sha] = result
                done(1)
        try:
            write_cache(path, cache)
        except OSError as exc:
            reason = exc if isinstance(exc, UnusableFile) else exc.strerror
            notes.append(f"{path}: hash cache not written ({reason}); the next run re-decodes")
    return cache, notes, len(todo)
