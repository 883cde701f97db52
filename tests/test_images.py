"""Decoding every supported format to 8-bit RGB, and rejecting what cannot be used."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from helpers import dicom_bytes, xray_like
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import cxr
from cxr.extract import images
from cxr.extract.images import Rejected, decode, decode_pixels, resize


def encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


GRAY = xray_like(1)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "TIFF"])
def test_common_formats_decode_to_rgb8(fmt):
    rgb = decode(encode(Image.fromarray(GRAY), fmt))
    assert rgb.dtype == np.uint8 and rgb.shape == (*GRAY.shape, 3)
    assert np.abs(rgb[..., 0].astype(int) - GRAY).mean() < 3  # JPEG is lossy, the rest exact
    assert np.array_equal(rgb[..., 0], rgb[..., 2])


def test_16bit_grayscale_is_rescaled_to_full_8bit_range():
    values = (GRAY.astype(np.uint16) * 16 + 1000).astype(np.uint16)  # 12-bit data in 16-bit
    rgb = decode(encode(Image.fromarray(values), "PNG"))
    assert rgb.min() == 0 and rgb.max() == 255
    assert np.corrcoef(rgb[..., 0].ravel(), GRAY.ravel())[0, 1] > 0.999


def test_rgba_is_composited_on_black():
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., :3] = np.linspace(50, 250, 40).astype(np.uint8)[:, None, None]  # a film's grey ramp
    rgba[:, :20, 3] = 255  # left half opaque, right half transparent
    rgb = decode(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert (rgb[:, :20] == rgba[:, :20, :3]).all() and (rgb[:, 20:] == 0).all()


def test_palette_and_cmyk_become_rgb():
    palette = Image.fromarray(GRAY).convert("P")
    assert decode(encode(palette, "PNG")).shape == (*GRAY.shape, 3)
    cmyk = Image.fromarray(np.stack([GRAY] * 3, -1)).convert("CMYK")
    rgb = decode(encode(cmyk, "JPEG"))
    assert rgb.shape == (*GRAY.shape, 3)


def test_jpeg_exif_orientation_is_applied():
    wide = Image.fromarray(xray_like(3, (100, 40)))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    rgb = decode(encode(wide, "JPEG", exif=exif))
    assert rgb.shape[:2] == (100, 40)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"this is a text file, not a radiograph\n" * 10, "not an image"),
        (encode(Image.fromarray(GRAY), "PNG")[:300], "cannot decode"),
        (encode(Image.fromarray(np.zeros((16, 200), np.uint8)), "PNG"), "too small"),
    ],
    ids=["empty", "non-image", "truncated", "tiny"],
)
def test_bad_files_are_rejected_with_a_reason(data, reason):
    with pytest.raises(Rejected, match=reason):
        decode(data, "x.png")


def test_decompression_bomb_is_rejected_before_decoding(monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 50 * 50)
    with pytest.raises(Rejected, match="decompression bomb"):
        decode(encode(Image.fromarray(np.zeros((60, 60), np.uint8)), "PNG"))


def test_dicom_monochrome2_with_rescale():
    pixels = GRAY.astype(np.uint16) * 16
    rgb = decode(dicom_bytes(pixels, RescaleSlope=2, RescaleIntercept=-1024), "scan.dcm")
    assert rgb.shape == (*GRAY.shape, 3) and rgb.min() == 0 and rgb.max() == 255
    assert np.corrcoef(rgb[..., 0].ravel(), GRAY.ravel())[0, 1] > 0.999


def test_dicom_monochrome1_is_inverted():
    pixels = GRAY.astype(np.uint16) * 16
    mono2 = decode(dicom_bytes(pixels, "MONOCHROME2"))
    mono1 = decode(dicom_bytes(pixels, "MONOCHROME1"))
    assert np.array_equal(mono1, 255 - mono2)


def test_dicom_window_is_applied():
    pixels = np.tile(np.arange(0, 4000, 40, dtype=np.uint16), (40, 1))
    rgb = decode(dicom_bytes(pixels, WindowCenter=2000, WindowWidth=1000))
    row = rgb[0, :, 0]
    assert row[:10].max() == 0 and row[-10:].min() == 255  # clipped outside the window
    assert 0 < row[50] < 255


def test_dicom_without_pixel_data_is_rejected():
    with pytest.raises(Rejected, match="no pixel data"):
        decode(dicom_bytes(GRAY.astype(np.uint16), with_pixels=False), "empty.dcm")


@settings(max_examples=30, deadline=None)
@given(w=st.integers(32, 300), h=st.integers(32, 300), size=st.sampled_from([224, 299]))
def test_resize_policies_give_the_input_size(w, h, size):
    rgb = np.full((h, w, 3), 255, np.uint8)
    for policy in images.RESIZE_POLICIES:
        out = resize(rgb, size, policy)
        assert out.shape == (size, size, 3) and out.dtype == np.uint8
    padded = resize(rgb, size, "pad")
    if abs(w - h) > max(w, h) * 0.1:  # clearly not square: black bars on two sides
        assert padded.min() == 0
    assert resize(rgb, size, "squash").min() == 255


@pytest.mark.parametrize(
    ("header", "patch"),
    [
        ({"WindowCenter": 2000, "WindowWidth": 0}, None),
        ({"RescaleSlope": "1.5"}, (b"1.5 ", b"abc ")),  # text where a number goes
        ({"WindowCenter": "2000", "WindowWidth": "10"}, (b"2000", b"x   ")),
        ({"RescaleSlope": 0}, None),
        ({"Rows": 64}, (b"\x28\x00\x10\x00US\x02\x00\x40\x00", b"\x28\x00\x10\x00US\x00\x00")),
    ],
    ids=["zero window", "text slope", "text window", "zero slope", "empty rows"],
)
def test_odd_dicom_headers_cost_one_file_never_the_run(header, patch):
    """Headers that made pydicom raise: an image or a reason, nothing else."""
    data = dicom_bytes(xray_like(2, (64, 64)).astype(np.uint16) * 16, **header)
    if patch:
        assert patch[0] in data
        data = data.replace(*patch)
    try:
        rgb = decode(data, "odd.dcm")
    except Rejected as exc:
        assert str(exc)
    else:
        assert rgb.shape[2] == 3 and rgb.min() < rgb.max()


def test_a_blank_image_is_rejected():
    flat = Image.fromarray(np.full((64, 64), 128, np.uint8))
    with pytest.raises(Rejected, match="blank image"):
        decode(encode(flat, "PNG"))


PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


# ---- decoders: only the formats the tool supports ----------------------------------------------

POSTSCRIPT = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nnewpath 0 0 moveto 64 64 lineto stroke\n"
)


def test_postscript_named_png_never_reaches_ghostscript(monkeypatch):
    """Pillow identifies PostScript by its content and hands it to Ghostscript; only PNG, JPEG,
    BMP and TIFF may be opened."""
    from PIL import EpsImagePlugin

    calls = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: calls.append(a) or 1 / 0)
    with pytest.raises(Rejected, match=r"^not an image \(unrecognised format\)$"):
        decode_pixels(POSTSCRIPT, "film.png")
    assert calls == []


def test_one_function_opens_every_image_and_every_dicom():
    """features, predict and the audit's hashes decode through extract/images.py alone (and
    `cxr manifest` reads headers through it), so its limits hold everywhere."""
    package = Path(cxr.__file__).parent
    openers = {
        path.relative_to(package).as_posix()
        for path in package.rglob("*.py")
        if path.relative_to(package).parts[0] not in ("tests", "benchmarks", ".venv")
        and ("Image.open(" in path.read_text() or "dcmread(" in path.read_text())
    }
    assert openers == {"extract/images.py"}


# ---- decompression bombs ------------------------------------------------------------------------


def _encapsulated(name: str, patch) -> bytes:
    """A real compressed DICOM of pydicom's whose codestream is patched by ``patch``."""
    from pydicom.encaps import encapsulate, generate_frames

    ds = pydicom.dcmread(PYDICOM_FILES / name)
    code = bytearray(next(generate_frames(ds.PixelData, number_of_frames=1)))
    patch(code)
    ds.PixelData = encapsulate([bytes(code)])
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def j2k_bomb() -> bytes:
    """JPEG 2000 whose SIZ marker declares 40000 x 40000 px in one tile (the header: 256 x 1024):
    3.2 GB of memory to be told it cannot be decoded."""

    def patch(code):
        struct.pack_into(
            ">8I", code, code.find(b"\xff\x51") + 6, *(40000,) * 2, 0, 0, *(40000,) * 2, 0, 0
        )

    return _encapsulated("JPEG2000.dcm", patch)


def _jpeg_bomb() -> bytes:
    """Baseline JPEG whose frame header declares 30000 x 30000 x 3 (the header: 100 x 100):
    10 GB of memory, 20 s."""
    return _encapsulated(
        "SC_rgb_jpeg_dcmtk.dcm",
        lambda code: struct.pack_into(">HH", code, code.find(b"\xff\xc0") + 5, 30000, 30000),
    )


def _dicom_header(**elements):
    from pydicom.dataset import Dataset
    from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    ds.Modality, ds.PatientID, ds.PatientAge, ds.ViewPosition = "CR", "PAT-1", "093Y", "PA"
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.Rows, ds.Columns = 1, "MONOCHROME2", 64, 64
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for key, value in elements.items():
        setattr(ds, key, value)
    return ds


def _written(ds=None, *, syntax, tail: bytes = b"") -> bytes:
    """Preamble, file meta and the data set (explicit VR little endian), then ``tail``."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = (
        SecondaryCaptureImageStorage,
        generate_uid(),
    )
    meta.TransferSyntaxUID = syntax
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_file_meta_info(fp, meta)
    if ds is not None:
        write_dataset(fp, ds)
    return b"\0" * 128 + b"DICM" + fp.getvalue() + tail


def _deflated_bomb(inflated: int = 3 << 30) -> bytes:
    """Deflated explicit VR: a 64 x 64 header whose pixel data inflates to 3 GB, from 3 MB of
    file (one full-flushed megabyte of zeros, repeated). pydicom inflated all of it, even with
    stop_before_pixels; this machine's kernel killed the process."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, _dicom_header())
    pixel_data = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, inflated)
    head = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = head.compress(fp.getvalue() + pixel_data) + head.flush(zlib.Z_FULL_FLUSH)
    zeros = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = zeros.compress(bytes(1 << 20)) + zeros.flush(zlib.Z_FULL_FLUSH)
    stream += chunk * (inflated >> 20) + zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    return _written(syntax=DeflatedExplicitVRLittleEndian, tail=stream)


def _rle_bomb(side: int = 8900) -> bytes:
    """RLE, 8900 x 8900 px (under the 80-megapixel guard) x 3 samples x 32 bits: 950 MB to
    decode from a file of 700 bytes (12 segments of 2 bytes)."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless

    offsets = [64 + 2 * i for i in range(12)]
    frame = struct.pack("<16I", 12, *offsets, *[0] * 3) + b"\x81\x00" * 12
    ds = _dicom_header(Rows=side, Columns=side, SamplesPerPixel=3, PhotometricInterpretation="RGB")
    ds.PlanarConfiguration, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 0, 32, 32, 31
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    return _written(ds, syntax=RLELossless)


BOMBS = {"j2k": j2k_bomb, "jpeg": _jpeg_bomb, "deflated": _deflated_bomb, "rle": _rle_bomb}
DECODE_UNDER_LIMIT = """
import json, resource, sys
from pathlib import Path
from cxr.extract.images import Rejected, decode_pixels
from cxr.extract.headers import read_header
limit = 1 << 30  # 1 GB of address space: every bomb above needs more
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
found = {}
for file in map(Path, sys.argv[1:]):
    try:
        decode_pixels(file.read_bytes(), file.name)
        found[file.stem] = "decoded"
    except Rejected as exc:
        found[file.stem] = str(exc)
found["header"] = read_header(Path(sys.argv[1]).with_name("deflated.dcm"))
peak = [line for line in open("/proc/self/status") if line.startswith("VmHWM")]
found["peak_mb"] = int(peak[0].split()[1]) // 1024  # this image's own peak (ru_maxrss may
# report the forking parent's)
print(json.dumps(found))
"""


def test_decompression_bombs_are_refused_before_memory_is_taken(tmp_path):
    """Tiny files declaring huge sizes where the 80-megapixel guard (Rows x Columns of the DICOM
    header) did not look; decoded in a subprocess allowed 1 GB of address space."""
    files = []
    for name, make in BOMBS.items():
        files.append(tmp_path / f"{name}.dcm")
        files[-1].write_bytes(make())
        assert files[-1].stat().st_size < 4 << 20
    done = subprocess.run(
        [sys.executable, "-c", DECODE_UNDER_LIMIT, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout)
    for name in BOMBS:
        assert "possible decompression bomb" in found[name], (name, found[name])
    assert "40000x40000" in found["j2k"] and "30000x30000" in found["jpeg"]
    assert "3 samples x 32 bits" in found["rle"] and "more than its header" in found["deflated"]
    header, reason = found["header"]  # cxr manifest reads the header without the 3 GB of pixels
    assert reason == "" and header["modality"] == "CR" and header["age"] == "90"
    assert found["peak_mb"] < 300, found["peak_mb"]


def test_a_codestream_that_disagrees_with_its_header_is_refused():
    """Within the limits, but not the image the header describes: not decoded."""
    small = _encapsulated(
        "SC_rgb_jpeg_dcmtk.dcm",
        lambda code: struct.pack_into(">HH", code, code.find(b"\xff\xc0") + 5, 200, 100),
    )
    with pytest.raises(Rejected, match="declares 100x200 px, its DICOM header 100x100"):
        decode_pixels(small, "x.dcm")


# ---- numbers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("outlier", [np.inf, -np.inf, 1e30, np.nan])
def test_one_odd_float_pixel_does_not_black_out_the_film(outlier):
    """TIFF mode F with one +-inf or 1e30 pixel was embedded as an all-black (or all-white)
    film; it is windowed on the percentiles of its finite values."""
    film = xray_like(3, (96, 80)).astype(np.float32) / 255

    def tiff(values) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(values, mode="F").save(buffer, format="TIFF")
        return buffer.getvalue()

    odd = film.copy()
    odd[5, 5] = outlier
    clean, got = decode_pixels(tiff(film), "a.tif"), decode_pixels(tiff(odd), "b.tif")
    assert got.std() > 30 and np.corrcoef(got.ravel(), clean.ravel())[0, 1] > 0.99


def test_a_float_dicom_with_an_outlier_is_windowed_too():
    film = xray_like(4, (96, 80)).astype(np.float32)
    odd = film.copy()
    odd[0, 0] = 1e30
    ds = _dicom_header(Rows=80, Columns=96, BitsAllocated=32)
    for keyword in ("BitsStored", "HighBit", "PixelRepresentation"):
        delattr(ds, keyword)
    ds.FloatPixelData = odd.tobytes()
    from pydicom.uid import ExplicitVRLittleEndian

    got = decode_pixels(_written(ds, syntax=ExplicitVRLittleEndian), "f.dcm")
    assert got.std() > 30 and np.corrcoef(got.ravel(), film.ravel())[0, 1] > 0.95
