"""Perceptual hash of a decoded X-ray: equal for re-encoded, resized or contrast-shifted copies.

Method (``METHOD`` names it; the hash cache is invalidated when it changes):

1. luma of the (H, W, 3) uint8 image, shrunk to ``SIDE`` x ``SIDE`` with an antialiasing filter,
   so the file's resolution and compression noise no longer matter;
2. softly rank-equalised (each pixel replaced by its rank, near-ties smoothed), so a monotonic
   change of brightness, contrast or gamma gives (almost) the same grid;
3. 2-D DCT; the ``BITS_SIDE`` x ``BITS_SIDE`` lowest frequencies without the constant term are
   compared with their median, one bit each.

Why 255 bits: chest X-rays all look alike at low frequencies. With the common 63-bit pHash (8 x 8
DCT), distinct images of different patients in ../shared/data/cxr came as close as 2 bits; with
255 bits the closest distinct pair is 50 bits apart while re-encoded, resized and contrast-shifted
copies stay within 24. The price is crop tolerance: only crops of about 1 % per side stay under
the threshold; larger crops are left to the embedding-cosine detector (see the README section).

Two images are near-duplicates when the Hamming distance of their hashes is at most a threshold
(``audit.duplicates.HASH_THRESHOLD``); see docs/_audit_readme_draft.md for the measured margins.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy.fft import dctn
from scipy.special import expit

SIDE = 32
BITS_SIDE = 16
N_BITS = BITS_SIDE * BITS_SIDE - 1  # 255: the DCT's constant term carries no information here
WORDS = 4  # uint64 words per hash
TOLERANCE = 0.02
METHOD = f"dct-phash/luma/soft-rank-{TOLERANCE}/{SIDE}px/{N_BITS}bit/v2"


def grid(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (SIDE, SIDE) float64 in [0, 1], softly rank-equalised.

    Each pixel becomes the fraction of pixels darker than it, counting near-equal ones by a
    logistic ramp of width ``TOLERANCE`` (of the 1..99 % grey range): a hard rank would blow up
    compression noise in flat regions (black borders), where a grey level of 0 or 1 is a coin toss.
    """
    small = Image.fromarray(rgb).convert("L").resize((SIDE, SIDE), Image.Resampling.LANCZOS)
    levels, inverse, counts = np.unique(np.asarray(small), return_inverse=True, return_counts=True)
    lo, hi = np.percentile(np.asarray(small), [1, 99])
    scaled = (levels - lo) / max(hi - lo, 1.0)  # at most 256 grey levels: 256 x 256 ramps
    ramp = expit((scaled[:, None] - scaled[None, :]) / TOLERANCE) @ counts / counts.sum()
    return ramp[inverse].reshape(SIDE, SIDE)


def phash(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (WORDS,) uint64: the perceptual hash, bits packed little-endian."""
    coeffs = dctn(grid(rgb), norm="ortho")[:BITS_SIDE, :BITS_SIDE].ravel()[1:]
    bits = coeffs > np.median(coeffs)
    packed = np.packbits(np.pad(bits, (0, WORDS * 64 - N_BITS)), bitorder="little")
    return packed.view(np.uint64).copy()


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bit distance between hashes (..., WORDS) and (..., WORDS), broadcasting."""
    return np.bitwise_count(np.bitwise_xor(a, b)).sum(axis=-1)
