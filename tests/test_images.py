"""Decoding every supported format to 8-bit RGB, and rejecting what cannot be used."""

from __future__ import annotations

import io

import numpy as np
import pytest
from helpers import dicom_bytes, xray_like
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from cxr.extract import images
from cxr.extract.images import Rejected, decode, resize


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
