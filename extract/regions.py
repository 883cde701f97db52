"""Which part of a film is embedded: the whole film, or a region of it (`--region`).

Maguolo & Nanni (2021) blacked out the centre of every film and still scored as well: the
classes could be told apart by what lies outside the lungs (laterality markers, text, borders,
the patient's build). A store of masked films asks that question of any data set, with the
same heads, folds and bootstrap as the full films. A region is applied after decoding and
before resizing, to the film's own pixels; black is the X-ray background.

- ``full``: the whole film (the default; today's stores);
- ``centre-masked``: the central box blacked out; ``centre-only``: only the central box kept.
  The box spans ``box`` of the film's width and of its height, centred (0.6: margins of 20%);
- ``lungs-only:DIR`` and ``lungs-masked:DIR``: a mask per film from another tool (a lung
  segmentation), at the film's own path under DIR (or that path with ``.png``), nonzero inside
  the lungs; only the lungs kept, or the lungs blacked out. Without DIR, the masks the data
  set's collection ships beside its films (the COVID-19 Radiography Database's ``masks/``).
  A mask of the film's shape but another size (256 px for a 299 px film, as that database
  ships them) is scaled to the film, nearest neighbour; any other shape is a reject.

A region is part of a store's identity (its name, ``mobilenet_v2@centre-masked``, and its
fingerprint, with the box or the digest of every mask): one store never mixes two.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cxr.errors import CxrError
from cxr.extract.dataset import Entry
from cxr.extract.images import Rejected, decode_mask
from cxr.extract.settings import BOX, FULL
from cxr.files import UnusableFile, read_regular

CENTRE = ("centre-masked", "centre-only")
LUNGS = ("lungs-only", "lungs-masked")
NAMES = (FULL, *CENTRE, *LUNGS, *(f"{n}:DIR" for n in LUNGS))
SAME_SHAPE = 0.02  # aspect ratios this close are one shape: such a mask is scaled to the film
MAX_MASK_BYTES = 256 << 20


@dataclass(frozen=True)
class Region:
    kind: str = FULL
    box: float = BOX
    masks: Path | None = None

    @classmethod
    def parse(cls, text: str, box: float = BOX) -> Region:
        """``--region`` and ``--region-box``: CxrError naming the choices."""
        kind, sep, folder = text.partition(":")
        if kind in LUNGS:
            if not sep:  # the collection's own masks (`cxr.extract.layouts`)
                return cls(kind, BOX)
            if not folder:
                raise CxrError(f"`region` {text}: name the folder of masks, e.g. {kind}:masks/")
            if not Path(folder).is_dir():
                raise CxrError(f"`region` {text}: {folder} is not a folder of masks")
            return cls(kind, BOX, Path(folder))
        if sep or kind not in (FULL, *CENTRE):
            raise CxrError(f"`region` {text}: choose from {', '.join(NAMES)}")
        if kind in CENTRE and not 0.05 <= box <= 0.95:
            raise CxrError(f"`region_box` {box:g}: the central box's share of a side, 0.05..0.95")
        return cls(kind, box)

    @property
    def name(self) -> str:
        return self.kind

    def mask_of(self, entry: Entry) -> Path | None:
        """Where the film's mask is (lungs regions): under the masks folder at the film's path,
        else the one its collection ships (None: it has none)."""
        if self.masks is None:
            return entry.mask
        same = self.masks / entry.path
        return same if same.exists() else same.with_suffix(".png")

    def attrs(self, masks_sha256: str = "") -> dict:
        """What the store records (the fingerprint's part, and where the masks were)."""
        return {
            "region": self.kind,
            "region_box": float(self.box) if self.kind in CENTRE else 0.0,
            "region_masks_sha256": masks_sha256,
            "region_masks": str(
                self.masks or ("(the collection's own)" if self.kind in LUNGS else "")
            ),
        }

    def apply(self, pixels: np.ndarray, entry: Entry) -> np.ndarray:
        """The film's pixels with everything outside the region black (Rejected: a lungs
        region without a usable mask for the film, with the reason)."""
        if self.kind == FULL:
            return pixels
        keep = self._keep(pixels.shape[:2], entry)
        out = pixels.copy()
        out[~keep] = 0
        return out

    def _keep(self, shape: tuple[int, ...], entry: Entry) -> np.ndarray:
        height, width = shape
        if self.kind in CENTRE:
            inside = centre_box(height, width, self.box)
            return ~inside if self.kind == "centre-masked" else inside
        file = self.mask_of(entry)
        if file is None:
            raise Rejected("no lung mask for it in its collection")
        mask = fitted(read_mask(file), height, width, file)
        return mask if self.kind == "lungs-only" else ~mask


def fitted(mask: np.ndarray, height: int, width: int, file: Path) -> np.ndarray:
    """The mask at the film's size: as it is, or scaled (nearest neighbour) when it has the
    film's shape at another size; Rejected naming it otherwise."""
    if mask.shape == (height, width):
        return mask
    rows, cols = mask.shape
    if abs((cols / rows) / (width / height) - 1) > SAME_SHAPE:
        raise Rejected(
            f"its mask {file} is {cols}x{rows} px, the film {width}x{height}: not the film's shape"
        )
    scaled = Image.fromarray(mask).resize((width, height), Image.Resampling.NEAREST)
    return np.asarray(scaled, dtype=bool)


def centre_box(height: int, width: int, box: float) -> np.ndarray:
    """(height, width) bool: True in the central box spanning ``box`` of each side."""
    top, left = round(height * (1 - box) / 2), round(width * (1 - box) / 2)
    inside = np.zeros((height, width), dtype=bool)
    inside[top : height - top, left : width - left] = True
    return inside


def read_mask(path: Path) -> np.ndarray:
    """A mask file as bool (nonzero: inside); Rejected naming it when it cannot be used."""
    try:
        data = read_regular(path, MAX_MASK_BYTES)
    except FileNotFoundError:
        raise Rejected(f"no mask for it ({path})") from None
    except (UnusableFile, OSError) as exc:
        raise Rejected(f"its mask {path} cannot be read ({exc})") from None
    try:
        return decode_mask(data)
    except Rejected as exc:
        raise Rejected(f"its mask {path}: {exc}") from None


def masks_digest(region: Region, entries: Iterable[Entry], sha256: Callable[[Path], str]) -> str:
    """The digest of every film's mask (lungs regions), in the films' order: the store's
    fingerprint, so that changed masks never join embeddings of the old ones."""
    if region.kind not in LUNGS:
        return ""
    digest = hashlib.sha256()
    for entry in entries:
        mask = region.mask_of(entry)
        try:
            if mask is None:
                raise FileNotFoundError
            digest.update(f"{entry.path}\t{sha256(mask)}\n".encode())
        except OSError:  # missing or unreadable: that film is a reject, named when decoded
            digest.update(f"{entry.path}\t-\n".encode())
    return digest.hexdigest()
