"""Decode any chest X-ray file to 8 bits once, and resize it for a backbone's RGB input.

Pure functions over bytes and arrays. A file that cannot be used raises ``Rejected`` with a short
reason; the caller records it and goes on. pydicom is imported only when a DICOM shows up.

Policies (documented in the README):
- JPEG EXIF orientation is applied.
- More than 8 bits (16-bit PNG/TIFF, DICOM) -> linear rescale of the image's own min..max to 0..255.
  Float images (TIFF mode F, float DICOM) and any with NaN or infinite values are windowed on the
  0.5th..99.5th percentiles of their finite values instead: one 1e30 or inf pixel would otherwise
  turn the film black (or white), and it would be embedded as such without a word.
- Alpha (RGBA, LA, palette with transparency) is composited onto black, the X-ray background.
- DICOM: modality LUT (rescale slope/intercept), then VOI LUT or window, then MONOCHROME1 inverted.
  Compressed transfer syntaxes (JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000, RLE) are
  decoded by pydicom's pylibjpeg plugins (the ``dicom`` extra). A multi-frame file is rejected:
  a chest radiograph is one frame, and a series or cine loop is not one.
- Resize: ``squash`` stretches to the square input (the paper); ``pad`` keeps the aspect ratio and
  pads with black. Bilinear (antialiased) in both cases.

Hostile files (the README's "Untrusted files"):
- Pillow opens only ``PIL_FORMATS`` (PNG, JPEG, BMP, TIFF): without ``formats=`` it would hand a
  PostScript file named .png to Ghostscript. Every image the tool decodes goes through
  ``decode_pixels`` (features, predict, the audit's hashes), every DICOM through ``read_dicom``
  (the decoder and `cxr manifest`).
- Decompression bombs: before anything is decoded, the size a file declares is bounded
  everywhere it is declared: the pixels (``MAX_PIXELS``) and the decoded bytes, rows x columns x
  samples x bits x frames (``MAX_PIXEL_BYTES``), of the DICOM header; the compressed image's own
  header (the JPEG or JPEG-LS frame header, the JPEG 2000 SIZ marker), which must also agree with
  the DICOM header; and a deflated data set is inflated here, its header first (at most
  ``DICOM_HEADER_BYTES``), then only the pixels that header declares (pydicom would inflate all
  of it in one call, even to read the header alone).
"""

from __future__ import annotations

import importlib.util
import io
import warnings
import zlib
from pathlib import Path
from typing import BinaryIO, cast

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cxr.extract.registry import RESIZE_POLICIES
from cxr.files import open_regular
from cxr.settings import flag

MIN_SIDE = 32  # smaller is a thumbnail or an icon, not a radiograph
MAX_PIXELS = (
    80_000_000  # decompression-bomb guard: above any real radiograph (e.g. 4k x 5k = 20 MP)
)
# Decoded bytes: an 80-megapixel image at 4 bytes a pixel (a 16-bit mammogram of 20 MP is 40 MB).
# Pillow's modes hold at most 4 bytes a pixel, so for them MAX_PIXELS bounds this already.
MAX_PIXEL_BYTES = 4 * MAX_PIXELS
MAX_FILE_BYTES = 512 << 20  # a file is read whole to be decoded: larger is not one radiograph
DICOM_HEADER_BYTES = 16 << 20  # everything but the pixels; kilobytes in practice
DICOM_SUFFIXES = (".dcm", ".dicom")
PIL_FORMATS = ("PNG", "JPEG", "BMP", "TIFF")  # IMAGE_SUFFIXES' formats; nothing else is opened
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
ROBUST_PERCENTILES = (0.5, 99.5)


class Rejected(Exception):
    """This file cannot be used; the message is the reason shown to the user."""


def decode(data: bytes, name: str = "") -> np.ndarray:
    """Bytes of PNG/JPEG/BMP/TIFF/DICOM -> (H, W, 3) uint8."""
    pixels = decode_pixels(data, name)
    return np.repeat(pixels[..., None], 3, axis=2) if pixels.ndim == 2 else pixels


def decode_pixels(data: bytes, name: str = "", draft: int = 0) -> np.ndarray:
    """As ``decode``, but a grayscale image stays one channel: uint8 (H, W), colour (H, W, 3).

    Chest films are gray: kept in one channel until ``resize`` makes the RGB input, they cost a
    third of the resizing, with the same pixels as resizing three equal channels (checked on
    the shared set and pydicom's files, both resize policies).

    ``draft`` (`decode` draft: the largest input size the film is resized to; 0, the default,
    decodes every pixel): a JPEG is decoded by libjpeg's DCT scaling (Pillow's ``draft``) at
    the smallest of 1/2, 1/4 or 1/8 that keeps both sides at least ``draft``, so the resize
    after it still only shrinks. Less work to decode and to resize, and other pixels than
    Keras': an option with a store of its own, never the default. Other formats decode exactly.
    """
    if not data:
        raise Rejected("empty file")
    pixels = _decode_dicom(data) if _is_dicom(data, name) else _decode_pil(data, draft)
    height, width = pixels.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise Rejected(f"too small ({width}x{height} px; minimum side {MIN_SIDE} px)")
    if pixels.min() == pixels.max():  # e.g. a DICOM rescale slope of 0: nothing to see
        raise Rejected("blank image (every pixel has the same value)")
    problem = _mask_like(pixels)
    if problem:
        raise Rejected(
            f"{problem}: a mask or a drawing, not a film (a collection's lung masks are read by "
            f"its {flag('layout')}, and serve {flag('region')} lungs-only)"
        )
    return pixels


MASK_SHARE = 0.85  # of the pixels at the darkest or brightest value (films: at most 0.50 seen)


def _mask_like(pixels: np.ndarray) -> str:
    """Why the image looks like a mask ("" when it does not): two values only, or, gray, nearly
    all of it at its darkest or brightest value (a mask resized with smoothing; a colour image
    may well be mostly one saturated colour). Looked at on every fourth row and column first
    (microseconds for a film), then on every pixel: on the 2,109 shared films at most half of
    the pixels sit at either end."""
    for view in (pixels[::4, ::4], pixels):
        values = np.bincount(view.ravel(), minlength=256)
        levels = np.flatnonzero(values)
        extremes = (values[levels[0]] + values[levels[-1]]) / view.size
        if len(levels) > 2 and (pixels.ndim == 3 or extremes < MASK_SHARE):
            return ""
    if len(levels) <= 2:
        return "only two grey levels"
    return f"{extremes:.0%} of its pixels at its darkest or brightest value"


def decode_mask(data: bytes) -> np.ndarray:
    """A mask image (PNG, BMP or TIFF; any depth) as bool (H, W): nonzero is inside."""
    if not data:
        raise Rejected("empty file")
    pixels = _decode_pil(data)
    return (pixels.max(axis=2) if pixels.ndim == 3 else pixels) > 0


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


def _check_bytes(what: str, nbytes: int) -> None:
    if nbytes > MAX_PIXEL_BYTES:
        raise Rejected(
            f"too large ({what} = {nbytes:,} bytes decoded; limit {MAX_PIXEL_BYTES:,}): "
            "possible decompression bomb"
        )


def _decode_pil(data: bytes, draft: int = 0) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data), formats=PIL_FORMATS)
            _check_pixels(*opened.size)  # the size the file declares, whatever is decoded
            if draft and opened.format == "JPEG":  # chosen before any pixel is decoded
                opened.draft(opened.mode, (draft, draft))
            image = ImageOps.exif_transpose(opened)
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
        return _to_gray8(np.asarray(image, dtype=np.float64), robust=image.mode == "F")
    if image.mode == "L":
        return np.asarray(image, dtype=np.uint8)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(canvas, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _to_gray8(values: np.ndarray, robust: bool = False) -> np.ndarray:
    """Linear window to 8 bits: the image's min..max, or (``robust``, or any NaN or infinite
    value) the ROBUST_PERCENTILES of its finite values, outside values clipped (NaN as the low
    end, +inf as the high end); a constant image becomes black."""
    values = values.astype(np.float64)
    finite = np.isfinite(values)
    if robust or not finite.all():
        known = values[finite]
        if not known.size:
            raise Rejected("no pixel has a finite value (all NaN or infinite)")
        lo, hi = (float(v) for v in np.percentile(known, ROBUST_PERCENTILES))
        if hi <= lo:  # mostly one value: the finite range, at least
            lo, hi = float(known.min()), float(known.max())
        values = np.clip(np.nan_to_num(values, nan=lo, posinf=hi, neginf=lo), lo, hi)
    else:
        lo, hi = float(values.min()), float(values.max())
    scaled = np.zeros_like(values) if hi <= lo else (values - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _decode_dicom(data: bytes) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # odd values are judged below, file by file
            ds = read_dicom(io.BytesIO(data))
    except Rejected:
        raise
    except Exception as exc:  # pydicom raises many types for garbage input
        raise Rejected(f"cannot read DICOM ({_first_line(exc)})") from None
    if not any(keyword in ds for keyword in PIXEL_KEYWORDS):
        raise Rejected("DICOM has no pixel data")
    rows, columns, frames = _check_declared(ds)
    if frames > 1:
        raise Rejected(
            f"multi-frame DICOM ({frames} frames): a chest radiograph is one frame; export the "
            "frame to use as its own file"
        )
    _check_codestream(ds, columns, rows)
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


def _check_declared(ds) -> tuple[int, int, int]:
    """(rows, columns, frames) of a DICOM header whose pixels are within the limits: at most
    MAX_PIXELS a frame, at most MAX_PIXEL_BYTES decoded (rows x columns x samples x bits
    allocated x frames); Rejected otherwise."""
    try:
        rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
        samples = int(ds.get("SamplesPerPixel") or 1)
        bits = int(ds.get("BitsAllocated") or 8)
    except (TypeError, ValueError):
        raise Rejected("DICOM Rows/Columns are not numbers") from None
    frames = _frames(ds)
    _check_pixels(columns, rows)
    _check_bytes(
        f"{columns}x{rows} px x {samples} samples x {bits} bits x {frames} frames",
        _pixel_bytes(rows, columns, samples, bits, frames),
    )
    return rows, columns, frames


def _pixel_bytes(rows: int, columns: int, samples: int, bits: int, frames: int) -> int:
    return rows * columns * max(samples, 1) * -(-max(bits, 1) // 8) * max(frames, 1)


def read_dicom(source: BinaryIO, *, header_only: bool = False):
    """The one reader of DICOM data sets (the decoder, and `cxr manifest` with ``header_only``,
    which stops before the pixel data and leaves values over 1 MB unread).

    A deflated data set (Deflated Explicit VR Little Endian) is inflated here, chunk by chunk:
    pydicom inflates the whole of it in one call, pixels included, even for the header alone.
    First at most DICOM_HEADER_BYTES, which must hold the header (everything before the pixel
    data); then, for a full read, only as much more as the pixels that header declares (within
    the limits of ``_check_declared``) and DICOM_HEADER_BYTES of trailing elements: a bomb costs
    tens of megabytes to refuse, whatever it would inflate to.
    """
    import pydicom
    from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble

    start = source.tell()
    preamble = read_preamble(source, force=True)
    meta = _read_file_meta_info(source)
    if meta.get("TransferSyntaxUID") != pydicom.uid.DeflatedExplicitVRLittleEndian:
        source.seek(start)
        defer = "1 MB" if header_only else None  # large values stay unread
        return pydicom.dcmread(source, force=True, stop_before_pixels=header_only, defer_size=defer)
    inflater = _Inflater(source)
    inflated = inflater.read(DICOM_HEADER_BYTES + 1)
    reached = []

    def at_pixels(tag, vr, length) -> bool:
        if tag in (0x7FE00010, 0x7FE00008, 0x7FE00009):  # (float, double) pixel data
            reached.append(tag)
            return True
        return False

    header = read_dataset(_stream(inflated), False, True, stop_when=at_pixels)
    more = len(inflated) > DICOM_HEADER_BYTES  # the stream goes on
    if more and not reached:
        raise Rejected(f"its deflated header is larger than {DICOM_HEADER_BYTES:,} bytes")
    dataset = header
    if not header_only:
        if more:
            rows, columns, frames = _check_declared(header)
            samples = int(header.get("SamplesPerPixel") or 1)
            limit = DICOM_HEADER_BYTES + _pixel_bytes(
                rows, columns, samples, int(header.get("BitsAllocated") or 8), frames
            )
            rest = inflater.read(limit + 1)
            if len(rest) > limit:
                raise Rejected(
                    "too large: its deflated data set inflates to more than its header "
                    f"declares ({len(inflated) + limit:,} bytes); possible decompression bomb"
                )
            inflated += rest
        dataset = read_dataset(_stream(inflated), False, True)
    ds = pydicom.dataset.FileDataset(
        getattr(source, "name", "") or "", dataset, preamble, meta, False, True
    )
    ds.set_original_encoding(False, True, dataset._character_set)
    return ds


class _Inflater:
    """A raw deflate stream, read from ``source`` a bounded piece at a time."""

    def __init__(self, source: BinaryIO):
        self.source, self.pending = source, b""
        self.inflater = zlib.decompressobj(-zlib.MAX_WBITS)

    def read(self, limit: int) -> bytearray:
        """At most ``limit`` more inflated bytes; fewer when the stream (or its bytes) ends."""
        out = bytearray()
        while len(out) < limit and not self.inflater.eof:
            if not self.pending:
                self.pending = self.source.read(1 << 16)
                if not self.pending:
                    break
            out += self.inflater.decompress(self.pending, limit - len(out))
            self.pending = self.inflater.unconsumed_tail
        return out


def _check_codestream(ds, columns: int, rows: int) -> None:
    """A compressed image declares its own size, which the decoder follows, whatever the DICOM
    header says: it is bounded too, and must agree with the header."""
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    try:
        native = syntax is None or not syntax.is_encapsulated or syntax == "1.2.840.10008.1.2.5"
    except ValueError:  # not a transfer syntax at all: the decoder will say so
        return
    if native:
        return  # native pixel data, or RLE: decoded into the size the header declares
    from pydicom.encaps import generate_frames

    try:
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    except Exception:  # not encapsulated after all: the decoder will say what is wrong
        return
    declared = _jpeg_size(frame) or _j2k_size(frame)
    if declared is None:
        raise Rejected(f"cannot decode DICOM pixel data (no image size in its {syntax} codestream)")
    width, height, components, bits = declared
    _check_pixels(width, height)
    _check_bytes(
        f"a {width}x{height} px x {components} components x {bits} bits codestream",
        width * height * max(components, 1) * -(-max(bits, 1) // 8),
    )
    if (width, height) != (columns, rows):
        raise Rejected(
            f"its compressed image declares {width}x{height} px, its DICOM header "
            f"{columns}x{rows}: not decoded"
        )


def _jpeg_size(code: bytes) -> tuple[int, int, int, int] | None:
    """(width, height, components, bits) from a JPEG or JPEG-LS frame header (SOFn, SOF55)."""
    if code[:2] != b"\xff\xd8":
        return None
    at = 2
    while at + 4 <= len(code):
        if code[at] != 0xFF:
            return None
        marker = code[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # no length follows
            at += 2
            continue
        if (0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC)) or marker == 0xF7:
            if at + 10 > len(code):
                return None
            bits, height, width = code[at + 4], code[at + 5 : at + 7], code[at + 7 : at + 9]
            return (
                int.from_bytes(width, "big"),
                int.from_bytes(height, "big"),
                code[at + 9],
                bits,
            )
        if marker in (0xD9, 0xDA):  # the end, or the scan, before any frame header
            return None
        at += 2 + int.from_bytes(code[at + 2 : at + 4], "big")
    return None


def _j2k_size(code: bytes) -> tuple[int, int, int, int] | None:
    """(width, height, components, bits) from a JPEG 2000 SIZ marker (a bare codestream, or one
    inside a JP2 file's boxes)."""
    at = code.find(b"\xff\x4f\xff\x51", 0, 1 << 16)
    if at < 0 or at + 42 > len(code):
        return None
    siz = code[at + 4 :]
    number = lambda offset, size: int.from_bytes(siz[offset : offset + size], "big")  # noqa: E731
    width, height = number(4, 4) - number(12, 4), number(8, 4) - number(16, 4)
    components = number(36, 2)
    bits = max((siz[38 + 3 * c] & 0x7F) + 1 for c in range(min(components, (len(siz) - 38) // 3)))
    return width, height, components, bits


def _stream(data: bytes | bytearray) -> BinaryIO:
    """Inflated DICOM bytes as the file object pydicom's reader takes."""
    from pydicom.filebase import DicomBytesIO

    return cast(BinaryIO, DicomBytesIO(bytes(data)))


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
    gray = _to_gray8(np.asarray(values, dtype=np.float64), robust=pixels.dtype.kind == "f")
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


def thumbnail(path: Path, size: int = 192) -> np.ndarray | None:
    """A film as a small gray picture for a gallery (uint8, aspect kept, padded square); None
    when it cannot be read or decoded (a gallery shows a blank tile then)."""
    try:
        with open_regular(path) as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            return None
        pixels = decode_pixels(data, path.name)
    except (OSError, Rejected):
        return None
    gray = pixels if pixels.ndim == 2 else pixels.mean(axis=2).astype(np.uint8)
    return resize(gray, size, "pad")[..., 0]


def resize(pixels: np.ndarray, size: int, policy: str = "squash", rgb: bool = True) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8 -> (size, size, 3) uint8 under the given policy; without
    ``rgb`` a gray film stays (size, size)."""
    image = Image.fromarray(pixels)
    if policy == "squash":
        out = np.asarray(image.resize((size, size), Image.Resampling.BILINEAR))
    elif policy == "pad":
        scale = size / max(image.size)
        inner = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        canvas = Image.new(image.mode, (size, size))
        canvas.paste(
            image.resize(inner, Image.Resampling.BILINEAR),
            ((size - inner[0]) // 2, (size - inner[1]) // 2),
        )
        out = np.asarray(canvas)
    else:
        raise ValueError(
            f"unknown resize policy {policy!r}; choose from {', '.join(RESIZE_POLICIES)}"
        )
    return np.repeat(out[..., None], 3, axis=2) if out.ndim == 2 and rgb else out
