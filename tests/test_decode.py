"""`decode` draft: JPEG films decoded at a reduced scale (libjpeg's DCT scaling), never below
the input size, into stores of their own; every other format, and every refusal, as exact."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pydicom
import pytest
from helpers import by_id, extract_real, shared_films, xray_like
from PIL import Image
from typer.testing import CliRunner

from cxr import store
from cxr.cli import app
from cxr.errors import CxrError
from cxr.extract import images
from cxr.extract.images import Rejected, decode_pixels, resize
from cxr.extract.runner import extract_features

BACKBONE = "mobilenet_025"
DRAFT = f"{BACKBONE}+draft"  # a store of its own, beside the exact one
# Measured on the 36 shared films below (mobilenet_025, TensorFlow): 3 of them are drafted,
# cosine to the exact vectors 0.9988 at least; bound with margin.
MIN_COSINE = 0.99


def encoded(width: int, height: int, seed: int = 0, mode: str = "L", kind: str = "JPEG") -> bytes:
    """A textured film-like picture of that size (not mostly black: not taken for a mask)."""
    smooth = Image.fromarray(xray_like(seed)).resize((width, height), Image.Resampling.BICUBIC)
    grain = np.random.default_rng(seed).integers(0, 24, (height, width), dtype=np.uint8)
    image = Image.fromarray(np.asarray(smooth) // 2 + 64 + grain).convert(mode)
    out = io.BytesIO()
    image.save(out, kind, **({"quality": 90} if kind == "JPEG" else {}))
    return out.getvalue()


@pytest.mark.parametrize(
    ("width", "height"), [(1000, 900), (3000, 2400), (450, 2000), (447, 447), (2000, 230)]
)
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_draft_reads_fewer_jpeg_pixels_never_below_the_input(width, height, mode):
    data = encoded(width, height, mode=mode)
    exact, draft = decode_pixels(data), decode_pixels(data, draft=224)
    assert exact.shape[:2] == (height, width) and draft.ndim == exact.ndim
    assert min(draft.shape[:2]) >= 224  # the resize after it only shrinks
    scale = min(width // 224, height // 224)
    if scale >= 2:  # 1/2, 1/4 or 1/8: other pixels, the same input once resized
        assert draft.shape[0] < height and draft.shape[1] < width
        assert resize(draft, 224).shape == resize(exact, 224).shape == (224, 224, 3)
        assert not np.array_equal(resize(draft, 224), resize(exact, 224))
    else:  # too small to be scaled: every pixel, as exact
        assert np.array_equal(draft, exact)


def test_other_formats_decode_exactly_under_draft():
    png = encoded(1200, 1000, kind="PNG")
    assert np.array_equal(decode_pixels(png, "film.png", 224), decode_pixels(png, "film.png"))
    dicom = pydicom.data.get_testdata_file("SC_rgb_jpeg_dcmtk.dcm", read=False)
    with open(dicom, "rb") as fh:
        data = fh.read()
    assert np.array_equal(decode_pixels(data, "x.dcm", 32), decode_pixels(data, "x.dcm"))


def test_hostile_jpegs_get_the_same_rejections_under_draft(monkeypatch):
    whole = encoded(1200, 1000)
    truncated = whole[: len(whole) // 2]
    for data in (truncated, b"not a jpeg at all" * 20, b""):
        with pytest.raises(Rejected) as exact:
            decode_pixels(data, "x.jpg")
        with pytest.raises(Rejected) as draft:
            decode_pixels(data, "x.jpg", 224)
        assert str(draft.value) == str(exact.value)
    monkeypatch.setattr(images, "MAX_PIXELS", 1000 * 1000)  # the size declared, not drafted
    with pytest.raises(Rejected, match="possible decompression bomb"):
        decode_pixels(whole, "x.jpg", 224)


def test_decode_is_a_features_option_checked_at_the_boundary(tmp_path):
    shown = CliRunner().invoke(app, ["features", "--help"], env={"COLUMNS": "2000"}).output
    assert "--decode" in shown and "draft" in shown
    with pytest.raises(CxrError, match=r"^`decode` fast: choose from exact, draft$"):
        extract_features(
            data=tmp_path, manifest=None, backbones=[BACKBONE], weights=[], features_dir=tmp_path,
            decode="fast",
        )  # fmt: skip
    done = CliRunner().invoke(
        app, ["features", str(tmp_path), "--decode", "fast"], env={"COLUMNS": "2000"}
    )
    assert done.exit_code == 2 and "'fast' is not one of 'exact', 'draft'" in done.output, (
        done.output
    )


@pytest.fixture(scope="module")
def films(tmp_path_factory):
    """Real shared films (the JPEGs among them the ones draft reads otherwise)."""
    return shared_films(tmp_path_factory.mktemp("films"), 12)


def run(data, out, **kw):
    return extract_real(data, out, BACKBONE, 16, runtime="tensorflow", **kw)


def test_a_draft_store_is_its_own_near_the_exact_one(films, tmp_path):
    run(films, tmp_path / "f")
    exact_store = tmp_path / "f" / f"{BACKBONE}.h5"
    before = exact_store.read_bytes()
    run(films, tmp_path / "f", decode="draft")
    assert exact_store.read_bytes() == before  # untouched
    draft = store.load(tmp_path / "f", DRAFT)
    assert draft.attrs["decode"] == "draft" and store.load(exact_store).attrs["decode"] == "exact"
    exact_ids, exact = by_id(store.load(exact_store))
    draft_ids, drafted = by_id(draft)
    assert list(exact_ids) == list(draft_ids)
    cosine = (
        (exact * drafted).sum(1) / np.linalg.norm(exact, axis=1) / np.linalg.norm(drafted, axis=1)
    )
    assert cosine.min() > MIN_COSINE and (cosine < 1 - 1e-6).any()  # other pixels, near


def test_draft_rows_are_refused_in_an_exact_store(films, tmp_path):
    """A decode is identity: draft rows are refused in an exact store even when it lies where
    the draft store would be, and it is left as it was."""
    run(films, tmp_path / "f")
    planted = tmp_path / "f" / f"{DRAFT}.h5"
    shutil.copy(tmp_path / "f" / f"{BACKBONE}.h5", planted)
    before = planted.read_bytes()
    with pytest.raises(CxrError, match="decode: stored 'exact' vs now 'draft'"):
        run(films, tmp_path / "f", decode="draft")
    assert planted.read_bytes() == before
