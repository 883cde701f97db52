"""docs/architecture.md's "Where to add one thing" table tells the truth: a toy of each kind (a
backbone, a head, a metric, an input format, a validation design, an evaluate setting) is added
here by changing only the files of its row (through `Change`, which records the file each change
lands in) and runs end to end."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import typer
from helpers import ROOT, make_class_folders, xray_like
from PIL import Image
from typer.testing import CliRunner

import cxr
from cxr.cli import app

DOC = ROOT / "docs" / "architecture.md"
ROW = re.compile(r"^\| (a[n]? [a-z ]+) \| (\d+): ([^|]+) \|")


def _table() -> dict[str, list[str]]:
    """Each kind of the doc's table -> the files it names (their count checked against them)."""
    rows = {}
    for line in DOC.read_text().splitlines():
        match = ROW.match(line)
        if match:
            files = re.findall(r"`([^`]+\.py)`", match[3])
            assert int(match[2]) == len(files), line
            rows[match[1]] = files
    return rows


class Change:
    """The changes a toy makes, each recorded by the file of the package it lands in."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.monkeypatch = monkeypatch
        self.files: set[str] = set()

    def _record(self, where: Any) -> None:
        self.files.add(Path(inspect.getfile(where)).relative_to(ROOT).as_posix())

    def set(self, module: ModuleType, name: str, value: Any, *aliases: ModuleType) -> None:
        """Edit a module's definition ``name`` (``aliases``: modules that import it by name,
        which the edit of the one definition reaches too)."""
        self._record(module)
        for where in (module, *aliases):
            self.monkeypatch.setattr(where, name, value)

    def add(self, module: ModuleType, registry: str, key: str, value: Any) -> None:
        """One entry in a module's registry dict."""
        self._record(module)
        self.monkeypatch.setitem(getattr(module, registry), key, value)

    def subclass(self, new: type) -> None:
        """A new class, written beside its base class in the base's module."""
        self._record(new.__mro__[1])

    def call(self, function: Any, *args: Any) -> Any:
        """A registration call in ``function``'s module."""
        self._record(function)
        return function(*args)


@pytest.fixture
def change(monkeypatch) -> Change:
    return Change(monkeypatch)


def test_the_table_names_every_kind_a_toy_adds():
    assert set(_table()) == {
        "a backbone",
        "a head",
        "a metric",
        "an input format",
        "a validation design",
        "an evaluate setting",
    }


def test_a_head(change, make_synthetic_store, tmp_path):
    from cxr.classify import heads
    from cxr.classify.model import load_model

    toy = heads.Head(
        "nb",
        "Gaussian naive Bayes",
        "sklearn.naive_bayes.GaussianNB",
        {"var_smoothing": 1e-9},
        {"var_smoothing": [1e-9, 1e-6]},
    )
    change.add(heads, "HEADS", "nb", toy)
    path = make_synthetic_store(separation=2.0)
    ev = cxr.evaluate(path.parent, heads=["nb"], folds=3, bootstrap=20, jobs=1, cache=False)
    assert ev.results[0]["head"] == "nb" and ev.results[0]["metrics"]["balanced_accuracy"]
    summary = cxr.train(path.parent, head="nb", out=tmp_path / "nb.skops")
    assert load_model(Path(summary["model"]))["head"] == "nb"  # the model file admits it
    assert sorted(change.files) == sorted(_table()["a head"])


def test_a_metric(change, make_synthetic_store, monkeypatch):
    from cxr.classify import metric_table, outcomes

    monkeypatch.setattr(metric_table, "METRICS", list(metric_table.METRICS))
    youden = metric_table.Metric(
        "youden", "Youden J", lambda o: outcomes.balanced_accuracy(o.cm) * 2 - 1
    )
    change.call(metric_table.register, youden)
    ev = cxr.evaluate(
        make_synthetic_store().parent, heads=["logreg"], folds=3, bootstrap=20, jobs=1, cache=False
    )
    found = ev.results[0]["metrics"]
    assert found["youden"]["pooled"] == pytest.approx(2 * found["balanced_accuracy"]["pooled"] - 1)
    assert sorted(change.files) == sorted(_table()["a metric"])


def test_an_input_format(change, tmp_path):
    """WebP, which Pillow reads but the tool refuses until the two tuples name it."""
    from cxr.extract import dataset, images
    from cxr.extract.discovery import discover
    from cxr.extract.layouts import base

    data = tmp_path / "data"
    for label, seed in (("covid", 1), ("covid", 2), ("normal", 3), ("normal", 4)):
        (data / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(xray_like(seed, (96, 80))).save(
            data / label / f"{seed}.webp", lossless=True
        )
    webp = (data / "covid" / "1.webp").read_bytes()
    with pytest.raises(images.Rejected):
        images.decode(webp, "1.webp")
    change.set(images, "PIL_FORMATS", (*images.PIL_FORMATS, "WEBP"))
    change.set(dataset, "IMAGE_SUFFIXES", (*dataset.IMAGE_SUFFIXES, ".webp"), base)
    found = discover(data, None)
    assert sorted(e.label for e in found.entries) == ["covid", "covid", "normal", "normal"]
    pixels = images.decode(webp, "1.webp")
    assert pixels.shape == (80, 96, 3) and np.array_equal(pixels[..., 0], xray_like(1, (96, 80)))
    assert sorted(change.files) == sorted(_table()["an input format"])


def test_an_evaluate_setting(change, make_synthetic_store):
    """A setting in the table, and the configuration's field that the evaluation reads: it is
    an option of `cxr evaluate` and a keyword of `cxr.evaluate` with its default and help, and
    its value reaches the configuration from both (the commands rebuilt from the table as at
    import; the run stops where the evaluation would read the configuration)."""
    from dataclasses import dataclass

    from cxr.classify import config, settings
    from cxr.classify import evaluate as evaluation
    from cxr.cli import _with_settings
    from cxr.errors import CxrError
    from cxr.settings import Setting, takes

    change.add(settings, "EVALUATE", "toy_rounds", Setting("toy_rounds", 7, "Rounds of a toy."))

    @dataclass(frozen=True)
    class WithToy(config.EvaluateConfig):
        toy_rounds: int = settings.default("toy_rounds")

    change.set(config, "EvaluateConfig", WithToy)
    reached: list[Any] = []

    def stop(features_dir, configuration, progress=None):
        reached.append(configuration)
        raise CxrError("stopped where the evaluation reads its configuration")

    change.monkeypatch.setattr(evaluation, "evaluate", stop)
    rebuilt = typer.Typer()
    rebuilt.command()(_with_settings(settings.EVALUATE)(inspect.unwrap(cxr.cli.evaluate)))
    features = make_synthetic_store().parent
    done = CliRunner().invoke(rebuilt, ["--features", str(features), "--toy-rounds", "3"])
    assert "stopped where" in str(done.exception), done.output
    shown = CliRunner().invoke(rebuilt, ["--help"], env={"COLUMNS": "200"}).output
    assert "--toy-rounds" in shown and "Rounds of a toy." in shown and "default: 7" in shown
    with pytest.raises(CxrError, match="stopped where"):
        cxr.evaluate(features, toy_rounds=5)
    keywords = inspect.signature(takes(settings.EVALUATE)(lambda **given: given)).parameters
    assert keywords["toy_rounds"].default == 7
    assert [(type(c), c.toy_rounds) for c in reached] == [(WithToy, 3), (WithToy, 5)]
    assert sorted(change.files) == sorted(_table()["an evaluate setting"])


def test_a_validation_design(change, make_synthetic_store):
    """tests/test_designs.py's fixed split read from a column (which it runs through the tables
    and plots): a class beside `Design`, and one beside `Presentation`."""
    from test_designs import ColumnSplit, ColumnSplitShown, split_of

    change.subclass(ColumnSplit)
    change.subclass(ColumnSplitShown)
    path = make_synthetic_store(meta={"split": split_of})
    ev = cxr.evaluate(
        path.parent, heads=["logreg"], design=ColumnSplit("split"), bootstrap=20, jobs=1
    )
    assert "the split column's test rows" in repr(ev)
    assert sorted(change.files) == sorted(_table()["a validation design"])


@pytest.mark.slow  # a TensorFlow forward pass
def test_a_backbone(change, tmp_path):
    from cxr.extract import registry

    toy = registry.BackboneSpec(
        "mobilenet_toy", "mobilenet", "MobileNet", 128, 256, "https://example.org/none.h5",
        {"alpha": 0.25},
    )  # fmt: skip
    change.add(registry, "REGISTRY", "mobilenet_toy", toy)
    listed = CliRunner().invoke(app, ["backbones", "--json", "-"])
    assert "mobilenet_toy" in [b["name"] for b in json.loads(listed.stdout)["backbones"]]
    data = make_class_folders(tmp_path / "data", per_class=2)
    [summary] = cxr.extract_features(
        data, ["mobilenet_toy"], weights=["random"], features=tmp_path / "f"
    )
    assert summary.stored == 4 and cxr.load_store(tmp_path / "f", "mobilenet_toy").X.shape[1] == 256
    assert sorted(change.files) == sorted(_table()["a backbone"])
