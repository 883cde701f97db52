"""The reproduction study on a synthetic store, and the committed document against its JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reproduce.render import UNAVAILABLE, pct, render
from reproduce.run import run_study, write_duplicate_exclusions
from store import load
from store.schema import ROW_COLUMNS, StoreContent, Table, write_atomic
from tests.conftest import ROOT


def dataset_of(record: dict) -> str:
    """COVID-19 from an adult source; most controls paediatric (Kermany), a few adult ones."""
    label, k = record["label"], int(record["patient_id"].split("-p")[1])
    if label == "covid" or k % 5 == 0:
        return "ieee8023"
    return "actualmed" if k % 5 == 1 and label == "normal" else "kermany"


@pytest.fixture
def study(make_synthetic_store, tmp_path):
    counts = {"covid": 25, "bacterial": 25, "viral": 25, "normal": 25}
    path = make_synthetic_store(counts, meta={"dataset": dataset_of})
    extraction = {
        "mobilenet_v2": {
            "status": "ok",
            "weights": "file",
            "weights_file": "w.h5",
            "weights_sha256": "ab" * 32,
            "weights_seed": -1,
            "note": "synthetic",
        },
        "vgg19": {"status": "unavailable", "reason": "offline"},
    }
    report = run_study(path.parent, extraction, tmp_path / "docs", jobs=1, n_boot=50)
    report["generated"] = "today"
    report["command"] = "pytest"
    report["seconds"].update(extraction=0.0, total=report["seconds"]["evaluation"])
    return load(path), report


def test_study_runs_both_protocols_and_its_document_agrees(study):
    fs, report = study
    dataset = fs.column("dataset")
    paper = (fs.labels == "covid") | (dataset == "kermany")
    rows = {(r["protocol"], r["task"]): r for r in report["results"]}
    assert len(rows) == 8
    d1 = paper & np.isin(fs.labels, ["covid", "bacterial", "normal"])
    assert rows["A", "dataset 1, 3-class"]["n"] == d1.sum()
    assert rows["A", "dataset 2, 3-class"]["n"] == paper.sum()
    assert rows["A", "dataset 1, covid vs rest"]["cv"]["scheme"] == "StratifiedKFold"
    assert rows["B", "dataset 1, covid vs rest"]["cv"]["scheme"] == "StratifiedGroupKFold"
    assert rows["A", "dataset 2, covid vs rest"]["classes"] == ["non-covid", "covid"]
    cross = report["checks"]["mobilenet_v2"]["cross_source"][0]
    assert cross["n_unseen"] == ((fs.labels != "covid") & (dataset != "kermany")).sum()
    probe = report["checks"]["mobilenet_v2"]["probes"][1]
    assert set(probe["classes"]) == {"kermany", "ieee8023", "actualmed"}
    assert 0 < probe["chance_accuracy"] < 1
    check_document(render(json.loads(json.dumps(report))), report)  # as written to disk


def check_document(doc: str, report: dict) -> None:
    for row in report["results"]:
        line = (
            f"| {row['backbone']} | {row['task']} | {row['n']} | {pct(row['accuracy'])} | "
            f"{pct(row['sensitivity'])} | {pct(row['specificity'])} |"
        )
        assert line in doc
    for backbone, status in report["backbones"].items():
        if status["status"] != "ok":
            assert f"| {backbone} | all | - | {UNAVAILABLE} |" in doc
    for checks in report["checks"].values():
        for probe in checks["probes"]:
            assert pct(probe["balanced_accuracy"]) in doc
        for cross in checks["cross_source"]:
            assert f"| {cross['trained_on']} | {cross['n_unseen']} (" in doc


def test_committed_results_document_is_generated_from_committed_json():
    json_path, doc_path = ROOT / "docs" / "results.json", ROOT / "docs" / "results.md"
    if not json_path.is_file():
        pytest.skip("docs/results.json not generated yet (run `make reproduce`)")
    report = json.loads(json_path.read_text())
    assert doc_path.read_text() == render(report)
    check_document(doc_path.read_text(), report)


def test_exact_duplicates_keep_one_copy_and_drop_label_conflicts(tmp_path):
    records = [
        {"id": "a", "path": "covid/a1.png", "label": "covid"},
        {"id": "a", "path": "covid/a2.png", "label": "covid"},
        {"id": "b", "path": "covid/b.png", "label": "covid"},
        {"id": "b", "path": "viral/b.png", "label": "viral"},
        {"id": "c", "path": "normal/c.png", "label": "normal"},
    ]
    path = tmp_path / "s.h5"
    attrs = {
        "backbone": "x",
        "dim": 2,
        "input_size": 224,
        "resize": "squash",
        "weights": "random",
        "weights_file": "",
        "weights_sha256": "",
        "weights_seed": 0,
    }
    write_atomic(
        path,
        StoreContent(attrs, Table.from_records(records, ROW_COLUMNS), Table({}), np.zeros((5, 2))),
    )
    info = write_duplicate_exclusions(path, tmp_path)
    excluded = json.loads(info["path"].read_text())["exclude"]
    assert excluded == ["covid/a2.png", "covid/b.png", "viral/b.png"]
    assert (info["clusters"], info["excluded"], info["label_conflicts"]) == (2, 3, 1)
