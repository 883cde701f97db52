"""Stores read from disk (`cxr.store`): a damaged or crafted store is one line for every
reader, and never makes the tool read another file. Hostile cases moved from
tests/test_hostile.py, every case kept."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from helpers import FOUR, save_png
from typer.testing import CliRunner

from cxr import store
from cxr.cli import app
from cxr.errors import CxrError

runner = CliRunner()


# ---- stores read from disk ----------------------------------------------------------------------


def _damage(path: Path, edit) -> Path:
    import h5py

    with h5py.File(path, "r+") as f:
        edit(f)
    return path


def _replace(f, name: str, data, **kwargs) -> None:
    del f[name]
    f.create_dataset(name, data=data, **kwargs)


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda f: _replace(f, "X", f["X"][:-2]), r"X is float32 \(\d+, 8\), expected float32"),
        (lambda f: _replace(f, "X", f["X"][()].astype("f8")), "X is float64"),
        (lambda f: _replace(f, "X", f["X"][:, :4]), r"X is float32 \(\d+, 4\), expected"),
        (lambda f: _replace(f, "rows/label", f["rows/label"][:-1]), "rows/label has"),
        (
            lambda f: _replace(f, "rows/label", np.arange(len(f["X"]))),
            "rows/label is int64 .* not one column of text",
        ),
        (lambda f: f.attrs.__delitem__("backbone"), "attribute backbone is missing"),
        (lambda f: f.attrs.__setitem__("dim", "8"), "attribute dim is '8', not int"),
        (lambda f: f.attrs.__setitem__("weights_seed", 0.5), "attribute weights_seed is 0.5"),
    ],
    ids=[
        "X-short",
        "X-float64",
        "X-narrow",
        "labels-short",
        "labels-numbers",
        "no-backbone",
        "dim-text",
        "seed-float",
    ],
)
def test_a_damaged_store_is_one_line_for_every_reader(make_synthetic_store, edit, reason):
    """Before: loaded (and evaluate or train failed later, or silently fitted the wrong rows),
    and `cxr info` listed it as healthy (or failed with a KeyError)."""
    from cxr.store import StoreError, describe, load

    path = _damage(make_synthetic_store(), edit)
    for read in (load, describe):
        with pytest.raises(StoreError, match=f"mobilenet_v2.h5: damaged feature store: {reason}"):
            read(path)
    result = runner.invoke(app, ["info", "--features", str(path.parent)])
    assert result.exit_code == 2 and "damaged" in result.output and "Traceback" not in result.output


def test_a_store_with_nan_vectors_is_refused_when_loaded(make_synthetic_store):
    from cxr.store import StoreError, load

    def poison(f):
        X = f["X"][()]
        X[3, 2] = np.nan
        f["X"][...] = X

    path = _damage(make_synthetic_store(), poison)
    with pytest.raises(StoreError, match=r"1 row\(s\) have NaN or infinite .* is row 3\)"):
        load(path)


def test_a_store_cannot_make_the_tool_read_another_file(make_synthetic_store, tmp_path):
    """HDF5 can keep a dataset's bytes in any other file (external storage) or link to another
    file's object: a store handed over would be read from wherever it points."""
    import h5py

    from cxr.store import StoreError, load

    secret = tmp_path / "secret.bin"
    secret.write_bytes(os.urandom(1 << 16))
    path = make_synthetic_store()
    with h5py.File(path, "r+") as f:
        shape = f["X"].shape
        del f["X"]
        f.create_dataset("X", shape=shape, dtype="f4", external=[(str(secret), 0, 1 << 16)])
    with pytest.raises(StoreError, match="X is stored outside the store file"):
        load(path)
    other = make_synthetic_store(directory=tmp_path / "other")
    path = make_synthetic_store(backbone="xception")
    with h5py.File(path, "r+") as f:
        del f["rows/label"]
        f["rows/label"] = h5py.ExternalLink(str(other), "rows/label")
    with pytest.raises(StoreError, match="rows/label is a link to somewhere else"):
        load(path)


def test_manifest_columns_named_like_markup_are_printed_as_text(tmp_path):
    """Rich read a column name of a hospital CSV as markup: '[/]_id' crashed the summary."""
    data = tmp_path / "data"
    save_png(data / "covid" / "a.png", 1)
    (data / "m.csv").write_text("path,label,[/]_id,[bold]age\ncovid/a.png,covid,123,95\n")
    args = ["manifest", str(data / "m.csv"), "--out", str(tmp_path / "out.csv"), "--key", "k"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "[/]_id 1" in result.output and "keeps them): [bold]age" in result.output


# ---- traps a user met (issue 15; moved from tests/test_traps.py) --------------------


def test_loading_a_folder_of_several_stores_names_them(make_synthetic_store):
    first = make_synthetic_store(FOUR)
    make_synthetic_store(FOUR, backbone="xception")
    with pytest.raises(CxrError, match="2 stores here \\(mobilenet_v2, xception\\); name the"):
        store.load(first.parent)
    assert len(store.load(first.parent, "xception")) == len(store.load(first))
