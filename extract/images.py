"""Decode any chest X-ray file to 8 bits once, and resize it for a backbone's RGB input.

Pure functions over bytes and arrays. A file that cannot be used raises ``Rejected`` with a short
reason; the caller records it and goes on. pydicom is imported only when a DICOM shows up.

Policies (documented in the README):
- JPEG EXIF orientation is applied.
- More than 8 bits (16-bit PNG/TIFF, DICOM) -> linear rescale of the image's own min..max to 0..255.
- Alpha (RGBA, LA, palette with transparency) is composited onto black, the X-ray background.
- DICOM: modality LUT (rescale slope/intercept), then VOI LUT or window, then MONOCHROME1 inverted.
  Compressed transfer syntaxes (JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000, RLE) are
  decoded by pydicom's pylibjpeg plugins (the ``dicom`` extra). A multi-frame file is rejected:
  a chest radiograph is one frame, and a series or cine loop is not one.
- Resize: ``squash`` stretches to the square input (the paper); ``pad`` keeps the aspect ratio and
  pads with black. Bilinear (antialiased) in both cases.
"""

from __future__ import annotations

import importlib.util
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cxr.extract.hashing import open_regular
from cxr.extract.registry import RESIZE_POLICIES

MIN_SIDE = 32  # smaller is a thumbnail or an icon, not a radiograph
MAX_PIXELS = (
    80_000_000  # decompression-bomb guard: above any real radiograph (e.g. 4k x 5k = 20 MP)
)
MAX_FILE_BYTES = 512 << 20  # a file is read whole to be decoded: larger is not one radiograph
DICOM_SUFFIXES = (".dcm", ".dicom")


class Rejected(Exception):
    """This file cannot be used; the message is the reason shown to the user."""


def decode(data: bytes, name: str = "") -> np.ndarray:
    """Bytes of PNG/JPEG/BMP/TIFF/DICOM -> (H, W, 3) uint8."""
    pixels = decode_pixels(data, name)
    return np.repeat(pixels[..., None], 3, axis=2) if pixels.ndim == 2 else pixels


def decode_pixels(data: bytes, name: str = "") -> np.ndarray:
    """As ``decode``, but a grayscale image stays one channel: uint8 (H, W), colour (H, W, 3).

    Chest films are gray: kept in one channel until ``resize`` makes the RGB input, they cost a
    third of the resizing, with the same pixels as resizing three equal channels (checked on
    the shared set and pydicom's files, both resize policies).
    """
    if not data:
        raise Rejected("empty file")
    pixels = _decode_dicom(data) if _is_dicom(data, name) else _decode_pil(data)
    height, width = pixels.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise Rejected(f"too small ({width}x{height} px; minimum side {MIN_SIDE} px)")
    if pixels.min() == pixels.max():  # e.g. a DICOM rescale slope of 0: nothing to see
        raise Rejected("blank image (every pixel has the same value)")
    return pixels


def _is_dicom(data: bytes, name: str) -> bool:
    return data[128:132] == b"DICM" or name.lower().endswith(DICOM_SUFFIXES)


def is_dicom_file(path: Path) -> bool:
    """By suffix, or by the DICOM preamble (PACS exports are often named IM000001), reading
    only the first 132 bytes; an unreadable file is not DICOM here (its reader will say why)."""
    if path.name.lower().endswith(DICOM_SUFFIXES):
        return True
    try:
        with open_regular(path) as fh:  # a FIFO or a device is not DICOM, and is not opened
            return _is_dicom(fh.read(132), "")
    except OSError:
        return False


def _check_pixels(width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise Rejected(
            f"too large ({width}x{height} = {width * height:,} px; limit {MAX_PIXELS:,}): "
            "possible decompression bomb"
        )


def _decode_pil(data: bytes) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            _check_pixels(*image.size)
            image = ImageOps.exif_transpose(image)
            image.load()
    except Image.DecompressionBombError:
        raise Rejected(
            f"too large: possible decompression bomb (limit {MAX_PIXELS:,} px)"
        ) from None
    except UnidentifiedImageError:
        raise Rejected("not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise Rejected(f"cannot decode ({exc})") from None
    return _pil_to_pixels(image)


def _pil_to_pixels(image: Image.Image) -> np.ndarray:
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return _to_gray8(np.asarray(image, dtype=np.float64))
    if image.mode == "L":
        return np.asarray(image, dtype=np.uint8)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(canvas, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _to_gray8(values: np.ndarray) -> np.ndarray:
    """Linear min..max window to 8 bits; a constant image becomes black."""
    values = np.nan_to_num(values.astype(np.float64))
    lo, hi = float(values.min()), float(values.max())
    scaled = np.zeros_like(values) if hi <= lo else (values - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _decode_dicom(data: bytes) -> np.ndarray:
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # odd values are judged below, file by file
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as exc:  # pydicom raises many types for garbage input
        raise Rejected(f"cannot read DICOM ({_first_line(exc)})") from None
    if "PixelData" not in ds:
        raise Rejected("DICOM has no pixel data")
    try:
        _check_pixels(int(ds.get("Columns") or 0), int(ds.get("Rows") or 0))
    except (TypeError, ValueError):
        raise Rejected("DICOM Rows/Columns are not numbers") from None
    frames = _frames(ds)
    if frames > 1:
        raise Rejected(
            f"multi-frame DICOM ({frames} frames): a chest radiograph is one frame; export the "
            "frame to use as its own file"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = ds.pixel_array
    except Exception as exc:  # missing codec, truncated pixel data, bad transfer syntax
        raise Rejected(f"cannot decode DICOM pixel data ({_codec_reason(exc)})") from None
    try:
        return _display(ds, pixels)
    except Rejected:
        raise
    except Exception as exc:  # an odd header (zero window width, text where a number goes)
        raise Rejected(f"cannot apply the DICOM display values ({_first_line(exc)})") from None


def _display(ds, pixels: np.ndarray) -> np.ndarray:
    """Modality LUT, then VOI LUT or window, then 8 bits; MONOCHROME1 inverted."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric.startswith(("RGB", "YBR")):
        return _color_to_rgb8(pixels)
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        return _color_to_rgb8(apply_color_lut(pixels, ds))
    values = apply_modality_lut(pixels, ds)
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        values = apply_voi_lut(values, ds)
    gray = _to_gray8(np.asarray(values, dtype=np.float64))
    return 255 - gray if photometric == "MONOCHROME1" else gray


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(":")


def _codec_reason(exc: Exception) -> str:
    """pydicom's reason, every plugin's line joined, and the extra to install if it is missing."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = "; ".join(lines).replace(":;", ":") or type(exc).__name__
    if importlib.util.find_spec("pylibjpeg") is None and (
        "missing dependencies" in reason or "all available plugins" in reason
    ):
        reason += "; the codecs are missing: pip install 'cxr-transfer[dicom]'"
    return reason


def _frames(ds) -> int:
    try:
        return int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return 1  # a malformed count: let the decoder decide


def _color_to_rgb8(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return np.ascontiguousarray(pixels[..., :3])
    return np.stack([_to_gray8(pixels[..., c]) for c in range(3)], axis=-1)


def resize(pixels: np.ndarray, size: int, policy: str = "squash") -> np.ndarray:
    """(H, W) or (H, W, 3) uint8 -> (size, size, 3) uint8 under the given policy."""
    image = Image.fromarray(pixels)
    if policy == "squash":
        out = np.asarray(image.resize((size, size), Image.BILINEAR))
    elif policy == "pad":
        scale = size / max(image.size)
        inner = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        canvas = Image.new(image.mode, (size, size))
        canvas.paste(
            image.resize(inner, Image.BILINEAR), ((size - inner[0]) // 2, (size - inner[1]) // 2)
        )
        out = np.asarray(canvas)
    else:
        raise ValueError(
            f"unknown resize policy {policy!r}; choose from {', '.join(RESIZE_POLICIES)}"
        )
    return np.repeat(out[..., None], 3, axis=2) if out.ndim == 2 else out
