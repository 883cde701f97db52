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

import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cxr.errors import CxrError
from cxr.extract.calibration import Calibration
from cxr.extract.ov_cache import CACHE_FORMAT, cache_dir, cached, publish, read_meta, write_json
from cxr.extract.registry import BackboneSpec
from cxr.extract.runtimes import F32_TOLERANCE
from cxr.extract.weights import ResolvedWeights

PROBE_IMAGES = 8
# INFERENCE_PRECISION_HINT values: int8 runs its quantised ops in int8, the rest at f32.
OV_PRECISION = {"f32": "f32", "bf16": "bf16", "int8": "f32"}


def recorded_difference(spec: BackboneSpec, weights: ResolvedWeights, precision: str):
    """The probe's figure from the cache (None if this model was never probed at it)."""
    meta = read_meta(cache_dir(spec, weights))
    if meta and precision in meta.get("probe", {}):
        return float(meta["probe"][precision])
    return None


def converted(spec: BackboneSpec, weights: ResolvedWeights, keras_model) -> tuple:
    """``(ov.Model, cache folder)``: from the cache when it verifies, else converted from
    ``keras_model()`` (a factory: the Keras model is only built when needed) and cached."""
    folder = cache_dir(spec, weights)
    found = cached(folder)
    if found is not None:
        return found[0], folder
    if folder.exists():  # stale or damaged: never trusted, replaced
        shutil.rmtree(folder, ignore_errors=True)
    import openvino as ov

    size = spec.input_size
    with warnings.catch_warnings():  # Keras warns about the tracing input's structure
        warnings.simplefilter("ignore", UserWarning)
        model = ov.convert_model(keras_model(), input=[(-1, size, size, 3)])
    meta = {
        "format": CACHE_FORMAT,
        "backbone": spec.name,
        "weights_sha256": weights.sha256,
        "input_size": size,
        "openvino": ov.get_version(),
    }
    publish(model, folder, meta)
    return model, folder


class OpenVINOEmbedder:
    """The `Embedder` interface on OpenVINO: NumPy preprocessing, a compiled model per batch
    shape (a short last batch is padded, as with TensorFlow)."""

    def __init__(
        self,
        spec: BackboneSpec,
        weights: ResolvedWeights,
        batch_size: int,
        precision: str,
        calibration: Calibration | None = None,
        warn: Callable[[str], None] = lambda text: None,
    ):
        import openvino as ov

        from cxr.extract.model import build_model, preprocessing

        self.spec, self.batch_size, self.precision = spec, batch_size, precision
        self.input = preprocessing(spec)
        size = spec.input_size
        self._shape = (batch_size, size, size, 3)
        keras_model = _Lazy(lambda: build_model(spec, weights))
        model, folder = converted(spec, weights, keras_model)
        if precision == "int8":
            if calibration is None:
                raise CxrError("`precision` int8 needs a calibration sample of the data set")
            from cxr.extract.quantise import quantised

            model, folder = quantised(
                model, folder, calibration, lambda: self._calibration(calibration), warn
            )
        model.reshape([batch_size, size, size, 3])
        config = {"INFERENCE_PRECISION_HINT": OV_PRECISION[precision]}
        self._compiled = ov.Core().compile_model(model, "CPU", config)
        # The first inference allocates the plugin's buffers: do it now, so a run's first
        # batch costs what the others cost (start-up stays start-up, as for TensorFlow).
        self._compiled(np.zeros(self._shape, np.float32))
        self.max_abs_diff = self._probe(folder, keras_model)

    def _probe(self, folder: Path, keras_model) -> float:
        meta = read_meta(folder) or {}
        known = meta.get("probe", {}).get(self.precision)
        if known is None:
            size, n = self.spec.input_size, min(PROBE_IMAGES, self.batch_size)
            pixels = np.random.default_rng(0).integers(0, 256, (n, size, size, 3))
            batch = self.prepare(pixels.astype(np.uint8))
            reference = np.asarray(keras_model()(batch, training=False), dtype=np.float32)
            known = float(np.max(np.abs(self.forward(batch, n) - reference[:n])))
            if meta:
                meta.setdefault("probe", {})[self.precision] = known
                write_json(folder / "meta.json", meta)
        if self.precision == "f32" and known > F32_TOLERANCE:
            raise CxrError(
                f"{folder}: OpenVINO's f32 embeddings of {self.spec.name} differ from "
                f"TensorFlow's by up to {known:.3g} on the probe batch (allowed "
                f"{F32_TOLERANCE:g}); use `runtime` tensorflow"
            )
        return known

    def _calibration(self, calibration: Calibration) -> list[np.ndarray]:
        """The sample as NNCF's inputs: one preprocessed image per item."""
        images = calibration.images(self.spec.input_size)
        return [self.input.batch(images[i : i + 1], 1) for i in range(len(images))]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.forward(self.prepare(images), len(images))

    def prepare(self, images: np.ndarray) -> np.ndarray:
        return self.load(self.input.batch(images, self.batch_size))

    def load(self, batch: np.ndarray) -> np.ndarray:
        return batch  # OpenVINO reads the NumPy batch itself

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
