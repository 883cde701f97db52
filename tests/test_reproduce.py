"""The reproduction study on a synthetic store, and the committed document against its JSON."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, save_png, script

from cxr.reproduce.render import UNAVAILABLE, headline, pct, render, share
from cxr.reproduce.run import run_study
from cxr.store import load
from cxr.store.schema import ROW_COLUMNS, StoreContent, Table, write_atomic


def dataset_of(label: str, k: int) -> str:
    """COVID-19 from an adult source; most controls paediatric (Kermany), a few adult ones."""
    if label == "covid" or k % 5 == 0:
        return "ieee8023"
    return "actualmed" if k % 5 == 1 and label == "normal" else "kermany"


def synthetic_study_store(root: Path) -> Path:
    """25 patients per class, 1-2 images each, real image files (the audit hashes them).

    Planted: covid-p1's image is also filed as covid-p2's (a copy: one is dropped in protocol B)
    and normal-p3's image also as viral-p3's (one picture, two labels: both dropped).
    """
    rng = np.random.default_rng(0)
    centers = {c: rng.normal(size=64) * 0.6 for c in ("covid", "bacterial", "normal", "viral")}
    records, X, meta, seed = [], [], [], 0
    for label, center in centers.items():
        for k in range(25):
            for j in range(1 + k % 2):
                seed += 1
                path = f"{label}/p{k}-{j}.png"
                copy_of = {"covid/p2-0.png": 1, "viral/p3-1.png": ("normal", 3)}.get(path)
                picture = seed if copy_of is None else None
                file = root / path
                if copy_of == 1:
                    file.parent.mkdir(parents=True, exist_ok=True)
                    file.write_bytes((root / "covid/p1-0.png").read_bytes())
                elif copy_of:
                    file.parent.mkdir(parents=True, exist_ok=True)
                    file.write_bytes((root / "normal/p3-0.png").read_bytes())
                else:
                    save_png(file, picture)
                sha = hashlib.sha256(file.read_bytes()).hexdigest()
                records.append(
                    {
                        "id": sha,
                        "path": path,
                        "label": label,
                        "patient_id": f"{label}-p{k}",
                        "source": dataset_of(label, k),
                    }
                )
                meta.append({"dataset": dataset_of(label, k)})
                X.append(center + rng.normal(size=64))
    attrs = {
        "backbone": "mobilenet_v2",
        "dim": 64,
        "input_size": 224,
        "resize": "squash",
        "weights": "file",
        "weights_file": "w.h5",
        "weights_sha256": "ab" * 32,
        "weights_seed": -1,
        "data_root": str(root),
        "versions": "{}",
    }
    path = root.parent / "features" / "mobilenet_v2.h5"
    path.parent.mkdir(parents=True)
    write_atomic(
        path,
        StoreContent(
            attrs,
            Table.from_records(records, ROW_COLUMNS),
            Table.from_records(meta, ("dataset",)),
            np.asarray(X),
        ),
    )
    return path


@pytest.fixture
def study(tmp_path):
    path = synthetic_study_store(tmp_path / "images")
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
    crosses = report["checks"]["mobilenet_v2"]["cross_source"]
    adult = dataset != "kermany"  # the task's classes only: dataset 1 has no viral class
    d1, d2 = crosses["dataset 1, covid vs rest"], crosses["dataset 2, 3-class"]
    assert d1["n_unseen"] == (adult & np.isin(fs.labels, ["bacterial", "normal"])).sum()
    assert d2["n_unseen"] == (adult & (fs.labels != "covid")).sum()
    assert d1["unseen_labels"] == {"non-covid": d1["n_unseen"]}
    assert d1["n_train"] == rows["B", "dataset 1, covid vs rest"]["n"]
    assert sum(d2["called_covid_by_label"].values()) == d2["called_covid"] <= d2["n_unseen"]
    probe = report["checks"]["mobilenet_v2"]["probes"]["non-COVID images only"]
    assert set(probe["classes"]) == {"kermany", "ieee8023", "actualmed"}
    assert 0 < probe["chance_accuracy"] < 1
    dup = report["duplicates"]
    assert sorted(map(sorted, dup["members"])) == [
        ["covid/p1-0.png", "covid/p2-0.png"],
        ["normal/p3-0.png", "viral/p3-1.png"],
    ]
    assert (dup["label_conflicts"], dup["excluded"]) == (1, 3)
    b = rows["B", "dataset 2, 3-class"]
    assert b["n"] == rows["A", "dataset 2, 3-class"]["n"] - 3
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
        for rows, probe in checks["probes"].items():
            accuracy = f"{share(probe, 'accuracy')} | {share(probe, 'chance_accuracy')} |"
            assert f"| {rows} |" in doc and accuracy in doc
        for trained_on, cross in checks["cross_source"].items():
            assert f"| {trained_on} | {cross['n_unseen']} (" in doc


def test_committed_results_document_is_generated_from_committed_json():
    json_path, doc_path = ROOT / "docs" / "results.json", ROOT / "docs" / "results.md"
    if not json_path.is_file():
        pytest.skip("docs/results.json not generated yet (run `make reproduce`)")
    report = json.loads(json_path.read_text())
    assert doc_path.read_text() == render(report)
    check_document(doc_path.read_text(), report)


def test_the_case_study_quotes_the_generated_headline():
    json_path = ROOT / "docs" / "results.json"
    if not json_path.is_file():
        pytest.skip("docs/results.json not generated yet (run `make reproduce`)")
    page = ROOT / "docs" / "evaluation-honesty.md"
    assert headline(json.loads(json_path.read_text())) in page.read_text()


def test_the_docs_show_the_generated_generalisation_gap():
    """The gap table the docs show (in whichever page holds it) is the one of the current
    docs/results.json (`make docs` copies it after `make reproduce`)."""
    outputs = script("docs/outputs.py")
    shown = outputs.sections(outputs.placed()["gap"].read_text())["gap"]
    assert shown == outputs.section("gap", outputs.gap())
    assert "| dataset 1, 3-class | centre masked |" in shown
