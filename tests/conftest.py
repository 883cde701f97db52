"""Fixtures: small class folders (stage 1) and synthetic feature stores (stage 2)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers import SYNTHETIC_ATTRS, make_class_folders

from cxr.store.schema import ROW_COLUMNS, StoreContent, Table, write_atomic


@pytest.fixture(autouse=True)
def cache_secret(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own cache secret (`cxr.trust`), never the user's ~/.config/cxr: the folder
    it lives in (commands the test runs in subprocesses inherit it)."""
    folder = tmp_path_factory.mktemp("config")
    monkeypatch.setenv("CXR_CONFIG_DIR", str(folder))
    return folder


@pytest.fixture
def class_folders(tmp_path: Path) -> Path:
    return make_class_folders(tmp_path / "data")


@pytest.fixture
def keras_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private Keras home, so each test converts its own models: the OpenVINO cache folder."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    return tmp_path / "keras" / "models" / "cxr-openvino"


@pytest.fixture
def make_synthetic_store(tmp_path: Path) -> Callable[..., Path]:
    """Factory: write ``<tmp>/features/<backbone>.h5`` with Gaussian class clusters; return path.

    ``counts`` maps class -> number of patients; each patient has 1-3 images of its class.
    ``separation`` is the distance of class means in units of noise (0: no signal).
    ``shuffle_labels`` permutes labels across patients (no signal left, groups kept).
    ``patient_ids=False`` leaves the patient_id column empty. ``meta`` maps an extra column name
    to a function of the row record (id, path, label, patient_id, source).
    """

    def make(
        counts: dict[str, int] | None = None,
        *,
        backbone: str = "mobilenet_v2",
        dim: int = 8,
        separation: float = 6.0,
        shuffle_labels: bool = False,
        patient_ids: bool = True,
        seed: int = 0,
        meta: dict[str, Callable[[dict], str]] | None = None,
        X: np.ndarray | None = None,
        attrs: dict | None = None,
        directory: Path | None = None,
    ) -> Path:
        rng = np.random.default_rng(seed)
        counts = counts or {"bacterial": 12, "covid": 12, "normal": 12}
        patients = [(label, f"{label}-p{j}") for label, n in counts.items() for j in range(n)]
        if shuffle_labels:
            labels = rng.permutation([label for label, _ in patients])
            patients = [(lab, pid) for lab, (_, pid) in zip(labels, patients, strict=True)]
        records = []
        for label, pid in patients:
            for k in range(int(rng.integers(1, 4))):
                records.append(
                    {
                        "id": f"{pid}-{k}",
                        "path": f"{label}/{pid}-{k}.png",
                        "label": label,
                        "patient_id": pid if patient_ids else "",
                        "source": "synthetic",
                    }
                )
        classes = sorted(counts)
        centers = rng.normal(size=(len(classes), dim))
        centers *= separation / np.linalg.norm(centers, axis=1, keepdims=True)
        truth = [
            classes.index(p.split("-p")[0]) for p in (r["patient_id"] or r["id"] for r in records)
        ]
        if X is None:
            X = centers[truth] + rng.normal(size=(len(records), dim))
        X = np.asarray(X, dtype=np.float32)
        meta_table = Table.from_records(
            [{k: fn(r) for k, fn in (meta or {}).items()} for r in records], tuple(meta or {})
        )
        out = (directory or tmp_path / "features") / f"{backbone}.h5"
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(
            out,
            StoreContent(
                attrs={**SYNTHETIC_ATTRS, "backbone": backbone, "dim": X.shape[1], **(attrs or {})},
                rows=Table.from_records(records, ROW_COLUMNS),
                meta=meta_table,
                X=X,
            ),
        )
        return out

    return make
