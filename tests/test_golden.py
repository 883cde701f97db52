"""The JSON of a fixed set of `cxr evaluate` runs against files kept in tests/golden/ (written by
an earlier version of the code): a refactoring that changes a number, a key or its order fails
here. Library versions and temporary paths are masked; everything else is compared as text, and
where the text differs, value by value: keys, their order, strings, integers and the shape of
every list exactly, floats to 1e-6 relative. The same code gives the same bytes on one machine,
but BLAS and NumPy take other SIMD paths on other CPUs (AVX2 against AVX-512): an MLP or a
logistic regression then ends 1e-8 away, which is no change of behaviour.

After a deliberate change of the output, regenerate the files and review their diff:
``CXR_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py``.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cxr.cli import app
from cxr.store.schema import StoreContent, read_content, write_atomic

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("CXR_UPDATE_GOLDEN") == "1"
FAST = ["--bootstrap", "200", "--jobs", "1", "--quiet"]
# Run name -> evaluate options; each runs on the same two synthetic stores.
RUNS = {
    "cv": "--head logreg --head knn --head mlp --folds 5 --predictions",
    "cv-binary-repeats": "--head logreg --binary covid --folds 4 --repeats 2",
    "cv-by-image-roc": "--head knn --group-by none --folds 3 --metric roc_auc",
    "cv-merge-classes": "--head logreg --merge sick=covid,bacterial --classes sick,normal "
    "--where site=A,B --folds 3 --confounds site",
    "leave-out": "--head logreg --head knn --leave-out site",
    "external": "--head logreg --head forest --test-where site=B",
    "curves": "--head logreg --folds 3 --train-sizes 4,8,all --curve-draws 2",
    "covariates": "--head logreg --folds 3 --covariates site,age --covariates-only",
    "search": "--head logreg --head knn --folds 3 --search --set logreg.C=0.1,1,10",
}


def _site(record: dict) -> str:
    j = int(record["patient_id"].rsplit("-p", 1)[1])
    usual, other = ("A", "B") if record["label"] == "covid" else ("B", "A")
    return usual if j % 4 else other


def _age(record: dict) -> str:
    j = int(record["patient_id"].rsplit("-p", 1)[1])
    return "" if j % 7 == 0 else str(20 + (3 * j) % 60)


@pytest.fixture
def stores(make_synthetic_store) -> Path:
    """Two stores of the same rows: 42 patients of 3 classes, a site that confounds covid."""
    counts = {"bacterial": 14, "covid": 16, "normal": 12}
    first = make_synthetic_store(
        counts, meta={"site": _site, "age": _age}, dim=6, separation=2.5, seed=3
    )
    content = read_content(first)
    noise = np.random.default_rng(4).normal(size=(len(content.X), 5))
    X = (0.7 * content.X[:, :5] + noise).astype(np.float32)
    attrs = {**content.attrs, "backbone": "mobilenet_025", "dim": 5}
    second = first.with_name("mobilenet_025.h5")
    write_atomic(second, StoreContent(attrs, content.rows, content.meta, X))
    return first.parent


def _masked(text: str, tmp: Path) -> str:
    document = json.loads(text)
    document["provenance"]["versions"] = "<versions>"
    text = json.dumps(document, indent=2) + "\n"
    return re.sub(re.escape(str(tmp)), "<tmp>", text)


@pytest.mark.parametrize("name", list(RUNS))
def test_evaluate_json_is_byte_identical_to_the_golden_file(name, stores, tmp_path):
    result = CliRunner().invoke(
        app, ["evaluate", "--features", str(stores), *FAST, *RUNS[name].split(), "--json", "-"]
    )
    assert result.exit_code == 0, result.output
    text = _masked(result.stdout, tmp_path)
    golden = GOLDEN / f"{name}.json"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        golden.write_text(text)
    assert golden.is_file(), f"{golden} missing: run with CXR_UPDATE_GOLDEN=1 once"
    expected = golden.read_text()
    if text != expected:  # the first value that differs, not a wall of JSON
        difference = _difference(json.loads(text), json.loads(expected), golden.name)
        assert difference is None, difference


def _difference(got, want, where: str) -> str | None:
    """Where ``got`` and ``want`` first differ (floats to 1e-6 relative), or None."""
    if isinstance(want, float) and isinstance(got, float):
        return (
            None
            if math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-12)
            else (f"{where}: {got!r} != {want!r}")
        )
    if type(got) is not type(want):
        return f"{where}: {got!r} != {want!r}"
    if isinstance(want, dict):
        if list(got) != list(want):
            return f"{where}: keys {list(got)} != {list(want)}"
        pairs = [(got[k], want[k], f"{where}.{k}") for k in want]
    elif isinstance(want, list):
        if len(got) != len(want):
            return f"{where}: {len(got)} items != {len(want)}"
        pairs = [(g, w, f"{where}[{i}]") for i, (g, w) in enumerate(zip(got, want, strict=True))]
    else:
        return None if got == want else f"{where}: {got!r} != {want!r}"
    return next((d for g, w, at in pairs if (d := _difference(g, w, at))), None)
