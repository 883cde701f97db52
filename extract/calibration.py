"""The int8 calibration sample: a seeded choice of the user's own films, decoded as the run does.

Post-training quantisation sets every int8 scale from activations on real inputs, so the sample is
the run's own images (chest films, not ImageNet's), drawn by seed from the distinct files sorted
by sha256 (the same files whatever order discovery lists them in). Its digest names the quantised
model in the cache and is part of the store's fingerprint: one int8 store never mixes vectors of
two quantisations.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cxr.errors import CxrError
from cxr.extract.dataset import Entry
from cxr.extract.reader import WHOLE, decode_stream
from cxr.extract.regions import Region
from cxr.extract.settings import RESIZE


@dataclass(frozen=True)
class Calibration:
    """The sampled files, and how they are decoded (the run's resize policy and region)."""

    entries: tuple[Entry, ...]
    seed: int
    resize: str = RESIZE
    region: Region = WHOLE

    @classmethod
    def sample(
        cls,
        entries: Sequence[Entry],
        size: int,
        seed: int,
        resize: str = RESIZE,
        region: Region = WHOLE,
    ) -> Calibration:
        """``size`` distinct files (all of them when there are fewer), chosen by ``seed``."""
        if size < 1:
            raise CxrError(f"`calibration` {size}: give at least 1 image")
        distinct = sorted({e.sha256: e for e in entries}.values(), key=lambda e: e.sha256)
        rng = np.random.default_rng(seed)
        chosen = sorted(rng.choice(len(distinct), min(size, len(distinct)), replace=False))
        return cls(tuple(distinct[i] for i in chosen), seed, resize, region)

    @property
    def digest(self) -> str:
        """sha256 of the sampled files' sha256s, in order: the sample's identity."""
        return hashlib.sha256("\n".join(e.sha256 for e in self.entries).encode()).hexdigest()

    def attrs(self) -> dict:
        return {
            "calibration_size": len(self.entries),
            "calibration_seed": int(self.seed),
            "calibration_sha256": self.digest,
        }

    def images(self, input_size: int) -> np.ndarray:
        """(n, s, s, 3) uint8: the sample decoded and resized; files that fail are left out."""
        stream = decode_stream(self.entries, lambda e: {input_size}, self.resize, 16, self.region)
        kept = [result[input_size] for _, result in stream if not isinstance(result, str)]
        if not kept:
            raise CxrError("`precision` int8: none of the calibration images could be decoded")
        return np.stack(kept)
