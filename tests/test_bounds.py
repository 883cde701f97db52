"""Bounded before anything is read (issue 38): sizes before a byte is hashed, a configuration's
depth, control characters in headers and cells, and CSV cells for any list separator. The
cases that hung or crashed before run in subprocesses with a time limit, so a regression is a
failure, not a stuck test run."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import SYNTHETIC_ATTRS, dicom_bytes, save_png, xray_like
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from cxr.cli import app

runner = CliRunner()
HUGE = 400 << 30  # a disk image copied by mistake: sparse, so it costs no disk here
CONTROLS = "".join(map(chr, [*range(0x20), 0x7F, *range(0x80, 0xA0)]))


def sparse(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.truncate(HUGE)
    return path


def within(seconds: float, script: str, *args: str) -> subprocess.CompletedProcess:
    """``script`` in a fresh interpreter; it must end within ``seconds`` (it hung before)."""
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(script), *args],
            capture_output=True,
            text=True,
            timeout=seconds,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after {seconds} s")
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < seconds
    return done


def test_a_400_gb_file_named_png_is_refused_before_it_is_hashed(tmp_path):
    """Before: every listed file was hashed in full, and this one ran until killed at 150 s."""
    data = tmp_path / "data"
    save_png(data / "covid" / "a.png", 1)
    save_png(data / "normal" / "b.png", 2)
    sparse(data / "covid" / "disk-image.png")
    done = within(
        30,
        """
        import sys
        from pathlib import Path
        from cxr.extract.discovery import discover
        found = discover(Path(sys.argv[1]), None)
        print(len(found.entries), found.rejects[0].path, found.rejects[0].reason)
        """,
        str(data),
    )
    assert done.stdout.startswith(
        "2 covid/disk-image.png too large to be one image (429,496,729,600"
    )


def test_a_400_gb_mask_is_refused_before_it_is_hashed(tmp_path):
    """The same for a mask under --region lungs-*: its digest hashed every mask in full."""
    masks = tmp_path / "masks"
    save_png(masks / "covid" / "a.png", 1)
    sparse(masks / "covid" / "b.png")
    done = within(
        30,
        """
        import sys
        from pathlib import Path
        from cxr.extract.dataset import Entry
        from cxr.extract.hashing import HashCache
        from cxr.extract.regions import Region, masks_digest
        region = Region.parse("lungs-only:" + sys.argv[1])
        films = [Entry(p, Path(p), "covid") for p in ("covid/a.png", "covid/b.png")]
        print(masks_digest(region, films, HashCache().sha256))
        """,
        str(masks),
    )
    assert len(done.stdout.strip()) == 64


def test_a_manifest_and_headers_with_nul_bytes_never_reach_the_csv(tmp_path):
    """A buggy PACS writer's NUL in ManufacturerModelName, and NULs, escapes and line breaks
    in an existing manifest's cells: `cxr manifest` wrote them into its CSV."""
    data = tmp_path / "data"
    film = xray_like(1, (64, 64)).astype(np.uint16) * 16
    (data / "covid").mkdir(parents=True)
    (data / "covid" / "a.dcm").write_bytes(
        dicom_bytes(film, ManufacturerModelName="DR-X\0\0junk", InstitutionName="Gen\0eral")
    )
    save_png(data / "normal" / "b.png", 2)
    given = data / "export.csv"
    given.write_text(
        "path,label,site,finding\n"
        "covid/a.dcm,covid,north\0wing,\x1b[31mred\n"
        'normal/b.png,normal,"south\r\nwing",ok\x07\n'
    )
    out = tmp_path / "manifest.csv"
    key = "a study key of 32 hex digits: " + "ab" * 16
    result = runner.invoke(app, ["manifest", str(given), "--out", str(out), "--key", key])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert not set(text) & (set(CONTROLS) - {"\n"})
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["site"] for r in rows] == ["northwing", "south  wing"]
    assert rows[0]["model"] == "DR-Xjunk" and rows[0]["finding"] == "[31mred"


@pytest.mark.slow  # a whole `cxr features` run in a subprocess
def test_features_survives_nul_cells_and_a_disk_image_in_one_run(tmp_path):
    """Before: one NUL in one manifest cell ended every `cxr features` run in `ValueError:
    embedded null byte` (no store, run after run), and the disk image hung it. Now: the store
    is published, the NUL is gone, the disk image is one reject."""
    data = tmp_path / "data"
    for i, name in enumerate(("covid/a.png", "covid/b.png", "normal/c.png", "normal/d.png")):
        save_png(data / name, i)
    sparse(data / "normal" / "disk.png")
    (data / "manifest.csv").write_text(
        "path,label,patient_id,site\n"
        "covid/a.png,covid,p1,north\0wing\ncovid/b.png,covid,p\x002,south\n"
        "normal/c.png,normal,p3,east\nnormal/d.png,normal,p4,west\nnormal/disk.png,normal,p5,x\n"
    )
    features = tmp_path / "features"
    args = ["features", str(data), "-b", "mobilenet_025", "--weights", "random"]
    done = subprocess.run(
        [_cxr(), *args, "--features", str(features)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    from cxr.store import load

    fs = load(features, "mobilenet_025")
    assert sorted(fs.column("site")) == ["east", "northwing", "south", "west"]
    assert "p2" in fs.patient_ids
    reasons = dict(zip(fs.rejected["path"], fs.rejected["reason"], strict=True))
    assert reasons["normal/disk.png"].startswith("too large to be one image")


def _cxr() -> str:
    return str(Path(sys.executable).with_name("cxr"))


def _deep_toml(path: Path, depth: int = 5000) -> Path:
    path.write_text(f"[mlp]\nalpha = {'[' * depth}1e-3{']' * depth}\n")
    return path


@pytest.mark.parametrize("track", [False, True], ids=["config", "config-and-track"])
def test_a_config_nested_5000_deep_is_one_line(make_synthetic_store, tmp_path, track):
    """Before: a RecursionError traceback (with --track too, which reads the file again)."""
    config = _deep_toml(tmp_path / "deep.toml")
    args = ["evaluate", "--features", str(make_synthetic_store().parent), "--config", str(config)]
    result = runner.invoke(app, [*args, *(["--track"] if track else [])])
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    [line] = result.stderr.strip().splitlines()
    assert f"{config}: the " in line and "nests values deeper than 16 levels" in line


def test_a_config_just_deep_enough_for_a_grid_is_read(make_synthetic_store, tmp_path):
    config = tmp_path / "grid.toml"
    config.write_text("[mlp]\nhidden_layer_sizes = [[16], [32, 16]]\n")
    from cxr.classify.heads import parse_params

    assert parse_params((), config)["mlp"]["hidden_layer_sizes"] == ((16,), (32, 16))


# ---- CSV cells, for any list separator --------------------------------------------------------


def _cells(line: str, separator: str) -> list[str]:
    """How a spreadsheet that splits on ``separator`` and ignores quotes sees a line."""
    return line.split(separator)


@pytest.mark.parametrize("separator", [",", ";", "\t"])
def test_no_cell_starts_a_formula_whatever_the_separator(tmp_path, separator):
    """``x;=1+1`` was escaped for a comma-separated reader only: German or French Excel splits
    it at the ``;`` and runs ``=1+1``."""
    from cxr.extract.headers import StudyKey
    from cxr.extract.layouts import ReadOptions
    from cxr.extract.layouts.table import Manifest
    from cxr.extract.manifest import build_manifest

    data = tmp_path / "data"
    names = ["x;=1+1.png", "a\t@SUM(A1).png", "b,-2+3.png", "c;+cmd.png", "'=d.png", "e;'=f.png"]
    for i, name in enumerate(names):
        save_png(data / "covid" / name, i)
    out = data / "manifest.csv"
    build_manifest(data, out, key=StudyKey(tmp_path), keep_ids=True)
    for line in out.read_text().splitlines():
        for cell in _cells(line, separator):
            assert not cell.strip('"').startswith(("=", "+", "-", "@")), (separator, line)
    listing = Manifest(out).read(data, ReadOptions())
    assert not listing.rejects
    assert sorted(e.path for e in listing.entries) == sorted(f"covid/{n}" for n in names)


def test_every_csv_cell_loses_control_characters_and_is_escaped_after_separators():
    from cxr.files import csv_cell

    assert csv_cell("x;=1+1") == "x;'=1+1" and csv_cell("a\0b") == "ab"
    assert csv_cell("=1;@2\n-3") == "'=1;'@2 -3"  # a line break is a space: no new cell


@given(st.text(alphabet=st.sampled_from(list("=+-@'\t\r\n,;ab x")), max_size=12))
def test_escaping_round_trips_any_cell(value):
    from cxr.files import SEPARATORS, escape_cell, unescape_cell

    escaped = escape_cell(value)
    assert unescape_cell(escaped) == value
    for separator in SEPARATORS:
        for cell in escaped.split(separator):
            assert not cell.startswith(("=", "+", "-", "@")) or cell == ""


def test_sizes_of_a_file_that_grows_are_still_bounded(tmp_path):
    """`read_regular` sizes its buffer from the file, not from the limit, and still refuses
    a file that grows past the limit meanwhile."""
    from cxr.files import FileTooLarge, read_regular

    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    assert read_regular(path, 100) == b"x" * 10
    with pytest.raises(FileTooLarge):
        read_regular(path, 5)
    assert os.path.getsize(path) == 10


def test_a_nul_from_any_reader_is_dropped_where_text_is_stored(tmp_path):
    """HDF5 text cannot hold a NUL; a reader that passes one on (a sheet's cell, a rejected
    path) costs that cell its NUL, never the publish ('VLEN strings do not support embedded
    NULLs' before)."""
    from cxr.store import load
    from cxr.store.schema import (
        ROW_COLUMNS,
        Reject,
        StoreContent,
        Table,
        reject_table,
        write_atomic,
    )

    row = {
        "id": "a" * 64,
        "path": "covid/a.png",
        "label": "covid",
        "patient_id": "p\0",
        "source": "",
    }
    content = StoreContent(
        {**SYNTHETIC_ATTRS, "backbone": "mobilenet_v2", "dim": 2},
        Table.from_records([row], ROW_COLUMNS),
        Table.from_records([{"site": "north\0wing"}], ("site",)),
        np.ones((1, 2)),
        reject_table([Reject("covid/b\0.png", "the manifest's path holds a NUL character")]),
    )
    write_atomic(tmp_path / "mobilenet_v2.h5", content)
    fs = load(tmp_path / "mobilenet_v2.h5")
    assert list(fs.column("site")) == ["northwing"] and list(fs.patient_ids) == ["p"]
    assert list(fs.rejected["path"]) == ["covid/b.png"]
