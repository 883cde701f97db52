"""Batches filled film by film hold exactly what Keras' preprocess_input gives the stacked batch."""

from __future__ import annotations

import importlib
import threading
import time

import numpy as np
import pytest

from cxr.extract.dataset import Entry
from cxr.extract.job import Target
from cxr.extract.preprocess import Preprocessing
from cxr.extract.registry import REGISTRY

SIZE = 24  # per-pixel arithmetic: a small film shows the same as a full-size one


def keras_preprocess(spec):
    return importlib.import_module(f"keras.applications.{spec.module}").preprocess_input


def films(seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    gray = rng.integers(0, 256, (SIZE, SIZE), np.uint8)
    colour = rng.integers(0, 256, (SIZE, SIZE, 3), np.uint8)
    return [gray, colour, 255 - gray, np.full((SIZE, SIZE), 7, np.uint8)]


def stacked_the_old_way(preprocess, images: list[np.ndarray], rows: int) -> np.ndarray:
    """What the extractor computed before: RGB films stacked, zero-padded, preprocessed."""
    rgb = [np.repeat(i[..., None], 3, 2) if i.ndim == 2 else i for i in images]
    batch = np.zeros((rows, SIZE, SIZE, 3), np.float32)
    batch[: len(rgb)] = np.stack(rgb)
    return np.asarray(preprocess(batch), np.float32)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_backbone_gets_kerass_own_float32_values(name):
    preprocess = keras_preprocess(REGISTRY[name])
    filler = Preprocessing(preprocess, SIZE)
    assert filler.table is not None  # the lookup is taken for gray films
    images = films()
    assert filler.batch(images, 6).tobytes() == stacked_the_old_way(preprocess, images, 6).tobytes()


def test_a_function_that_is_not_per_pixel_runs_on_every_film():
    def per_film(x):  # normalised by the film's own statistics: no table can hold it
        return (x - x.mean()) / (x.std() + 1.0)

    filler = Preprocessing(per_film, SIZE)
    assert filler.table is None
    images = films()
    got = filler.batch(images, len(images))
    for row, image in zip(got, images, strict=True):
        rgb = np.repeat(image[..., None], 3, 2) if image.ndim == 2 else image
        assert np.array_equal(row, per_film(rgb.astype(np.float32)))


class Recording:
    """An embedder whose forward pass is slow and copies its batch twice: any write into a
    batch in flight shows as a difference between the copies."""

    max_abs_diff = 0.0

    def __init__(self, preprocess):
        self.input = Preprocessing(preprocess, SIZE)
        self.seen: list[np.ndarray] = []
        self.lock = threading.Lock()

    def load(self, batch):
        return batch

    def forward(self, batch, n):
        before = batch.copy()
        time.sleep(0.02)
        assert np.array_equal(before, batch), "a batch in flight was overwritten"
        with self.lock:
            self.seen.append(before)
        return before.reshape(len(before), -1)[:n, :2].copy()


class Kept:
    def __init__(self):
        self.rows: list[np.ndarray] = []

    def commit(self, ids, X, rejected):
        self.rows.append(X)


def test_a_job_fills_batches_in_turn_without_touching_the_one_in_flight():
    preprocess = keras_preprocess(REGISTRY["mobilenet_v2"])
    embedder, sink = Recording(preprocess), Kept()
    target = Target("m", SIZE, 2, embedder, sink, batch_size=3)
    images = [im for seed in range(3) for im in films(seed)][:10]  # 3 full batches and 1 film
    for i, image in enumerate(images):
        target.add(Entry(path=f"{i}.png", file=None, label="", sha256=str(i)), image)  # type: ignore[arg-type]
    target.flush()
    target.wait()
    target.close()
    expected = [stacked_the_old_way(preprocess, images[i : i + 3], 3) for i in range(0, 10, 3)]
    assert [b.tobytes() for b in embedder.seen] == [b.tobytes() for b in expected]
    assert sum(len(x) for x in sink.rows) == 10
