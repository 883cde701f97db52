"""Build a frozen backbone from the registry and run it on batches of uint8 images.

The forward pass is one traced ``tf.function`` calling ``model(x, training=False)`` on a fixed
batch shape: a short last batch is padded, so every image goes through the same kernels whatever
batch it lands in (a resumed run gives the same vectors as an uninterrupted one) and the function
is traced once. ``predict`` in a Python loop is avoided: it is known to grow memory.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable

import numpy as np

from cxr.errors import CxrError
from cxr.extract.calibration import Calibration
from cxr.extract.preprocess import Preprocessing
from cxr.extract.quiet_tf import import_tensorflow
from cxr.extract.registry import BackboneSpec
from cxr.extract.runtimes import Runtime
from cxr.extract.weights import ResolvedWeights

tf = import_tensorflow()


def make_embedder(
    spec: BackboneSpec,
    weights: ResolvedWeights,
    batch_size: int,
    runtime: Runtime | None = None,
    calibration: Calibration | None = None,
    warn: Callable[[str], None] = lambda text: None,
):
    """The embedder of a runtime: `Embedder` (TensorFlow) or `OpenVINOEmbedder`; both have
    ``prepare``, ``forward`` and ``max_abs_diff`` (0 for the reference itself). ``calibration``
    and ``warn`` serve int8 (its sample, and a cached model that failed its check)."""
    if runtime is not None and runtime.name == "openvino":
        from cxr.extract.ov_runtime import OpenVINOEmbedder

        return OpenVINOEmbedder(spec, weights, batch_size, runtime.precision, calibration, warn)
    return Embedder(spec, weights, batch_size)


class Embedder:
    """Callable: (n, s, s, 3) uint8 -> (n, dim) float32 embeddings, n <= batch_size.

    The graph is traced when the embedder is built, so a run's first batch costs what the
    others cost (start-up stays start-up). Preprocessing stays in NumPy: moved into the graph
    it ran about 5% faster but changed the vectors by up to 2e-6 (relative; grappler rewrites
    the arithmetic), and a store must not mix vectors from two computations.
    """

    max_abs_diff = 0.0  # the reference runtime

    def __init__(self, spec: BackboneSpec, weights: ResolvedWeights, batch_size: int):
        self.spec = spec
        self.batch_size = batch_size
        self.model = build_model(spec, weights)
        self.input = preprocessing(spec)
        size = spec.input_size
        self._shape = (batch_size, size, size, 3)
        self._forward = tf.function(
            lambda x: self.model(x, training=False),
            input_signature=[tf.TensorSpec(self._shape, tf.float32)],
        )
        self._forward(tf.zeros(self._shape, tf.float32))  # trace now

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.forward(self.prepare(images), len(images))

    def prepare(self, images: np.ndarray):
        """(n, s, s, 3) uint8 images as a padded, preprocessed batch for ``forward``."""
        return self.load(self.input.batch(images, self.batch_size))

    def load(self, batch: np.ndarray):
        """A filled (batch_size, s, s, 3) float32 batch as a tensor (a copy, made on the
        calling thread while the previous batch runs through the model)."""
        return tf.constant(batch)

    def forward(self, batch, n: int) -> np.ndarray:
        """The embeddings of the first ``n`` images of a prepared batch."""
        return np.asarray(self._forward(batch), dtype=np.float32)[:n]


def preprocessing(spec: BackboneSpec) -> Preprocessing:
    """The backbone's ``keras.applications`` preprocessing, as a batch filler."""
    module = importlib.import_module(f"keras.applications.{spec.module}")
    return Preprocessing(module.preprocess_input, spec.input_size)


def embed_all(embed, images: list[np.ndarray], batch_size: int, dim: int) -> np.ndarray:
    """(n, dim) embeddings of decoded images, ``batch_size`` at a time through ``embed``."""
    chunks = [
        embed(np.stack(images[i : i + batch_size])) for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(chunks) if chunks else np.empty((0, dim), np.float32)


def build_model(spec: BackboneSpec, weights: ResolvedWeights):
    import keras

    module = importlib.import_module(f"keras.applications.{spec.module}")
    constructor = getattr(module, spec.constructor)
    if weights.kind == "random":
        keras.utils.set_random_seed(weights.seed)
    size = spec.input_size
    model = constructor(
        include_top=False, weights=None, input_shape=(size, size, 3), pooling="avg", **spec.kwargs
    )
    if weights.path is not None:
        try:
            with warnings.catch_warnings():  # a mismatched file warns per layer, then fails
                warnings.simplefilter("ignore")
                model.load_weights(str(weights.path))
        except Exception as exc:  # Keras raises ValueError/KeyError/OSError for mismatched files
            raise CxrError(
                f"{weights.path}: does not fit {spec.name} = {spec.constructor_label} without top "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]})"
            ) from None
    model.trainable = False
    return model
