"""DICOM decoding against pydicom's own test files (a third party's, of every kind): per file,
stored or rejected with which reason. Compressed syntaxes need the `dicom` extra's codecs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from helpers import small_weights

from cxr.extract.images import Rejected, decode
from cxr.extract.runner import extract_features
from cxr.store import load

FILES = Path(pydicom.__file__).parent / "data" / "test_files"

# What each of pydicom's bundled test files must give: stored, or the start of the reason.
EXPECTED = {
    "693_J2KI.dcm": "stored",
    "CT_small.dcm": "stored",
    "ExplVR_BigEnd.dcm": "stored",
    "ExplVR_BigEndNoMeta.dcm": "DICOM has no pixel data",
    "ExplVR_LitEndNoMeta.dcm": "DICOM has no pixel data",
    "GDCMJ2K_TextGBR.dcm": "stored",
    "J2K_pixelrep_mismatch.dcm": "stored",
    "JPEG-lossy.dcm": "cannot decode DICOM pixel data",
    "JPEG2000-embedded-sequence-delimiter.dcm": "too large",  # its SIZ declares 3.7e9 x 1024
    "JPEG2000.dcm": "stored",
    "JPEGLSNearLossless_08.dcm": "too small",
    "JPEGLSNearLossless_16.dcm": "too small",
    "JPGExtended.dcm": "stored",
    "MR_small.dcm": "stored",
    "MR_small_RLE.dcm": "stored",
    "MR_small_bigendian.dcm": "stored",
    "MR_small_expb.dcm": "stored",
    "MR_small_implicit.dcm": "stored",
    "MR_small_jp2klossless.dcm": "stored",
    "MR_small_jpeg_ls_lossless.dcm": "stored",
    "MR_small_padded.dcm": "stored",
    "MR_truncated.dcm": "cannot decode DICOM pixel data",
    "SC_jpeg_no_color_transform.dcm": "stored",
    "SC_jpeg_no_color_transform_2.dcm": "stored",
    "SC_rgb_dcmtk_+eb+cr.dcm": "stored",
    "SC_rgb_dcmtk_+eb+cy+n1.dcm": "stored",
    "SC_rgb_dcmtk_+eb+cy+n2.dcm": "stored",
    "SC_rgb_dcmtk_+eb+cy+np.dcm": "stored",
    "SC_rgb_dcmtk_+eb+cy+s2.dcm": "stored",
    "SC_rgb_dcmtk_+eb+cy+s4.dcm": "stored",
    "SC_rgb_gdcm_KY.dcm": "stored",
    "SC_rgb_jls_lossy_line.dcm": "stored",
    "SC_rgb_jls_lossy_sample.dcm": "stored",
    "SC_rgb_jpeg.dcm": "stored",
    "SC_rgb_jpeg_app14_dcmd.dcm": "stored",
    "SC_rgb_jpeg_dcmd.dcm": "stored",
    "SC_rgb_jpeg_dcmtk.dcm": "stored",
    "SC_rgb_jpeg_gdcm.dcm": "stored",
    "SC_rgb_jpeg_lossy_gdcm.dcm": "stored",
    "SC_rgb_rle.dcm": "stored",
    "SC_rgb_rle_16bit.dcm": "stored",
    "SC_rgb_rle_16bit_2frame.dcm": "multi-frame DICOM",
    "SC_rgb_rle_2frame.dcm": "multi-frame DICOM",
    "SC_rgb_rle_32bit.dcm": "stored",
    "SC_rgb_rle_32bit_2frame.dcm": "multi-frame DICOM",
    "SC_rgb_small_odd.dcm": "too small",
    "SC_rgb_small_odd_big_endian.dcm": "too small",
    "SC_rgb_small_odd_jpeg.dcm": "too small",
    "SC_ybr_full_422_uncompressed.dcm": "stored",
    "UN_sequence.dcm": "DICOM has no pixel data",
    "badVR.dcm": "cannot decode DICOM pixel data",
    "empty_charset_LEI.dcm": "DICOM has no pixel data",
    "examples_jpeg2k.dcm": "stored",
    "examples_overlay.dcm": "stored",
    "examples_palette.dcm": "stored",
    "examples_rgb_color.dcm": "stored",
    "examples_ybr_color.dcm": "multi-frame DICOM",
    "image_dfl.dcm": "stored",
    "liver_1frame.dcm": "only two grey levels",  # a segmentation (SEG, 1 bit): a mask
    "liver_expb_1frame.dcm": "only two grey levels",
    "meta_missing_tsyntax.dcm": "cannot decode DICOM pixel data",
    "nested_priv_SQ.dcm": "cannot decode DICOM pixel data",
    "no_meta.dcm": "DICOM has no pixel data",
    "no_meta_group_length.dcm": "DICOM has no pixel data",
    "priv_SQ.dcm": "DICOM has no pixel data",
    "reportsi.dcm": "DICOM has no pixel data",
    "reportsi_with_empty_number_tags.dcm": "DICOM has no pixel data",
    "rtdose.dcm": "multi-frame DICOM",
    "rtdose_1frame.dcm": "too small",
    "rtdose_expb.dcm": "multi-frame DICOM",
    "rtdose_expb_1frame.dcm": "too small",
    "rtdose_rle.dcm": "multi-frame DICOM",
    "rtdose_rle_1frame.dcm": "too small",
    "rtplan.dcm": "DICOM has no pixel data",
    "rtplan_truncated.dcm": "DICOM has no pixel data",
    "rtstruct.dcm": "DICOM has no pixel data",
    "test-SR.dcm": "DICOM has no pixel data",
    "waveform_ecg.dcm": "DICOM has no pixel data",
}
LOSSLESS_TWINS = (  # one MR image in lossless transfer syntaxes: the same pixels every time
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_expb.dcm",
    "MR_small_implicit.dcm",
)


def _file(name: str) -> Path:
    path = FILES / name
    if not path.is_file():
        pytest.skip(f"{name} is not among this pydicom's test files")
    return path


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_pydicoms_test_files(name):
    path, expected = _file(name), EXPECTED[name]
    if expected == "stored":
        rgb = decode(path.read_bytes(), path.name)
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
        assert rgb.std() > 0, "decoded to a constant image"
    else:
        with pytest.raises(Rejected) as caught:
            decode(path.read_bytes(), path.name)
        assert str(caught.value).startswith(expected), str(caught.value)


def test_lossless_transfer_syntaxes_decode_to_the_same_image():
    reference = decode(_file("MR_small.dcm").read_bytes(), "MR_small.dcm")
    for name in LOSSLESS_TWINS:
        np.testing.assert_array_equal(decode(_file(name).read_bytes(), name), reference, name)


def test_twelve_bit_jpeg_extended_keeps_its_range():
    """JPEG Extended, 12 bits: decoded by libjpeg (Pillow cannot), windowed to the full range."""
    rgb = decode(_file("JPGExtended.dcm").read_bytes(), "JPGExtended.dcm")
    assert rgb.min() == 0 and rgb.max() == 255 and len(np.unique(rgb)) > 100


def test_features_stores_and_rejects_the_test_files_as_expected(tmp_path):
    data = tmp_path / "data" / "dicom"
    data.mkdir(parents=True)
    for name in EXPECTED:
        if (FILES / name).is_file():
            shutil.copy(FILES / name, data / name)
    [summary] = extract_features(
        data=tmp_path / "data",
        manifest=None,
        backbones=["mobilenet_025"],
        weights=small_weights(),
        features_dir=tmp_path / "features",
        batch_size=8,
        layout="folders",  # one class folder: the pydicom files, a class of their own
    )
    fs = load(tmp_path / "features", "mobilenet_025")
    present = [n for n in EXPECTED if (FILES / n).is_file()]
    stored = sorted(n for n in present if EXPECTED[n] == "stored")
    assert sorted(Path(p).name for p in fs.rows["path"]) == stored
    names = [Path(p).name for p in fs.rejected["path"]]
    reasons = dict(zip(names, fs.rejected["reason"], strict=True))
    assert sorted(reasons) == sorted(n for n in present if EXPECTED[n] != "stored")
    assert all(reasons[n].startswith(EXPECTED[n]) for n in reasons)
    assert summary.stored == len(stored)
