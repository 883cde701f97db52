"""A validation design is one class that splits and one that presents its results: here a new
one, written in this test, runs through the evaluation, the terminal report and the plots
without a change anywhere else."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
from rich.console import Console

import cxr
from cxr.classify.designs import Design, Part, Plan
from cxr.classify.folds import Split
from cxr.classify.presentation import PRESENTATIONS, Presentation, presentation_of, slug
from cxr.classify.records import Protocol, Validation
from cxr.classify.tasks import TaskSpec, select
from cxr.errors import CxrError
from cxr.store import FeatureSet


@dataclass(frozen=True)
class ColumnSplit(Design):
    """A fixed split given by the data: rows whose ``column`` says train, and those it says test."""

    column: str
    kind: ClassVar[str] = "column-split"

    def plan(self, fs: FeatureSet, task: TaskSpec, *, seed: int, cache: dict | None = None) -> Plan:
        data = select(fs, task)
        side = data.column(self.column, "--split-column")
        train, test = np.flatnonzero(side == "train"), np.flatnonzero(side == "test")
        if not len(train) or not len(test):
            raise CxrError(
                f"{data.source}: --split-column {self.column}: needs train and test rows"
            )
        validation = Validation(self.kind, column=self.column, n_test=len(test))
        protocol = Protocol(f"split by {self.column}", seed=seed, grouped=False)
        split = Split(0, 0, train, test, name=f"{self.column}=test")
        return Plan(data, [split], [Part((0,), validation)], protocol, None)


class ColumnSplitShown(Presentation):
    """How its results look: the words of the report (the file names are the default's)."""

    kind: ClassVar[str] = "column-split"

    @classmethod
    def describe(cls, result: Mapping) -> str:
        return f"the {Validation.of(result).column} column's test rows"


def split_of(record: dict) -> str:
    return "test" if int(record["patient_id"].rsplit("-p", 1)[1]) % 4 == 0 else "train"


def test_a_design_written_outside_the_package_runs_end_to_end(make_synthetic_store, tmp_path):
    assert PRESENTATIONS["column-split"] is ColumnSplitShown  # registered by being defined
    path = make_synthetic_store(meta={"split": split_of})
    ev = cxr.evaluate(
        path.parent,
        heads=["logreg", "knn"],
        design=ColumnSplit("split"),
        bootstrap=50,
        jobs=1,
        predictions=True,
    )
    groups = ev.predictions().query("head == 'logreg'")["group"]
    tested = sum(split_of({"patient_id": p}) == "test" for p in groups)
    assert [r["n"] for r in ev.results] == [tested, tested]
    assert all(Validation.of(r).kind == "column-split" for r in ev.results)
    assert presentation_of(ev.results[0]) is ColumnSplitShown
    console = Console(record=True, width=160)
    from cxr.classify.tables import render

    render(ev.report, console)
    text = console.export_text()
    assert "Validation: the split column's test rows" in text
    assert "Heads on held-out rows" in text  # the base class's title for held-out designs
    written = ev.plot(tmp_path / "plots")
    stem = f"{slug(ev.results[0]['task']['name'])}-column-split"
    assert any(p.endswith(f"{stem}-forest-balanced_accuracy.png") for p in written)
    assert any(p.endswith(f"mobilenet_v2-{stem}-embedding-map.png") for p in written)
    assert len(written) == 2 * 3 + 2  # confusion, ROC, reliability per result; forest; map


def test_a_design_refuses_what_cannot_work(make_synthetic_store):
    path = make_synthetic_store(meta={"split": lambda r: "train"})
    with pytest.raises(CxrError, match="needs train and test rows"):
        cxr.evaluate(path.parent, heads=["logreg"], design=ColumnSplit("split"), jobs=1)
