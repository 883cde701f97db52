"""The on-disk contract between stage 1 (extract) and stage 2 (classify).

This is the only module that knows how a feature store is laid out in HDF5, in both directions.
It imports numpy and h5py only, never TensorFlow, so stage 2 and `cxr --help` stay fast.

A store is one file per backbone, ``<dir>/<backbone>.h5``::

    /X                 float32 (N, D), chunked, gzip + shuffle, maxshape (None, D)
    /rows/id           sha256 of the file's bytes (hex); not unique if the data holds copies
    /rows/path         path relative to the data root (folder) or as written in the manifest
    /rows/label        class label
    /rows/patient_id   "" when unknown
    /rows/source       "" when unknown
    /rows/meta/<col>   any other manifest column, one string dataset per column
    /rejected/{id,path,label,reason}   files that could not be used, with the reason
    attrs              see ``StoreAttrs`` below: every attribute, who sets it and what it means

A published store file is immutable: the writer builds a new file beside it and swaps it in with an
atomic rename, so any number of readers can hold it open while a run goes on. Work in progress lives
in shard files under ``<dir>/.<backbone>.parts/`` (same layout minus the row metadata); each shard
is itself written then renamed, so a crash never exposes half a batch.

A store read from disk may be damaged or made by someone else, so every read checks it once
(``_checked``), before anything is decoded: the attributes stage 2 relies on and their types;
``X`` 2-D float32 of the recorded dim with one row per id; every column 1-D text of that length;
everything a plain dataset inside this file (no external or soft link, no external raw storage,
no virtual dataset: a store must not make the tool read a file its user did not name); with the
vectors loaded, every value finite. One StoreError names the store and what is wrong; `cxr info`
runs the same checks from the datasets' metadata, without reading X.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import h5py
import numpy as np

from cxr.errors import CxrError
from cxr.files import replace_file
from cxr.settings import flag

SCHEMA_VERSION = 1
SUFFIX = ".h5"
ROW_COLUMNS = ("id", "path", "label", "patient_id", "source")
REJECT_COLUMNS = ("id", "path", "label", "reason")
# Attributes that must agree before two pieces of work may share one store. The runtime is not
# one: f32 runtimes agree within a tolerance (checked on stored films before a second one adds
# rows), so it is provenance (``runtimes``); the precision is identity.
FINGERPRINT = (
    "backbone",
    "input_size",
    "resize",
    "weights_sha256",
    "weights_seed",
    "precision",
    "region",
    "region_box",
    "region_masks_sha256",
    "calibration_sha256",
    "decode",
)
# What a store written before an attribute existed had, in effect.
FINGERPRINT_DEFAULTS = {
    "precision": "f32",
    "region": "full",
    "region_box": 0.0,
    "region_masks_sha256": "",
    "calibration_sha256": "",
    "decode": "exact",
}
FULL = "full"  # the region of a store of whole films (named after its backbone alone)
EXACT = "exact"  # the decode of a store of every pixel (`cxr.extract.settings`)
STR = h5py.string_dtype(encoding="utf-8")
ROW_CHUNK = 256
WRITE_BLOCK = 16 * ROW_CHUNK  # rows converted and compressed at a time when writing X
REBUILD = (  # a command line, also in `cxr info`'s JSON: written with the CLI's flags
    f"`cxr features DATA -b {{backbone}} {flag('rebuild')}` (with the same {flag('weights')}) "
    "moves it aside and builds it again"
)


class StoreAttrs(TypedDict, total=False):
    """Every attribute of a store file. The first group is the run's (stage 1 builds it, see
    ``cxr.extract.runner.store_attrs``); ``FINGERPRINT`` is the part that must agree before
    embeddings may share one store. The writer adds the second group when it publishes."""

    backbone: str  # registry name, e.g. mobilenet_v2
    constructor: str  # Keras constructor and its arguments, e.g. MobileNetV2(alpha=1.0)
    dim: int  # embedding length D
    input_size: int  # square input side in pixels
    preprocessing: str  # e.g. keras.applications.mobilenet_v2.preprocess_input
    pooling: str  # "global average"
    resize: str  # squash | pad
    weights: str  # imagenet | file | random
    weights_file: str  # file name of the weights ("" for random)
    weights_sha256: str  # sha256 of the weight file ("" for random)
    weights_seed: int  # seed of random weights, -1 otherwise
    weights_path: str  # where the weight file was (a hint for re-runs and predict, not identity)
    runtimes: str  # JSON list of the runtimes that wrote rows, first first (`runtimes_of`)
    runtime: str  # stores before 0.4: the one runtime (absent before 0.3: tensorflow)
    precision: str  # f32 | bf16 | int8 (absent in stores before 0.3: f32)
    runtime_max_abs_diff: float  # largest |runtime - TensorFlow| measured (0: TensorFlow only)
    region: str  # full | centre-masked | centre-only | lungs-only | lungs-masked (absent: full)
    region_box: float  # the central box's share of each side (centre regions; 0 otherwise)
    region_masks_sha256: str  # digest of every film's mask (lungs regions; "" otherwise)
    region_masks: str  # where the masks were (a hint, not identity)
    calibration_size: int  # int8: films in the calibration sample (absent otherwise)
    calibration_seed: int  # int8: the seed that drew them
    calibration_sha256: str  # int8: digest of the sampled files' sha256s (absent: "")
    decode: str  # exact | draft (JPEG at a reduced scale; absent in older stores: exact)
    versions: str  # JSON object: python, tensorflow, keras, h5py, numpy, PIL, pydicom, cxr
    # Set when the store is published:
    data_root: str  # folder the rows' paths are relative to
    manifest: str  # manifest CSV used, "" for class folders
    layout: str  # how the data set was read (`cxr.extract.layouts`; absent before 0.3: folders)
    created: str  # first publication, ISO 8601
    updated: str  # this publication, ISO 8601
    schema_version: int  # SCHEMA_VERSION of the writer


class StoreError(CxrError):
    """A store is missing, unreadable or inconsistent; the message names the file."""


class DamagedShard(OSError):
    """A shard whose layout is wrong: an OSError, as the writer treats an unreadable shard."""


# Attributes every store must have (stage 2 reads them unguarded), and the types of the others.
REQUIRED_ATTRS = {"backbone": str, "dim": int, "input_size": int, "schema_version": int}
ATTR_TYPES = {
    **REQUIRED_ATTRS,
    "resize": str,
    "weights": str,
    "weights_file": str,
    "weights_sha256": str,
    "weights_seed": int,
    "weights_path": str,
    "runtimes": str,
    "runtime": str,
    "precision": str,
    "region": str,
    "region_box": float,
    "region_masks_sha256": str,
    "region_masks": str,
    "calibration_size": int,
    "calibration_seed": int,
    "calibration_sha256": str,
    "decode": str,
    "runtime_max_abs_diff": float,
    "data_root": str,
    "manifest": str,
    "layout": str,
    "created": str,
    "updated": str,
}
MAX_ROWS = 20_000_000  # plausibility: 50 times MIMIC-CXR; a hostile file may declare anything
MAX_DIM = 1 << 16


@dataclass(frozen=True)
class Table:
    """Columns of equal length, all strings; the unit the store reads and writes."""

    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def take(self, index: np.ndarray) -> Table:
        return Table({k: v[index] for k, v in self.columns.items()})

    @classmethod
    def from_records(cls, records: list[Mapping[str, str]], names: tuple[str, ...]) -> Table:
        return cls({n: _strings([r.get(n, "") for r in records]) for n in names})


@dataclass(frozen=True)
class Reject:
    """A file that could not be used, and why: one record from discovery to the store's
    ``/rejected`` table (and the rejects a run reports)."""

    path: str
    reason: str
    id: str = ""  # sha256 of its bytes, when they could be read
    label: str = ""

    def record(self) -> dict[str, str]:
        return {"id": self.id, "path": self.path, "label": self.label, "reason": self.reason}


def reject_table(rejects: Sequence[Reject]) -> Table:
    return Table.from_records([r.record() for r in rejects], REJECT_COLUMNS)


@dataclass(frozen=True)
class StoreContent:
    """Everything one store file holds, in memory."""

    attrs: Mapping[str, Any]
    rows: Table
    meta: Table
    X: np.ndarray | Sequence[np.ndarray]  # (N, dim), or N row vectors (written block by block)
    rejected: Table = field(
        default_factory=lambda: Table({c: _strings([]) for c in REJECT_COLUMNS})
    )


def store_name(attrs: Mapping) -> str:
    """A store's name, and its file's: the backbone's for whole films at f32,
    ``backbone@region`` for a store of masked films (``mobilenet_v2@centre-masked``),
    ``+precision`` for other vectors than f32's (``mobilenet_v2+int8``) and ``+draft`` for
    films decoded at a reduced scale (``mobilenet_v2+int8+draft``), so such stores sit beside
    the exact f32 one and `cxr evaluate` pairs them."""
    region = str(attrs.get("region") or FULL)
    precision = str(attrs.get("precision") or "f32")
    name = str(attrs["backbone"]) if region == FULL else f"{attrs['backbone']}@{region}"
    name = name if precision == "f32" else f"{name}+{precision}"
    return name if str(attrs.get("decode") or EXACT) == EXACT else f"{name}+{attrs['decode']}"


def store_path(directory: Path | str, name: str) -> Path:
    """``<directory>/<name>.h5``, the name a backbone's or ``store_name``'s."""
    return Path(directory) / f"{name}{SUFFIX}"


def parts_dir(directory: Path | str, backbone: str) -> Path:
    return Path(directory) / f".{backbone}.parts"


def lock_path(directory: Path | str, backbone: str) -> Path:
    return Path(directory) / f".{backbone}.lock"


def committed_parts(directory: Path | str) -> dict[str, int]:
    """Each backbone's shards committed and not yet published (a run that stopped), by name."""
    return {
        parts.name[1 : -len(".parts")]: len(list(parts.glob("*.h5")))
        for parts in sorted(Path(directory).glob(".*.parts"))
        if parts.is_dir()
    }


def orphan_parts(directory: Path | str) -> dict[str, int]:
    """Backbones with committed shards but no published store (a first run that stopped)."""
    return {
        backbone: shards
        for backbone, shards in committed_parts(directory).items()
        if not store_path(directory, backbone).exists()
    }


def hashes_path(directory: Path | str) -> Path:
    """The sha256 cache of the data files (cxr.extract.hashing.HashCache) beside the stores."""
    return Path(directory) / ".hashes.json"


def published_attrs(
    run: StoreAttrs,
    *,
    data_root: Path,
    manifest: Path | None,
    layout: str,
    created: str | None,
    now: str,
) -> StoreAttrs:
    """The run's attributes plus where the rows came from and when (``created`` kept if known)."""
    return StoreAttrs(
        **run,
        data_root=str(data_root),
        manifest=str(manifest or ""),
        layout=layout,
        created=created or now,
        updated=now,
        schema_version=SCHEMA_VERSION,
    )


def runtimes_text(names: Sequence[str]) -> str:
    """The ``runtimes`` attribute: the runtimes that wrote a store's rows, each once, in order."""
    return json.dumps(list(dict.fromkeys(names)))


def runtimes_of(attrs: Mapping) -> list[str]:
    """The runtimes that wrote a store's (or a shard's) rows: ``runtimes``, else the one
    ``runtime`` of a store before 0.4, else TensorFlow (before 0.3). Damaged if malformed."""
    if "runtimes" not in attrs:
        return [str(attrs.get("runtime") or "tensorflow")]
    try:
        names = json.loads(attrs["runtimes"])
    except (TypeError, ValueError):
        names = None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise Damaged(f"attribute runtimes is {attrs['runtimes']!r}, not a JSON list of names")
    return names


def fingerprint(attrs: Mapping) -> dict:
    return {k: _plain(attrs.get(k, FINGERPRINT_DEFAULTS.get(k))) for k in FINGERPRINT}


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode()
    return value


def _strings(values) -> np.ndarray:
    return np.asarray(list(values), dtype=object).astype(str).astype(object)


def _write_strings(group: h5py.Group, name: str, values: np.ndarray) -> None:
    """One column of text. HDF5 text cannot hold a NUL: one from any source (a sheet's cell, a
    rejected path) is dropped here, so it costs that cell its NUL, never the publish."""
    text = np.asarray(values, dtype=object)
    if "\0" in "".join(text):
        text = np.asarray([value.replace("\0", "") for value in text], dtype=object)
    group.create_dataset(
        name,
        data=text,
        dtype=STR,
        maxshape=(None,),
        chunks=(ROW_CHUNK,) if len(values) else (1,),
        compression="gzip",
    )


def _write_matrix(f: h5py.File, X: np.ndarray | Sequence[np.ndarray], dim: int) -> None:
    """The embeddings dataset. Given row vectors (the writer's cache), it is filled a chunk at a
    time: publishing never holds a second (N, dim) copy of them."""
    n = len(X)
    out = f.create_dataset(
        "X",
        shape=(n, dim),
        dtype=np.float32,
        maxshape=(None, dim),
        chunks=(max(1, min(ROW_CHUNK, n)), dim),
        compression="gzip",
        compression_opts=4,
        shuffle=True,
    )
    for start in range(0, n, WRITE_BLOCK):
        block = np.asarray(X[start : start + WRITE_BLOCK], dtype=np.float32)
        if block.ndim != 2 or block.shape[1] != dim:
            raise ValueError(f"embeddings of shape {block.shape} do not fit the store's dim {dim}")
        out[start : start + len(block)] = block


def _read_table(group: h5py.Group | None, names) -> Table:
    if group is None:
        return Table({n: _strings([]) for n in names})
    return Table({n: _strings(group[n].asstr()[()]) for n in names})


def write_atomic(path: Path, content: StoreContent) -> None:
    """Write a complete store file beside ``path`` and rename it into place (crash-safe)."""
    with _in_memory() as (f, image):
        for key, value in {**content.attrs, "schema_version": SCHEMA_VERSION}.items():
            f.attrs[key] = value
        _write_matrix(f, content.X, int(content.attrs["dim"]))
        rows = f.create_group("rows")
        for name in ROW_COLUMNS:
            _write_strings(rows, name, content.rows[name])
        meta = rows.create_group("meta")
        for name, values in content.meta.columns.items():
            _write_strings(meta, name, values)
        rejected = f.create_group("rejected")
        for name in REJECT_COLUMNS:
            _write_strings(rejected, name, content.rejected[name])
    _publish_bytes(image, path)


def read_attrs(path: Path) -> dict:
    """A store's attributes only (no rows, no vectors); {} if the file is not readable."""
    try:
        with h5py.File(path, "r", locking=False) as f:
            return {k: _plain(v) for k, v in f.attrs.items()}
    except OSError:
        return {}


def read_content(path: Path, *, load_X: bool = True) -> StoreContent:
    """Read a whole store file, checked (see the module's docstring); StoreError naming the file
    and what is wrong. ``load_X=False`` (`cxr info`) checks X's shape and type without reading
    it, and gives an empty (0, dim) X."""
    rebuild = REBUILD.format(backbone=path.stem)
    try:
        with h5py.File(path, "r", locking=False) as f:
            attrs = {k: _plain(v) for k, v in f.attrs.items()}
            if attrs.get("schema_version") is None or "X" not in f or "rows" not in f:
                raise StoreError(
                    f"{path}: not a cxr feature store (missing schema_version, X or rows); "
                    f"{rebuild}"
                )
            if _is_int(attrs["schema_version"]) and attrs["schema_version"] > SCHEMA_VERSION:
                raise StoreError(
                    f"{path}: store schema {attrs['schema_version']} is newer than this tool "
                    f"understands ({SCHEMA_VERSION}); upgrade cxr, or {rebuild}"
                )
            meta_names = _checked(f, attrs)
            rows = _read_table(f["rows"], ROW_COLUMNS)
            meta = _read_table(f["rows/meta"] if meta_names else None, meta_names)
            rejected = _read_table(f.get("rejected"), REJECT_COLUMNS)
            X = f["X"][()] if load_X else np.empty((0, int(attrs["dim"])), np.float32)
            _check_finite(X)
    except StoreError:
        raise
    except Damaged as exc:
        raise StoreError(f"{path}: damaged feature store: {exc}; {rebuild}") from None
    except (OSError, KeyError, ValueError, TypeError) as exc:
        reason = str(exc).splitlines()[0]
        raise StoreError(f"{path}: cannot read feature store ({reason}); {rebuild}") from None
    return StoreContent(attrs=attrs, rows=rows, meta=meta, X=X, rejected=rejected)


def _check_finite(X: np.ndarray) -> None:
    bad = [  # a block at a time: no N x D mask
        start + np.flatnonzero(~np.isfinite(X[start : start + WRITE_BLOCK]).all(axis=1))
        for start in range(0, len(X), WRITE_BLOCK)
    ]
    rows = np.concatenate(bad) if bad else np.empty(0, int)
    if len(rows):
        raise Damaged(
            f"{len(rows)} row(s) have NaN or infinite features in X (the first is row {rows[0]})"
        )


class Damaged(Exception):
    """What is wrong with a store or shard file's layout (one line, without the file)."""


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _checked(f: h5py.File, attrs: Mapping) -> tuple[str, ...]:
    """Damaged unless the file has the layout of a store; returns its metadata columns."""
    for name, kind in ATTR_TYPES.items():
        if name not in attrs:
            if name in REQUIRED_ATTRS:
                raise Damaged(f"attribute {name} is missing")
            continue
        value = attrs[name]
        fits = _is_int(value) if kind is int else isinstance(value, kind)
        if kind is float:
            fits = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not fits:
            raise Damaged(f"attribute {name} is {value!r}, not {kind.__name__}")
    runtimes_of(attrs)
    dim = attrs["dim"]
    if not 1 <= dim <= MAX_DIM or attrs["input_size"] < 1:
        raise Damaged(f"attribute dim {dim} or input_size {attrs['input_size']} is impossible")
    rows = _plain_dataset(f, "rows/id", text=True)
    n = rows.shape[0]
    X = _plain_dataset(f, "X")
    if X.ndim != 2 or X.dtype != np.float32 or X.shape != (n, dim):
        raise Damaged(
            f"X is {X.dtype} {X.shape}, expected float32 ({n}, {dim}): one row of the recorded "
            "dim per id"
        )
    for name in ROW_COLUMNS:
        _plain_dataset(f, f"rows/{name}", text=True, length=n)
    meta = f["rows"].get("meta", getlink=True)
    names: tuple[str, ...] = ()
    if meta is not None:
        _plain_link(f, "rows/meta")
        names = tuple(f["rows/meta"])
        for name in names:
            _plain_dataset(f, f"rows/meta/{name}", text=True, length=n)
    if "rejected" in f:
        _plain_link(f, "rejected")
        m = _plain_dataset(f, "rejected/id", text=True).shape[0]
        for name in REJECT_COLUMNS:
            _plain_dataset(f, f"rejected/{name}", text=True, length=m)
    return names


def _plain_link(f: h5py.File, name: str) -> None:
    parent, _, leaf = name.rpartition("/")
    link = (f[parent] if parent else f).get(leaf, getlink=True)
    if link is None:
        raise Damaged(f"{name} is missing")
    if not isinstance(link, h5py.HardLink):
        raise Damaged(f"{name} is a link to somewhere else ({type(link).__name__})")


def _plain_dataset(
    f: h5py.File, name: str, *, text: bool = False, length: int | None = None
) -> h5py.Dataset:
    """The dataset at ``name``, held in this file: no link out, no external raw storage, not
    virtual; 1-D text of ``length`` rows when asked."""
    parts = name.split("/")
    for depth in range(1, len(parts) + 1):
        _plain_link(f, "/".join(parts[:depth]))
    dataset = f[name]
    if not isinstance(dataset, h5py.Dataset):
        raise Damaged(f"{name} is not a dataset")
    if dataset.is_virtual or dataset.external:
        raise Damaged(f"{name} is stored outside the store file")
    if text:
        if dataset.ndim != 1 or h5py.check_string_dtype(dataset.dtype) is None:
            raise Damaged(f"{name} is {dataset.dtype} {dataset.shape}, not one column of text")
        if dataset.shape[0] > MAX_ROWS:
            raise Damaged(f"{name} declares {dataset.shape[0]:,} rows (limit {MAX_ROWS:,})")
        if length is not None and dataset.shape[0] != length:
            raise Damaged(f"{name} has {dataset.shape[0]} rows, expected {length}")
    return dataset


def write_shard(
    path: Path, attrs: Mapping, ids: Sequence[str], X: np.ndarray, rejected: Table
) -> None:
    """One batch of work in progress: embeddings by content hash plus the batch's rejects."""
    with _in_memory() as (f, image):
        for key, value in fingerprint(attrs).items():
            f.attrs[key] = value
        f.attrs["runtimes"] = runtimes_text(runtimes_of(attrs))  # which runtime wrote it
        f.attrs["dim"] = attrs["dim"]
        f.attrs["schema_version"] = SCHEMA_VERSION
        _write_strings(f, "id", _strings(ids))
        _write_matrix(f, X, int(attrs["dim"]))
        group = f.create_group("rejected")
        for name in REJECT_COLUMNS:
            _write_strings(group, name, rejected[name])
    _publish_bytes(image, path)


@contextmanager
def _in_memory() -> Iterator[tuple[h5py.File, io.BytesIO]]:
    """An HDF5 file built in memory. Only plain Python I/O then touches the disk, so a full disk
    is an ordinary OSError; HDF5 writing to a failing file left its objects half closed, and
    the interpreter crashed (segmentation fault) when it collected them."""
    image = io.BytesIO()
    with h5py.File(image, "w") as f:
        yield f, image


def _publish_bytes(image: io.BytesIO, path: Path) -> None:
    """Write, fsync, rename into place, fsync the folder: the file is whole or absent
    (`cxr.files.replace_file`: a fresh temporary name, so no planted link is written through)."""
    with image.getbuffer() as data:  # no copy of the file image
        replace_file(path, data, sync=True)


def read_shard(path: Path) -> tuple[dict, np.ndarray, np.ndarray, Table]:
    """A shard's fingerprint attributes, ids, vectors and rejects; DamagedShard (an OSError, as
    for any unreadable shard) if its layout is not a shard's."""
    with h5py.File(path, "r", locking=False) as f:
        attrs = {k: _plain(v) for k, v in f.attrs.items()}
        try:
            runtimes_of(attrs)
            n = _plain_dataset(f, "id", text=True).shape[0]
            X = _plain_dataset(f, "X")
            dim = attrs.get("dim")
            if not _is_int(dim) or X.dtype != np.float32 or X.shape != (n, dim):
                raise Damaged(f"X is {X.dtype} {X.shape} for {n} ids of dim {dim!r}")
            m = _plain_dataset(f, "rejected/id", text=True).shape[0]
            for name in REJECT_COLUMNS:
                _plain_dataset(f, f"rejected/{name}", text=True, length=m)
            X = X[()]
            _check_finite(X)
        except Damaged as exc:
            raise DamagedShard(f"damaged shard: {exc}") from None
        ids = _strings(f["id"].asstr()[()])
        return attrs, ids, X, _read_table(f["rejected"], REJECT_COLUMNS)
