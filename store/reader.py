"""Reading API for stage 2: one backbone's embeddings with their labels, groups and metadata."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from cxr.store.schema import (
    SUFFIX,
    StoreError,
    Table,
    parts_dir,
    read_content,
    runtimes_of,
    store_name,
    store_path,
)


@dataclass(frozen=True, repr=False)
class FeatureSet:
    """Rows of one store, aligned: ``X[i]`` belongs to ``rows[...][i]`` and ``meta[...][i]``."""

    path: Path
    attrs: Mapping[str, Any]
    X: np.ndarray
    rows: Table
    meta: Table
    rejected: Table

    @property
    def backbone(self) -> str:
        return str(self.attrs["backbone"])

    @property
    def name(self) -> str:
        """The store's name: its backbone, ``backbone@region`` for masked films."""
        return store_name(self.attrs)

    @property
    def labels(self) -> np.ndarray:
        return self.rows["label"]

    @property
    def ids(self) -> np.ndarray:
        return self.rows["id"]

    @property
    def patient_ids(self) -> np.ndarray:
        return self.rows["patient_id"]

    @property
    def sources(self) -> np.ndarray:
        return self.rows["source"]

    @property
    def has_patient_ids(self) -> bool:
        return len(self) > 0 and bool(np.all(self.patient_ids != ""))

    def __len__(self) -> int:
        return len(self.rows)

    def columns(self) -> list[str]:
        return [*self.rows.columns, *self.meta.columns]

    def column(self, name: str) -> np.ndarray:
        if name in self.rows.columns:
            return self.rows[name]
        if name in self.meta.columns:
            return self.meta[name]
        raise StoreError(f"{self.path}: no column {name!r}; available: {', '.join(self.columns())}")

    def take(self, index: np.ndarray) -> FeatureSet:
        return FeatureSet(
            self.path,
            self.attrs,
            self.X[index],
            self.rows.take(index),
            self.meta.take(index),
            self.rejected,
        )

    def __repr__(self) -> str:
        classes = ", ".join(f"{k} {v}" for k, v in sorted(Counter(self.labels.tolist()).items()))
        return (
            f"FeatureSet({self.backbone}: {len(self)} rows x {self.X.shape[1]} dims; {classes}; "
            f"columns {', '.join(self.columns())}; {self.path})"
        )

    def numeric(self, name: str) -> np.ndarray:
        """A column as float64 (NaN where empty), for columns whose values are all numbers;
        the store keeps every column as text, so ``orig_width`` is "2394" until asked here."""
        values = self.column(name)
        try:
            return np.array([float(v) if v != "" else np.nan for v in values], dtype=np.float64)
        except ValueError:
            raise StoreError(f"{self.path}: column {name!r} is not numeric") from None

    def to_frame(self):
        """The rows as a pandas DataFrame (one row per image; numeric columns as numbers).

        The embeddings stay in ``X`` (aligned with the frame's rows): a 2k x 1280 frame of
        floats helps nobody read a table.
        """
        try:
            import pandas as pd
        except ImportError:
            raise StoreError("to_frame needs pandas: pip install 'cxr-transfer[pandas]'") from None
        frame = {}
        for name in self.columns():
            frame[name] = pd.Series(self.column(name).astype(str))
            if name in self.rows.columns:  # ids, paths, labels: text even when made of digits
                continue
            try:
                values = self.numeric(name)
            except StoreError:
                continue
            known = values[~np.isnan(values)]
            if len(known) and np.all(known == np.round(known)):
                frame[name] = pd.Series(values).round().astype("Int64")  # NaN stays missing
            elif len(known):
                frame[name] = pd.Series(values)
        return pd.DataFrame(frame)

    def where(self, conditions: Mapping[str, Collection[str]]) -> FeatureSet:
        """Keep rows whose column value is one of the allowed values, for every condition."""
        mask = np.ones(len(self), dtype=bool)
        for name, allowed in conditions.items():
            mask &= np.isin(self.column(name), list(allowed))
        return self.take(np.flatnonzero(mask))


def load(
    location: Path | str,
    backbone: str | None = None,
    *,
    where: Mapping[str, Collection[str]] | None = None,
    embeddings: bool = True,
) -> FeatureSet:
    """Load a store by file path, by folder and backbone name, or by a folder holding one store.

    ``embeddings=False`` reads the rows only (``X`` then has no columns): what checking a task
    against the store needs, at a fraction of the cost.
    """
    path = store_path(location, backbone) if backbone else Path(location)
    if not backbone and path.is_dir():
        stores = find_stores(path)
        if len(stores) > 1:
            names = ", ".join(p.stem for p in stores)
            raise StoreError(f"{path}: {len(stores)} stores here ({names}); name the backbone")
        path = stores[0] if stores else path
    if not path.is_file():
        raise StoreError(f"{path}: no feature store here (run `cxr features` first)")
    content = read_content(path, load_X=embeddings)
    X = np.asarray(content.X) if embeddings else np.empty((len(content.rows), 0), np.float32)
    fs = FeatureSet(path, content.attrs, X, content.rows, content.meta, content.rejected)
    return fs.where(where) if where else fs


def find_stores(directory: Path | str) -> list[Path]:
    directory = Path(directory)
    if not directory.is_dir():
        raise StoreError(f"{directory}: features folder does not exist (run `cxr features` first)")
    return sorted(p for p in directory.glob(f"*{SUFFIX}") if not p.name.startswith("."))


class StoreInfo(TypedDict):
    """One store as `cxr info` shows it (``--json``: ``{"stores": [StoreInfo, ...]}``)."""

    backbone: str  # the store's name: the backbone, backbone@region for masked films
    path: str
    rows: int
    dim: int
    region: str  # full, centre-masked, centre-only, lungs-only, lungs-masked
    weights: str  # human-readable, see weights_label
    weights_sha256: str
    input_size: int
    resize: str
    runtime: str  # the runtimes that wrote it, with the precision: "tensorflow+openvino f32"
    runtime_max_abs_diff: float  # largest |runtime - TensorFlow| measured (0: TensorFlow only)
    classes: dict[str, int]  # label -> rows
    rejected: int
    pending_shards: int  # committed batches of an interrupted run, not yet published
    created: str
    updated: str


def describe(path: Path) -> StoreInfo:
    """Summary of one store for `cxr info`, without loading the embeddings."""
    content = read_content(path, load_X=False)
    attrs = content.attrs
    backbone = store_name(attrs)
    pending = parts_dir(path.parent, backbone)
    return StoreInfo(
        backbone=backbone,
        path=str(path),
        rows=len(content.rows),
        dim=int(attrs["dim"]),
        region=str(attrs.get("region") or "full"),
        weights=weights_label(attrs),
        weights_sha256=str(attrs.get("weights_sha256", "")),
        input_size=int(attrs["input_size"]),
        resize=str(attrs.get("resize", "")),
        runtime=f"{'+'.join(runtimes_of(attrs))} {attrs.get('precision', 'f32')}",
        runtime_max_abs_diff=float(attrs.get("runtime_max_abs_diff", 0.0)),
        classes=dict(sorted(Counter(content.rows["label"].tolist()).items())),
        rejected=len(content.rejected),
        pending_shards=len(list(pending.glob("*.h5"))) if pending.is_dir() else 0,
        created=str(attrs.get("created", "")),
        updated=str(attrs.get("updated", "")),
    )


def weights_label(attrs: Mapping) -> str:
    """Short human name of the weights a store was built with."""
    if attrs.get("weights") == "random":
        return f"random (seed {attrs.get('weights_seed')})"
    sha = str(attrs.get("weights_sha256", ""))[:12]
    return f"{attrs.get('weights')}: {attrs.get('weights_file', '')} sha256 {sha}"
