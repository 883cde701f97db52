"""Perceptual hash of a decoded X-ray: equal for re-encoded, resized, contrast-shifted or mildly
cropped copies.

Method (``METHOD`` names it; the hash cache is invalidated when it changes):

1. luma of the (H, W, 3) uint8 image, box-averaged to about 6 x ``SIDE`` px; for each crop box
   of ``CROPS`` (the whole image first, then centre crops of 1..10 % per side, then 2.5..10 %
   off one side), that part shrunk to ``SIDE`` x ``SIDE`` with an antialiasing filter, so the
   file's resolution and compression noise no longer matter;
2. softly rank-equalised (each pixel replaced by its rank, near-ties smoothed), so a monotonic
   change of brightness, contrast or gamma gives (almost) the same grid;
3. 2-D DCT; the ``BITS_SIDE`` x ``BITS_SIDE`` lowest frequencies without the constant term are
   compared with their median, one bit each.

An image's hash is (``LEVELS``, ``WORDS``) uint64: one 255-bit hash per crop box. The distance of
two images (``distance``) is the smallest Hamming distance between the whole of one and any crop
box of the other, both ways: a copy cropped by c % per side matches the original's c % centre
crop. Neighbouring boxes differ by 1 % per side (centre) or 2.5 % on one side, within what a
single global DCT hash tolerates. Crops that differ between x and y, or are off-centre on two or
more sides, are not followed (nor, mostly, by the embedding detector; see docs/audit.md).

Why 255 bits: chest X-rays all look alike at low frequencies. With the common 63-bit pHash (8 x 8
DCT), distinct images of different patients in ../shared/data/cxr came as close as 2 bits; with
255 bits and the crop boxes, films of different patients are at least 40 bits apart (one pair at
32 is the same patient under two ids, one pair at 28 two films of one patient) while re-encoded,
resized, contrast-shifted and cropped copies stay within 20.

Two images are near-duplicates when their distance is at most a threshold
(``cxr.audit.thresholds.HASH_THRESHOLD``); see docs/audit.md for the measured margins.
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
# Crop boxes as fractions cut off (left, top, right, bottom); the whole image must come first.
CROPS: tuple[tuple[float, float, float, float], ...] = (
    *((p / 100, p / 100, p / 100, p / 100) for p in range(11)),  # centre crops 0..10 % a side
    *(
        (cut * (side == 0), cut * (side == 1), cut * (side == 2), cut * (side == 3))
        for cut in (0.025, 0.05, 0.075, 0.10)
        for side in range(4)
    ),  # one side only: 2.5, 5, 7.5 or 10 % off the left, top, right or bottom
)
LEVELS = len(CROPS)
METHOD = (
    f"dct-phash/luma/soft-rank-{TOLERANCE}/{SIDE}px/{N_BITS}bit/"
    f"reduce-{6 * SIDE}px/crops-sym0-10x1pc-one2.5-10x2.5pc/v3"
)


def _grid(small: Image.Image) -> np.ndarray:
    """(SIDE, SIDE) 8-bit luma -> float64 in [0, 1], softly rank-equalised.

    Each pixel becomes the fraction of pixels darker than it, counting near-equal ones by a
    logistic ramp of width ``TOLERANCE`` (of the 1..99 % grey range): a hard rank would blow up
    compression noise in flat regions (black borders), where a grey level of 0 or 1 is a coin toss.
    """
    pixels = np.asarray(small)
    levels, inverse, counts = np.unique(pixels, return_inverse=True, return_counts=True)
    lo, hi = np.percentile(pixels, [1, 99])
    scaled = (levels - lo) / max(hi - lo, 1.0)  # at most 256 grey levels: 256 x 256 ramps
    ramp = expit((scaled[:, None] - scaled[None, :]) / TOLERANCE) @ counts / counts.sum()
    return ramp[inverse].reshape(SIDE, SIDE)


def grid(rgb: np.ndarray, crop: tuple[float, float, float, float] = CROPS[0]) -> np.ndarray:
    """(H, W, 3) uint8 -> (SIDE, SIDE) float64 in [0, 1] of the crop box, softly rank-equalised."""
    return _grid(_shrink(_luma(rgb), crop))


def _luma(rgb: np.ndarray) -> Image.Image:
    """8-bit luma, box-averaged by an integer factor to no less than 6 x SIDE px on the short side.

    The antialiased shrink of every crop box then starts from ~200-400 px instead of the full
    image (cold hashing about twice as fast) at the cost of a few bits of noise.
    """
    luma = Image.fromarray(rgb).convert("L")
    return luma.reduce(max(1, min(luma.size) // (6 * SIDE)))


def _shrink(luma: Image.Image, crop: tuple[float, float, float, float]) -> Image.Image:
    w, h = luma.size
    left, top, right, bottom = crop
    box = (left * w, top * h, w - right * w, h - bottom * h)
    return luma.resize((SIDE, SIDE), Image.Resampling.LANCZOS, box=box)


def _bits(g: np.ndarray) -> np.ndarray:
    coeffs = dctn(g, norm="ortho")[:BITS_SIDE, :BITS_SIDE].ravel()[1:]
    bits = coeffs > np.median(coeffs)
    packed = np.packbits(np.pad(bits, (0, WORDS * 64 - N_BITS)), bitorder="little")
    return packed.view(np.uint64).copy()


def phash(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (LEVELS, WORDS) uint64: one hash per crop box, bits little-endian."""
    luma = _luma(rgb)
    return np.stack([_bits(_grid(_shrink(luma, crop))) for crop in CROPS])


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bit distance between single hashes (..., WORDS) and (..., WORDS), broadcasting."""
    return np.bitwise_count(np.bitwise_xor(a, b)).sum(axis=-1)


def distance(a: np.ndarray, b: np.ndarray) -> int:
    """Distance of two images' hashes (LEVELS, WORDS): whole vs any crop box, both ways."""
    return int(min(hamming(a[0], b).min(), hamming(a, b[0]).min()))
