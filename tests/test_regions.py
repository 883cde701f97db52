"""Regions of the film (`--region`): the box's geometry, stores that differ from the full one only
where they should, masks from another tool, and the paired comparison with the whole films."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import save_png, small_weights, xray_like
from PIL import Image
from typer.testing import CliRunner

from cxr.cli import app
from cxr.errors import CxrError
from cxr.extract.dataset import Entry
from cxr.extract.images import Rejected
from cxr.extract.regions import Region, centre_box
from cxr.extract.runner import extract_features
from cxr.store import load

runner = CliRunner()


def test_the_central_box_spans_its_share_of_each_side():
    inside = centre_box(100, 80, 0.6)
    rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    assert (rows[0], rows[-1], cols[0], cols[-1]) == (20, 79, 16, 63)
    assert inside.sum() == 60 * 48 and np.array_equal(inside, inside[::-1, ::-1])  # centred
    film = np.full((100, 80), 200, np.uint8)
    a = _entry("a.png")
    masked = Region.parse("centre-masked").apply(film, a)
    only = Region.parse("centre-only").apply(film, a)
    assert (masked[inside] == 0).all() and (masked[~inside] == 200).all()
    assert (only[~inside] == 0).all() and (only[inside] == 200).all()
    assert Region.parse("full").apply(film, a) is film
    colour = np.full((100, 80, 3), 90, np.uint8)
    assert (Region.parse("centre-only", 0.5).apply(colour, a)[0, 0] == 0).all()


def _entry(path: str, mask: Path | None = None) -> Entry:
    return Entry(path=path, file=Path(path), label="", mask=mask)


@pytest.mark.parametrize(
    "text, message",
    [
        ("centre", "choose from full, centre-masked, centre-only"),
        ("lungs-only:", "name the folder of masks"),
        ("lungs-only:/nowhere", "/nowhere is not a folder of masks"),
    ],
)
def test_a_region_that_cannot_work_is_one_line(text, message):
    with pytest.raises(CxrError, match=message):
        Region.parse(text)
    with pytest.raises(CxrError, match=r"`region_box` 0\.99"):
        Region.parse("centre-masked", 0.99)


def _films(root, pairs):
    """Class folders of films made by pasting a centre and a border (uint8 arrays)."""
    for label, (border, centre) in pairs.items():
        film = xray_like(border, (120, 120)).copy()
        inner = centre_box(120, 120, 0.6)
        film[inner] = xray_like(centre, (120, 120))[inner]
        (root / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(film).save(root / label / f"{border}-{centre}.png")
    return root


def _embed(data, out, region):
    extract_features(data=data, manifest=None, backbones=["mobilenet_025"],
                     weights=small_weights(), features_dir=out, region=region)  # fmt: skip
    kind = region.partition(":")[0]
    name = "mobilenet_025" if kind == "full" else f"mobilenet_025@{kind}"
    fs = load(out, name)
    return {p.split("/")[-1]: x for p, x in zip(fs.rows["path"], fs.X, strict=True)}, fs


def test_a_masked_store_differs_from_the_full_one_only_where_it_should(tmp_path):
    """Films that share their border but not their centre: identical once the centre is black,
    different whole; films that share their centre: identical with the centre alone."""
    data = _films(tmp_path / "data", {"a": (1, 2), "b": (1, 3), "c": (4, 2)})
    out = tmp_path / "features"
    full, _ = _embed(data, out, "full")
    masked, fs = _embed(data, out, "centre-masked")
    only, _ = _embed(data, out, "centre-only")
    np.testing.assert_allclose(masked["1-2.png"], masked["1-3.png"], atol=1e-6)  # same border
    assert np.abs(full["1-2.png"] - full["1-3.png"]).max() > 1e-3
    np.testing.assert_allclose(only["1-2.png"], only["4-2.png"], atol=1e-6)  # same centre
    assert np.abs(masked["1-2.png"] - masked["4-2.png"]).max() > 1e-3
    assert fs.attrs["region"] == "centre-masked" and fs.attrs["region_box"] == 0.6
    assert fs.name == "mobilenet_025@centre-masked" and fs.backbone == "mobilenet_025"
    assert sorted(p.name for p in out.glob("*.h5")) == [
        "mobilenet_025.h5", "mobilenet_025@centre-masked.h5", "mobilenet_025@centre-only.h5",
    ]  # fmt: skip


def test_lung_masks_from_another_tool(tmp_path):
    data = tmp_path / "data"
    for n, label in enumerate(("covid", "normal")):
        save_png(data / label / "f.png", n, (64, 48))
    masks = tmp_path / "masks"
    for label in ("covid", "normal"):
        (masks / label).mkdir(parents=True)
        mask = np.zeros((48, 64), np.uint8)
        mask[10:40, 8:30] = 255
        Image.fromarray(mask).save(masks / label / "f.png")
    region = Region.parse(f"lungs-only:{masks}")
    film = np.full((48, 64), 100, np.uint8)
    kept = region.apply(film, _entry("covid/f.png"))
    assert (kept[10:40, 8:30] == 100).all() and kept.sum() == 100 * 30 * 22
    with pytest.raises(Rejected, match=r"no mask for it .*missing/f.png"):
        region.apply(film, _entry("missing/f.png"))
    with pytest.raises(Rejected, match="is 64x48 px, the film 32x32: not the film's shape"):
        region.apply(np.full((32, 32), 100, np.uint8), _entry("covid/f.png"))
    twice = region.apply(np.full((96, 128), 100, np.uint8), _entry("covid/f.png"))
    assert (twice[20:80, 16:60] == 100).all() and twice.sum() == 100 * 60 * 44  # scaled x2
    out = tmp_path / "features"
    _, fs = _embed(data, out, f"lungs-only:{masks}")
    first = fs.attrs["region_masks_sha256"]
    assert fs.name == "mobilenet_025@lungs-only" and len(first) == 64
    Image.fromarray(np.full((48, 64), 255, np.uint8)).save(masks / "normal" / "f.png")
    with pytest.raises(CxrError, match="region_masks_sha256: stored"):  # never mixed
        _embed(data, out, f"lungs-only:{masks}")


def test_evaluate_pairs_a_masked_store_with_its_whole_films(make_synthetic_store, tmp_path):
    path = make_synthetic_store({"covid": 12, "normal": 12}, backbone="mobilenet_v2")
    noise = np.random.default_rng(0).normal(size=(len(load(path)), 8)).astype(np.float32)
    make_synthetic_store(
        {"covid": 12, "normal": 12}, backbone="mobilenet_v2", X=load(path).X + noise,
        attrs={"region": "centre-masked", "region_box": 0.6},
        directory=tmp_path / "features", seed=0,
    )  # fmt: skip
    # the factory names a store after its backbone: move the masked one to its own name
    masked = tmp_path / "features" / "mobilenet_v2.h5"
    assert load(masked).name == "mobilenet_v2@centre-masked"
    masked.rename(tmp_path / "features" / "mobilenet_v2@centre-masked.h5")
    make_synthetic_store({"covid": 12, "normal": 12}, backbone="mobilenet_v2")
    args = ["evaluate", "--features", str(tmp_path / "features"), "--head", "logreg"]
    result = runner.invoke(app, [*args, "--folds", "3", "--bootstrap", "50", "--json", "-"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    whole, part = report["results"]
    assert (whole["backbone"], part["backbone"]) == ("mobilenet_v2", "mobilenet_v2@centre-masked")
    gain = part["region_gain"]
    assert gain["region"] == "centre-masked"
    assert gain["versus"] == "mobilenet_v2 + logreg (whole films)"
    assert gain["n_paired"] == whole["n"] and "region_gain" not in whole
    assert report["provenance"]["stores"]["mobilenet_v2@centre-masked"]["region"] == "centre-masked"
    assert "Regions: mobilenet_v2@centre-masked + logreg vs mobilenet_v2 + logreg" in (
        result.stderr.replace("\n", " ")
    )
