"""Stage 1's part of `cxr explain`: the frozen backbone's last feature map of each film.

A head sees the film only through the pooled embedding z, the mean over the last feature map
A (h x w x C) of the backbone. So anything a head does with z can be mapped back onto the film:
for a linear head its score is linear in z, hence in A, cell by cell (an exact class-activation
map); for the MLP its gradient at z weighs A (Grad-CAM). Those weights are stage 2's, computed
from the head's fitted arrays (`cxr.classify.explain`): here only the backbone runs. For heads
with no gradient (trees, kNN, the calibrated SVM) the film is occluded patch by patch instead
and every occluded version embedded, for stage 2 to score.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxr.errors import CxrError
from cxr.extract.dataset import Entry, list_images, shown_name
from cxr.extract.reader import decode_stream
from cxr.extract.regions import LUNGS, Region
from cxr.extract.registry import get_spec
from cxr.extract.settings import BOX, EXACT, FULL, PRECISION, REFERENCE, RESIZE
from cxr.extract.weights import parse_weights, resolve
from cxr.store.schema import Reject

BATCH = 16


@dataclass(frozen=True)
class FeatureMaps:
    """What stage 2 needs to explain a head's call on each film (one row per usable file)."""

    paths: list[str]
    maps: np.ndarray  # (n, h, w, C) float32: the last feature map
    embeddings: np.ndarray  # (n, C): its mean, the embedding the head sees
    images: np.ndarray  # (n, s, s) uint8: the backbone's input, gray, for the overlays
    occluded: np.ndarray | None  # (n, g, g, C): embeddings with each patch blacked out
    rejected: list[Reject]
    attrs: dict  # the store attributes these embeddings would have (fingerprint included)


def feature_maps(
    inputs: Sequence[Path],
    *,
    backbone: str,
    weights: Sequence[str],
    resize: str = RESIZE,
    seed: int = 0,
    region: str = FULL,
    region_box: float = BOX,
    occlusion: int = 0,
    runtime: str = REFERENCE,
    precision: str = PRECISION,
    decode: str = EXACT,
) -> FeatureMaps:
    """The last feature maps (and, with ``occlusion`` g > 0, the embeddings of the film with
    each of g x g patches blacked out) of image files and folders, in listing order. The
    reference runtime computes them (TensorFlow, f32: an f32 model of another runtime agrees
    with it within the probe's tolerance; a bf16 model is refused by its fingerprint)."""
    from cxr.extract.quiet_tf import import_tensorflow

    import_tensorflow()  # before Keras: its start-up chatter stays off the terminal
    import keras

    from cxr.extract.model import build_model
    from cxr.extract.runner import check_decode, store_attrs
    from cxr.extract.runtimes import Runtime

    if region.startswith(LUNGS):
        raise _refuse(region)
    zone = Region.parse(region, region_box)
    check_decode(decode)
    spec = get_spec(backbone)
    resolved = resolve(spec, parse_weights(list(weights), [backbone], seed)[backbone])
    model = build_model(spec, resolved)
    # The global average pooling is the model's last layer: its input is the feature map.
    # One input, not a list of one: Keras warns when called with a tensor for a list.
    mapper = keras.Model(model.inputs[0], model.layers[-1].input)
    preprocess = importlib.import_module(f"keras.applications.{spec.module}").preprocess_input
    entries, rejected = [], []
    for path in list_images(inputs):
        name, problem = shown_name(str(path))
        entry = Entry(path=name, file=Path(path), label="")
        if problem:
            rejected.append(entry.reject(problem))
        else:
            entries.append(entry)
    size = spec.input_size
    kept, images = [], []
    stream = decode_stream(entries, lambda e: {size}, resize, 2 * BATCH, zone, decode=decode)
    for entry, result in stream:
        if isinstance(result, str):
            rejected.append(entry.reject(result))
        else:
            kept.append(entry.path)
            images.append(result[size])

    def run(batch: np.ndarray) -> np.ndarray:
        out = [
            np.asarray(mapper(preprocess(batch[i : i + BATCH].astype(np.float32)), training=False))
            for i in range(0, len(batch), BATCH)
        ]
        return np.concatenate(out) if out else np.empty((0, 1, 1, spec.dim), np.float32)

    stacked = np.stack(images) if images else np.empty((0, size, size, 3), np.uint8)
    maps = run(stacked)
    occluded = None
    if occlusion:
        occluded = (
            np.stack(
                [run(_occluded(image, occlusion)).mean(axis=(1, 2)) for image in stacked]
            ).reshape(len(stacked), occlusion, occlusion, -1)
            if len(stacked)
            else None
        )
    return FeatureMaps(
        paths=kept,
        maps=maps.astype(np.float32),
        embeddings=maps.mean(axis=(1, 2)).astype(np.float32),
        images=stacked[..., 0] if len(stacked) else np.empty((0, size, size), np.uint8),
        occluded=occluded,
        rejected=rejected,
        attrs=dict(store_attrs(spec, resolved, resize, Runtime(REFERENCE, "f32"), 0.0,
                               zone.attrs(), decode=decode)),
    )  # fmt: skip


def _occluded(image: np.ndarray, grid: int) -> np.ndarray:
    """(grid * grid, s, s, 3): the image with each patch of a grid x grid tiling black."""
    size = image.shape[0]
    edges = np.linspace(0, size, grid + 1).round().astype(int)
    out = np.repeat(image[None], grid * grid, axis=0)
    for i in range(grid):
        for j in range(grid):
            out[i * grid + j, edges[i] : edges[i + 1], edges[j] : edges[j + 1]] = 0
    return out


def _refuse(region: str) -> CxrError:
    return CxrError(
        f"the model was trained on {region} films, which need a lung mask per film: explain "
        "embeds whole films or their centre regions only"
    )
