"""OpenVINO: the frozen Keras backbone converted once, cached, and checked against TensorFlow.

The converted model (OpenVINO IR, f32 weights, dynamic batch) is cached per (backbone, weights
sha256, input size, OpenVINO version) under ``$KERAS_HOME/models/cxr-openvino/`` beside Keras'
own weight cache. It is written to a temporary folder and renamed into place, so a crash never
leaves half a model; ``meta.json`` records the sha256 of both files, and a cache that does not
match them (truncated, edited, another version) is rebuilt, never trusted.

Equivalence is measured, not assumed: the first time a converted model is used at a precision,
a probe batch (seeded pixels through the backbone's own preprocessing) goes through TensorFlow
and OpenVINO, and the largest absolute difference is kept in ``meta.json`` and in every store
built with it. At f32 above ``F32_TOLERANCE`` the run refuses, quoting the figure.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np

from cxr.errors import CxrError
from cxr.extract.registry import BackboneSpec
from cxr.extract.runtimes import F32_TOLERANCE
from cxr.extract.weights import ResolvedWeights

CACHE_FORMAT = 1
PROBE_IMAGES = 8
OV_PRECISION = {"f32": "f32", "bf16": "bf16"}  # INFERENCE_PRECISION_HINT values


def cache_root() -> Path:
    home = os.environ.get("KERAS_HOME", str(Path("~/.keras").expanduser()))
    return Path(home) / "models" / "cxr-openvino"


def cache_dir(spec: BackboneSpec, weights: ResolvedWeights) -> Path:
    """The cache folder of one converted model; named from package metadata, so looking it up
    imports nothing heavy (a run with nothing to compute imports no engine)."""
    identity = weights.sha256[:16] if weights.sha256 else f"random{weights.seed}"
    version = metadata.version("openvino")
    return cache_root() / f"{spec.name}-{identity}-{spec.input_size}-ov{version}"


def recorded_difference(spec: BackboneSpec, weights: ResolvedWeights, precision: str):
    """The probe's figure from the cache (None if this model was never probed at it)."""
    meta = _read_meta(cache_dir(spec, weights))
    if meta and precision in meta.get("probe", {}):
        return float(meta["probe"][precision])
    return None


def _read_meta(folder: Path) -> dict | None:
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == CACHE_FORMAT else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _valid(folder: Path, meta: dict | None) -> bool:
    if meta is None:
        return False
    try:
        return all(_sha256(folder / name) == sha for name, sha in meta["files"].items())
    except (OSError, KeyError, TypeError, AttributeError):
        return False


def _write_json(path: Path, document: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(document, indent=2))
    os.replace(tmp, path)


def converted(spec: BackboneSpec, weights: ResolvedWeights, keras_model) -> tuple:
    """``(ov.Model, cache folder)``: from the cache when it verifies, else converted from
    ``keras_model()`` (a factory: the Keras model is only built when needed) and cached."""
    import openvino as ov

    folder = cache_dir(spec, weights)
    meta = _read_meta(folder)
    if _valid(folder, meta):
        try:
            return ov.Core().read_model(str(folder / "model.xml")), folder
        except RuntimeError:
            pass  # unreadable after all: rebuilt below
    if folder.exists():  # stale or damaged: never trusted, replaced
        shutil.rmtree(folder, ignore_errors=True)
    size = spec.input_size
    with warnings.catch_warnings():  # Keras warns about the tracing input's structure
        warnings.simplefilter("ignore", UserWarning)
        model = ov.convert_model(keras_model(), input=[(-1, size, size, 3)])
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    ov.save_model(model, str(tmp / "model.xml"), compress_to_fp16=False)
    files = {name: _sha256(tmp / name) for name in ("model.xml", "model.bin")}
    _write_json(
        tmp / "meta.json",
        {
            "format": CACHE_FORMAT,
            "backbone": spec.name,
            "weights_sha256": weights.sha256,
            "input_size": size,
            "openvino": ov.get_version(),
            "files": files,
            "probe": {},
        },
    )
    try:
        os.rename(tmp, folder)
    except OSError:  # another process published the same model first: use theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return model, folder


class OpenVINOEmbedder:
    """The `Embedder` interface on OpenVINO: NumPy preprocessing, a compiled model per batch
    shape (a short last batch is padded, as with TensorFlow)."""

    def __init__(
        self, spec: BackboneSpec, weights: ResolvedWeights, batch_size: int, precision: str
    ):
        import openvino as ov

        from cxr.extract.model import build_model

        self.spec, self.batch_size, self.precision = spec, batch_size, precision
        module = importlib.import_module(f"keras.applications.{spec.module}")
        self._preprocess = module.preprocess_input
        size = spec.input_size
        self._shape = (batch_size, size, size, 3)
        keras_model = _Lazy(lambda: build_model(spec, weights))
        model, folder = converted(spec, weights, keras_model)
        model.reshape([batch_size, size, size, 3])
        config = {"INFERENCE_PRECISION_HINT": OV_PRECISION[precision]}
        self._compiled = ov.Core().compile_model(model, "CPU", config)
        # The first inference allocates the plugin's buffers: do it now, so a run's first
        # batch costs what the others cost (start-up stays start-up, as for TensorFlow).
        self._compiled(np.zeros(self._shape, np.float32))
        self.max_abs_diff = self._probe(folder, keras_model)

    def _probe(self, folder: Path, keras_model) -> float:
        meta = _read_meta(folder) or {}
        known = meta.get("probe", {}).get(self.precision)
        if known is None:
            size, n = self.spec.input_size, min(PROBE_IMAGES, self.batch_size)
            pixels = np.random.default_rng(0).integers(0, 256, (n, size, size, 3))
            batch = self.prepare(pixels.astype(np.uint8))
            reference = np.asarray(keras_model()(batch, training=False), dtype=np.float32)
            known = float(np.max(np.abs(self.forward(batch, n) - reference[:n])))
            if meta:
                meta.setdefault("probe", {})[self.precision] = known
                _write_json(folder / "meta.json", meta)
        if self.precision == "f32" and known > F32_TOLERANCE:
            raise CxrError(
                f"{folder}: OpenVINO's f32 embeddings of {self.spec.name} differ from "
                f"TensorFlow's by up to {known:.3g} on the probe batch (allowed "
                f"{F32_TOLERANCE:g}); use --runtime tensorflow"
            )
        return known

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.forward(self.prepare(images), len(images))

    def prepare(self, images: np.ndarray) -> np.ndarray:
        batch = np.zeros(self._shape, np.float32)
        batch[: len(images)] = images
        return self._preprocess(batch)

    def forward(self, batch: np.ndarray, n: int) -> np.ndarray:
        return np.asarray(self._compiled(batch)[0], dtype=np.float32)[:n]


class _Lazy:
    """Builds the Keras model on first call, once (conversion and the probe share it)."""

    def __init__(self, build):
        self._build, self._model = build, None

    def __call__(self):
        if self._model is None:
            self._model = self._build()
        return self._model
