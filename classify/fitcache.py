"""The fit cache: out-of-fold predictions kept beside the features folder, so a re-run refits
only the heads whose inputs changed.

An entry is one head's `OutOfFold` on one (data, splits, parameters, seed) as ``<key>.npz`` in
``features/.fits/``: plain arrays plus its key, best parameters and warnings as JSON bytes, never
a pickle (read with ``allow_pickle=False``). The key is the sha256 of a canonical JSON of
everything that decides the predictions: the digest of X, y and groups, every split's indices,
the head and its parameters after defaults, --search and its grid, the covariate layout, the seed,
the library versions and `FIT_VERSION`. Every entry is sealed with this user's secret
(`cxr.trust`): the folder travels with a shared features folder, and an entry someone else
wrote (its key is computable from public data) would otherwise decide the scores. An entry that
is not sealed by this user, is not a regular file, is larger than its bound, holds another key,
or arrays that do not fit the task (shape, type, fold indices, probabilities that are not
finite, between 0 and 1 and summing to 1) is ignored with one warning and fitted again; its zip
directory is checked before any array is read. Writes are atomic (`cxr.files.replace_file`),
so concurrent runs are safe; the folder is bounded (oldest-used entries evicted), refused if
it is a symbolic link, and can be deleted at any time.

Beside the fits, the same folder keeps JSON results of the analyses a run repeats on unchanged
inputs (each result's bootstrap, the confound checks, the neighbourhoods, the paired comparisons):
`remember` computes one, or reads it under `content_key`, the sha256 of its kind, its code's
version, the library versions and its inputs (arrays by digest). A value is kept only if JSON
gives it back as it is, so a report is the same with the cache, without it, or with it deleted.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from cxr.classify.predictions import OutOfFold
from cxr.classify.provenance import library_versions
from cxr.files import UnusableFile, own_folder
from cxr.trust import CacheWarning, Unsealed, read_sealed, read_sealed_json, write_sealed

if TYPE_CHECKING:
    from cxr.classify.covariates import Covariates
    from cxr.classify.folds import Split
    from cxr.classify.tasks import TaskData

FIT_VERSION = 1  # bump when the fitting code changes what a fit predicts
FOLDER = ".fits"
MAX_BYTES = 1 << 30  # 1 GiB
MAX_ENTRY = 256 << 20  # one head's predictions: 112k rows x 15 classes is 14 MB
MAX_JSON = 1 << 24  # one result's scores are kilobytes
ARRAYS = ("row", "y", "proba", "fold")
__all__ = ["CacheWarning", "FitCache", "content_key", "remember"]
T = TypeVar("T")


@functools.cache
def _versions() -> dict[str, str]:
    """The library versions, read once per process (each read parses package metadata)."""
    return library_versions()


def _digest(*arrays: np.ndarray | None) -> str:
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes() if a.dtype != object else json.dumps(a.tolist()).encode())
    return h.hexdigest()


def data_key(
    data: TaskData,
    groups: np.ndarray | None,
    splits: list[Split],
    *,
    seed: int,
    search: bool,
    inputs: Covariates | None,
) -> dict[str, Any]:
    """The key parts that all heads of one `run_splits` call share."""
    from cxr import __version__

    return {
        "fit_version": FIT_VERSION,
        "cxr": __version__,
        "versions": _versions(),
        "data": _digest(data.X, data.y, groups),
        "classes": list(data.classes),
        "splits": [[s.repeat, s.fold, s.name, _digest(s.train), _digest(s.test)] for s in splits],
        "seed": seed,
        "search": search,
        "inputs": asdict(inputs) if inputs is not None else None,
    }


def scores_key(*arrays: np.ndarray, classes: list[str], settings: object) -> str:
    """sha256 of what decides one result's scores: its predictions, units and bootstrap."""
    parts = [FIT_VERSION, _versions(), _digest(*arrays), classes, repr(settings)]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def content_key(kind: str, version: int, *inputs: Any) -> str:
    """sha256 of what decides one analysis' result: ``kind``, ``version`` (bumped when its code
    changes what it computes), this tool's and the libraries' versions, and ``inputs`` (arrays by
    digest, in mappings and sequences too; anything else must be plain JSON)."""
    from cxr import __version__

    parts = [FIT_VERSION, kind, version, __version__, _versions(), _keyed(list(inputs))]
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _keyed(value: Any) -> Any:
    """``value`` with every array replaced by its digest (a TypeError for what JSON cannot
    spell exactly: a key part must never be a lossy ``repr``)."""
    if isinstance(value, np.ndarray):
        return {"array": _digest(value)}
    if isinstance(value, Mapping):
        return {"mapping": [[str(k), _keyed(v)] for k, v in value.items()]}
    if isinstance(value, list | tuple):
        return [_keyed(v) for v in value]
    if value is None or isinstance(value, str | bool | int | float):
        return value
    raise TypeError(f"not a key part: {type(value).__name__}")


def remember(cache: FitCache | None, key: str, compute: Callable[[], T]) -> T:
    """``compute()``, or the value kept under ``key`` by an earlier run (None: no cache)."""
    if cache is None:
        return compute()
    found = cache.get_json(key)
    if found is not None:
        return found
    value = compute()
    cache.put_json(key, value)
    return value


def _plain(value: Any) -> bool:
    """Made of what JSON gives back with the same types: dicts with text keys, lists, text,
    numbers, booleans and None (a tuple or a number key would come back as something else)."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or type(value) in (str, bool, int, float)


def entry_key(shared: dict[str, Any], head: str, params: dict, grid: dict | None) -> str:
    """sha256 of the canonical JSON of every key part of one head's fits."""
    parts = {**shared, "head": head, "params": params, "grid": grid}
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


class FitCache:
    """``<key>.npz`` entries in ``folder``, at most ``max_bytes`` in all."""

    def __init__(self, folder: Path, max_bytes: int = MAX_BYTES) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self._writable: bool | None = None

    def writable(self) -> bool:
        """The folder can take entries (made if missing): not a symbolic link, which would
        make writes and evictions land in the folder it names (one warning then)."""
        if self._writable is None:
            try:
                own_folder(self.folder)
                self._writable = True
            except UnusableFile as exc:
                warnings.warn(f"{self.folder}: fit cache not used ({exc})", CacheWarning, 4)
                self._writable = False
            except OSError:  # a read-only features folder: no cache, and nothing to say
                self._writable = False
        return self._writable

    def has(self, key: str) -> bool:
        """An entry exists under ``key`` (a hint, not a check: `get` may still refuse it)."""
        return os.path.lexists(self.folder / f"{key}.npz")

    def get(
        self, key: str, expected_rows: np.ndarray, y: np.ndarray, n_classes: int, fold: np.ndarray
    ) -> OutOfFold | None:
        """The cached `OutOfFold` of ``key``, or None (missing, or unusable with a warning);
        ``fold``: the split index every expected row must have."""
        path = self.folder / f"{key}.npz"
        if not os.path.lexists(path):
            return None
        found = self._read(path, key, expected_rows, y, n_classes, fold)
        if isinstance(found, str):
            warnings.warn(f"{path}: cached fit ignored ({found}); fitting again", CacheWarning, 2)
            return None
        with contextlib.suppress(OSError):
            os.utime(path, follow_symlinks=False)  # recently used: evicted last
        return found

    @staticmethod
    def _read(
        path: Path,
        key: str,
        expected_rows: np.ndarray,
        y: np.ndarray,
        n_classes: int,
        fold: np.ndarray,
    ) -> OutOfFold | str:
        """The entry at ``path``, or why it cannot be used (sealed by this user, bounded before
        it is read, never following a link, never blocking on a FIFO, never unpickling)."""
        try:
            arrays = _arrays(read_sealed(path, f"fit:{path.name}", MAX_ENTRY))
            meta = json.loads(arrays["meta"].tobytes().decode())
        except FileNotFoundError:
            return "gone meanwhile"
        except Unsealed as exc:
            return str(exc)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError, RecursionError) as e:
            return f"unreadable ({type(e).__name__})"
        row, proba, folds, labels = arrays["row"], arrays["proba"], arrays["fold"], arrays["y"]
        if not isinstance(meta, dict) or meta.get("key") != key:
            return "it holds another key"
        n = len(expected_rows)
        if (
            row.dtype.kind != "i"
            or folds.dtype.kind != "i"
            or labels.dtype.kind != "i"
            or proba.dtype != np.float64
            or proba.shape != (n, n_classes)
            or not np.array_equal(row, expected_rows)
            or not np.array_equal(labels, y[expected_rows])
            or not np.array_equal(folds, fold)
            or not isinstance(meta.get("best_params"), list)
            or not isinstance(meta.get("warnings"), list)
            or not all(isinstance(w, str) for w in meta["warnings"])
        ):
            return "its arrays do not fit this task"
        if not (np.isfinite(proba).all() and (proba >= 0).all() and (proba <= 1).all()):
            return "its probabilities are not all between 0 and 1"
        if n and not np.allclose(proba.sum(axis=1), 1.0, atol=1e-6):
            return "its probabilities do not sum to 1"
        return OutOfFold(row, labels, proba, folds, meta["best_params"], meta["warnings"])

    def get_json(self, key: str) -> Any | None:
        """The JSON value kept under ``key`` (``<key>.json``), or None."""
        path = self.folder / f"{key}.json"
        if not os.path.lexists(path):
            return None
        try:
            found, reason = read_sealed_json(path, f"scores:{path.name}", MAX_JSON)
        except FileNotFoundError:
            return None
        if not isinstance(found, dict) or found.get("key") != key or "value" not in found:
            why = reason or "it holds another key"
            warnings.warn(
                f"{path}: cached result ignored ({why}); computing it again", CacheWarning, 2
            )
            return None
        with contextlib.suppress(OSError):
            os.utime(path, follow_symlinks=False)
        return found["value"]

    def put_json(self, key: str, value: Any) -> None:
        """Keep ``value`` under ``key`` if it survives JSON unchanged (NaN included)."""
        if not _plain(value):
            return
        try:
            text = json.dumps({"key": key, "value": value})
        except (TypeError, ValueError):
            return
        if json.dumps(json.loads(text)) != text or len(text) > MAX_JSON:
            return
        self._write(key, ".json", text.encode())

    def put(self, key: str, oof: OutOfFold) -> None:
        """Keep ``oof`` under ``key`` (atomically), unless its JSON parts do not round-trip."""
        meta = {"key": key, "best_params": oof.best_params, "warnings": oof.warnings}
        try:
            text = json.dumps(meta)
        except (TypeError, ValueError):
            return
        if json.loads(text) != meta:  # a tuple would come back as a list: not the same result
            return
        buffer = io.BytesIO()
        arrays = {name: getattr(oof, name) for name in ARRAYS}
        np.savez(buffer, **arrays, meta=np.frombuffer(text.encode(), dtype=np.uint8))
        self._write(key, ".npz", buffer.getvalue())

    def _write(self, key: str, suffix: str, content: bytes) -> None:
        """Sealed and atomic (`cxr.trust.write_sealed`); a read-only or vanished folder only
        costs the next run its fits."""
        if not self.writable():
            return
        purpose = "fit" if suffix == ".npz" else "scores"
        try:
            write_sealed(self.folder / f"{key}{suffix}", content, f"{purpose}:{key}{suffix}")
        except OSError:
            return
        self._evict()

    def _evict(self) -> None:
        """Delete the least recently used entries beyond the bound."""
        entries = []
        for path in [*self.folder.glob("*.npz"), *self.folder.glob("*.json")]:
            try:
                info = os.lstat(path)
            except OSError:
                continue
            entries.append((info.st_mtime, info.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size


def _arrays(data: bytes) -> dict[str, np.ndarray]:
    """The arrays of an npz entry, its zip directory checked first: members stored, not
    compressed (as `np.savez` writes them), so none can inflate beyond the entry's own size."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = archive.infolist()
        names = {f"{name}.npy" for name in (*ARRAYS, "meta")}
        if {m.filename for m in members} != names or len(members) != len(names):
            raise ValueError("other members than an entry's")
        if any(m.compress_type != zipfile.ZIP_STORED or m.file_size > len(data) for m in members):
            raise ValueError("compressed or oversized members")
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {name: npz[name] for name in (*ARRAYS, "meta")}
