"""A backbone's input batch, filled one decoded film at a time with Keras' own values.

Keras' ``preprocess_input`` is a per-pixel function (scale, mean, channel order), so a gray film's
input is a table lookup: each of the 256 gray values has one RGB triple, computed once by Keras'
function. One lookup per film writes its row of a preallocated batch, where stacking the batch,
a zero-padded float copy and two in-place passes over it cost the main thread most of its time
(py-spy, `cxr features`). The table is checked against Keras' function on a probe film when
built; a colour film, or a function the check refutes, goes through Keras' function film by film.
Either way the float32 values are the ones Keras computes, so a store never mixes two
computations (tests compare both paths with ``preprocess_input`` on every registry backbone).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


class Preprocessing:
    """``preprocess_input`` of one backbone, for (s, s) gray or (s, s, 3) RGB uint8 films."""

    def __init__(self, preprocess: Callable[[np.ndarray], np.ndarray], size: int):
        self._preprocess = preprocess
        self.size = size
        self.table = self._table()
        self.blank = self._keras(np.zeros((size, size, 3), np.uint8))  # a short batch's padding

    def _keras(self, image: np.ndarray) -> np.ndarray:
        return np.asarray(self._preprocess(image.astype(np.float32)), np.float32)

    def _table(self) -> np.ndarray | None:
        """(256, 3) float32: the input of each gray value; None if Keras' function is not
        per-pixel on a seeded probe film (it then runs on every film)."""
        gray = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2)
        table = self._keras(gray)[0]
        probe = np.random.default_rng(0).integers(0, 256, (self.size, self.size), np.uint8)
        expected = self._keras(np.repeat(probe[..., None], 3, axis=2))
        return table if np.array_equal(table[probe], expected) else None

    def fill(self, row: np.ndarray, image: np.ndarray) -> None:
        """Write ``image`` preprocessed into ``row``, a (s, s, 3) float32 view of a batch."""
        if image.ndim == 2 and self.table is not None:
            np.take(self.table, image, axis=0, out=row, mode="clip")  # uint8: always in range
        else:
            row[...] = self._keras(image if image.ndim == 3 else np.repeat(image[..., None], 3, 2))

    def batch(self, images: Sequence[np.ndarray] | np.ndarray, rows: int) -> np.ndarray:
        """(rows, s, s, 3) float32: ``images`` (films, or a stack of them) preprocessed, then
        padding."""
        out = np.empty((rows, self.size, self.size, 3), np.float32)
        for i, image in enumerate(images):
            self.fill(out[i], image)
        out[len(images) :] = self.blank
        return out
