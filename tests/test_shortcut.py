"""The shortcut at a glance (issue 34): each film's nearest neighbours from its own source and
with its own label, beside chance, with patient-bootstrap CIs; the embedding map that shows them;
columns that refine the label kept out of the confounds; reports that say the design first; the
API's predictions with the store's columns."""

from __future__ import annotations

import csv
import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from helpers import CXR_DATA, SYNTHETIC_ATTRS
from rich.console import Console
from sklearn.neighbors import NearestNeighbors
from typer.testing import CliRunner

import cxr
from cxr.classify import neighbours
from cxr.classify.layout import layout, unit_vectors
from cxr.classify.metrics import bootstrap_weights
from cxr.classify.neighbours import draw, nearest, neighbourhood
from cxr.classify.plots import confound_plots
from cxr.classify.tables import render
from cxr.cli import app
from cxr.reporting import write_report
from cxr.store import load
from cxr.store.schema import ROW_COLUMNS, StoreContent, Table, write_atomic

runner = CliRunner()
FAST = ["--head", "logreg", "--bootstrap", "200", "--jobs", "1", "--quiet"]


def site_of(record: dict) -> str:
    """80% of covid patients at site A, 80% of the others at site B."""
    j = int(record["patient_id"].rsplit("-p", 1)[1])
    usual, other = ("A", "B") if record["label"] == "covid" else ("B", "A")
    return usual if j % 5 else other


def with_site_in_embedding(path: Path, strength: float) -> Path:
    """The store's vectors with the site added along one axis (0: the site is not in them)."""
    fs = load(path)
    X = fs.X.copy()
    X[:, 0] += strength * (fs.column("site") == "A")
    write_atomic(path, StoreContent(fs.attrs, fs.rows, fs.meta, X.astype(np.float32)))
    return path


def evaluate(path: Path, *args: str) -> tuple:
    out = path.parent.parent / "report.json"
    result = runner.invoke(
        app, ["evaluate", "--features", str(path.parent), *FAST, *args, "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    return result, json.loads(out.read_text())


# ---- the neighbours ------------------------------------------------------------------------


@pytest.mark.parametrize("crowd", [64, 2], ids=["together", "one-patient-at-a-time"])
def test_neighbours_are_those_of_a_brute_force_cosine_search_among_other_patients(
    crowd, monkeypatch
):
    monkeypatch.setattr(neighbours, "CROWD", crowd)  # 2: every patient past a selector
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 6)).astype(np.float32)
    units = np.repeat(np.arange(40), 3)[:90]  # three films per patient
    units[:12] = 0  # and one with twelve
    Z = unit_vectors(X)
    asked = np.arange(0, 90, 4)
    found = nearest(Z, units, Z[asked], units[asked], 5)
    reference = NearestNeighbors(metric="cosine", algorithm="brute").fit(X)
    _, order = reference.kneighbors(X[asked], n_neighbors=90)
    for row, (i, ranked) in enumerate(zip(asked, order, strict=True)):
        others = [j for j in ranked if units[j] != units[i]][:5]
        assert found[row].tolist() == others  # nearest first, never the film's own patient


def brute_force(X, y, units, values, k):
    """Per film: the share of its k nearest other-patient films (cosine) with its label, its
    value, and its value among its class; and chance for each, by loops."""
    Z = X / np.linalg.norm(X, axis=1, keepdims=True)
    out = []
    for i in range(len(X)):
        others = np.flatnonzero(units != units[i])
        same_class = others[y[others] == y[i]]
        near = others[np.argsort(-(Z[others] @ Z[i]), kind="stable")[:k]]
        near_class = same_class[np.argsort(-(Z[same_class] @ Z[i]), kind="stable")[:k]]
        out.append(
            [
                np.mean(y[near] == y[i]),
                np.mean(values[near] == values[i]),
                np.mean(values[near_class] == values[i]),
                np.mean(y[others] == y[i]),
                np.mean(values[others] == values[i]),
                np.mean(values[same_class] == values[i]),
            ]
        )
    return np.asarray(out)


def test_shares_chance_and_intervals_are_those_of_a_direct_computation():
    rng = np.random.default_rng(1)
    n = 120
    units = np.asarray([f"p{i // 2}" for i in range(n)], dtype=object)  # two films a patient
    y = np.asarray([int(u[1:]) % 3 for u in units])
    values = np.asarray(["A" if (int(u[1:]) * 7) % 5 < 2 else "B" for u in units], dtype=object)
    X = rng.normal(size=(n, 5)) + 2.0 * y[:, None] * np.eye(5)[0] + 1.5 * (values == "A")[:, None]
    found, sample = neighbourhood(
        "s", X.astype(np.float32), y, ["a", "b", "c"], units, "site", values,
        unit="patient", seed=3, replicates=300, rows_sha256="", k=4,
    )  # fmt: skip
    direct = brute_force(X, y, units, values, 4)
    measures = ("same_label", "same_value", "same_value_in_class")
    for m, name in enumerate(measures):
        assert found["all"][name]["share"] == pytest.approx(direct[:, m].mean(), abs=1e-4)
        assert found["all"][name]["chance"] == pytest.approx(direct[:, m + 3].mean(), abs=1e-4)
        for c, cls in enumerate(["a", "b", "c"]):
            mine = direct[y == c]
            assert found["classes"][cls][name]["share"] == pytest.approx(mine[:, m].mean(), 1e-3)
            assert found["classes"][cls][name]["chance"] == pytest.approx(
                mine[:, m + 3].mean(), abs=1e-4
            )
    inside = (y == 1) & (values == "A")
    by_value = found["classes"]["b"]["by_value"]["A"]
    assert by_value["films"] == inside.sum()
    assert by_value["same_value_in_class"]["share"] == pytest.approx(direct[inside, 2].mean(), 1e-3)
    # The interval: patients resampled (stratified by class) as the metrics' bootstrap does.
    draws = np.concatenate(
        [w @ direct[:, 0] / w.sum(axis=1) for w in bootstrap_weights(units, 300, 3, y=y)]
    )
    assert found["all"]["same_label"]["ci95"] == pytest.approx(
        list(np.percentile(draws, [2.5, 97.5])), abs=1e-4
    )
    assert len(sample.X) == n and found["films"] == found["rows"] == n


def test_a_source_the_embedding_carries_stands_far_above_chance_and_one_it_lacks_does_not(
    make_synthetic_store, tmp_path
):
    for strength, carried in ((8.0, True), (0.0, False)):
        path = make_synthetic_store(
            {"covid": 30, "normal": 30},
            meta={"site": site_of},
            directory=tmp_path / f"s{strength}",
        )
        _, report = evaluate(with_site_in_embedding(path, strength), "--folds", "3")
        [entry] = report["neighbourhoods"]
        assert entry["column"] == "site"  # the strongest confound
        inside = entry["all"]["same_value_in_class"]
        lo, hi = inside["ci95"]
        if carried:  # beyond what the label explains: among its own class's films
            assert lo > inside["chance"] + 0.2
        else:
            assert lo - 0.05 <= inside["chance"] <= hi + 0.05
        assert entry["unit"] == "patient" and entry["replicates"] == 200


def test_films_asked_are_a_stated_seeded_stratified_sample():
    y = np.r_[np.zeros(900, int), np.ones(95, int), np.full(5, 2)]
    values = np.asarray(["x", "y"] * 500, dtype=object)
    rows, rule = draw(y, values, 100, seed=4)
    assert len(rows) == 100 and len(set(rows.tolist())) == 100
    assert "100 of 1,000 films" in rule and "label x value" in rule and "seed 4" in rule
    for cls in (0, 1, 2):
        for value in ("x", "y"):
            cell = (y == cls) & (values == value)
            taken = np.sum(cell[rows])
            assert abs(taken - (1 + 94 * cell.mean())) < 1  # one each, the rest by size
    assert np.array_equal(draw(y, values, 100, seed=4)[0], rows)
    assert not np.array_equal(draw(y, values, 100, seed=5)[0], rows)
    every, said = draw(y, values, 5000, seed=4)
    assert np.array_equal(every, np.arange(1000)) and said == "every film (1,000)"


def test_at_scale_only_the_films_asked_are_capped_and_said(make_synthetic_store):
    rng = np.random.default_rng(2)
    n = 3000
    units = np.asarray([f"p{i}" for i in range(n)], dtype=object)
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, 8)).astype(np.float32)
    found, sample = neighbourhood(
        "s", X, y, ["a", "b"], units, None, None,
        unit="patient", seed=0, replicates=50, rows_sha256="", limit=400,
    )  # fmt: skip
    assert found["films"] == 400 and found["rows"] == n and len(sample.X) == 400
    assert found["sample"].startswith("400 of 3,000 films")
    assert set(found["all"]) == {"films", "same_label"}  # no column: the label's share only


# ---- the map -------------------------------------------------------------------------------


def test_the_layout_keeps_clusters_apart_and_says_how():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 32)) * 6
    truth = np.repeat(np.arange(3), 40)
    X = centres[truth] + rng.normal(size=(120, 32))
    coords, laid = layout(X, seed=0)
    assert laid["method"] == "t-SNE" and "seed 0" in laid["detail"] and laid["points"] == 120
    nearest_2d = NearestNeighbors(n_neighbors=2).fit(coords).kneighbors(coords)[1][:, 1]
    assert np.mean(truth[nearest_2d] == truth) > 0.95
    again, _ = layout(X, seed=0)
    assert np.allclose(again, coords)  # seeded
    few, said = layout(X[:6], seed=0)
    assert said["method"] == "PCA" and few.shape == (6, 2)


def png(path: str) -> bool:
    return Path(path).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_evaluate_plots_the_map_and_the_json_says_how(make_synthetic_store, tmp_path):
    path = with_site_in_embedding(
        make_synthetic_store({"covid": 20, "normal": 20}, meta={"site": site_of}), 6.0
    )
    plots = tmp_path / "plots"
    result, _ = evaluate(path, "--folds", "3", "--plots", str(plots))
    report = json.loads((path.parent.parent / "report.json").read_text())
    [entry] = report["neighbourhoods"]
    drawn = entry["map"]
    assert drawn["method"] == "t-SNE" and drawn["points"] == entry["films"]
    assert drawn["figure"] in report["plots"] and png(drawn["figure"])
    assert Path(drawn["figure"]).name == "mobilenet_v2-covid-normal-embedding-map.png"
    shown = " ".join(result.stdout.split())
    assert "Neighbours in the embedding" in shown and "own site, within its class" in shown
    # The API draws the same figure.
    ev = cxr.evaluate(path.parent, heads=["logreg"], folds=3, bootstrap=50, jobs=1)
    written = ev.plot(tmp_path / "api")
    assert any(p.endswith("-embedding-map.png") for p in written)
    assert ev.report["neighbourhoods"][0]["map"]["figure"] in written


# ---- finer labels --------------------------------------------------------------------------


def subtype_of(record: dict) -> str:
    j = int(record["patient_id"].rsplit("-p", 1)[1])
    return f"{record['label']}-{'abc'[j % 3]}"


def test_a_column_that_refines_the_label_is_said_once_and_not_a_confound(make_synthetic_store):
    path = make_synthetic_store(
        {"covid": 20, "normal": 20}, meta={"site": site_of, "subtype": subtype_of}
    )
    result, report = evaluate(path, "--folds", "3")
    found = {c["column"]: c for c in report["confounds"]}
    assert found["subtype"] == {"column": "subtype", "values": 6, "refines": "label"}
    assert not any("subtype" in w for w in report["warnings"])
    assert report["warnings"][0].startswith("confound: site predicts the label")
    assert report["neighbourhoods"][0]["column"] == "site"
    shown = " ".join(result.stdout.split())
    assert shown.count("subtype refines the label") == 1
    # Named, it is measured (and, as it must, predicts the label).
    _, asked = evaluate(path, "--folds", "3", "--confounds", "subtype")
    [subtype] = asked["confounds"]
    assert subtype["warn"] and subtype["cramers_v"] > 0.9


def test_a_column_that_copies_the_label_only_on_the_tasks_rows_still_warns(
    make_synthetic_store,
):
    """A ward that holds covid and bacterial films is no finer label, even where the task keeps
    only covid and normal (there it groups the rows exactly as the label: it used to be skipped
    as restating the label)."""
    ward = {"covid": "X", "bacterial": "X", "normal": "Y"}
    path = make_synthetic_store(
        {"covid": 12, "normal": 12, "bacterial": 12},
        meta={"ward": lambda r: ward[r["label"]]},
    )
    _, report = evaluate(path, "--folds", "3", "--classes", "covid,normal")
    [found] = [c for c in report["confounds"] if c["column"] == "ward"]
    assert found["warn"] and found["cramers_v"] > 0.9
    assert report["warnings"][0].startswith("confound: ward predicts the label")


def test_a_source_that_copies_the_label_warns(make_synthetic_store):
    """Each class from its own hospital: the source groups the rows exactly as the label does,
    the starkest shortcut of all, not a copy of the label."""
    path = make_synthetic_store({"covid": 12, "normal": 12})
    fs = load(path)
    records = [
        {**{c: str(fs.rows[c][i]) for c in ROW_COLUMNS}, "source": f"hospital-{fs.labels[i]}"}
        for i in range(len(fs))
    ]
    rows = Table.from_records(records, ROW_COLUMNS)
    write_atomic(path, StoreContent(fs.attrs, rows, fs.meta, fs.X))
    _, report = evaluate(path, "--folds", "3")
    [source] = [c for c in report["confounds"] if c["column"] == "source"]
    assert source["warn"] and "skipped" not in source
    assert report["neighbourhoods"][0]["column"] == "source"


def shared_stand_in(tmp_path: Path) -> Path:
    """A store of the shared manifest's rows with stand-in embeddings: confounds read only the
    metadata."""
    with open(CXR_DATA / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    records = [{**r, "id": f"{i:064x}"} for i, r in enumerate(rows)]
    meta_names = tuple(c for c in rows[0] if c not in ROW_COLUMNS)
    X = np.random.default_rng(0).normal(size=(len(rows), 8)).astype(np.float32)
    attrs = {**SYNTHETIC_ATTRS, "backbone": "stand_in", "dim": 8}
    (tmp_path / "features").mkdir()
    path = tmp_path / "features" / "stand_in.h5"
    rows_table = Table.from_records(records, ROW_COLUMNS)
    write_atomic(path, StoreContent(attrs, rows_table, Table.from_records(records, meta_names), X))
    return path


@pytest.mark.skipif(not (CXR_DATA / "manifest.csv").is_file(), reason="../shared data absent")
@pytest.mark.parametrize(
    "task",
    [[], ["--where", "label=covid | dataset=kermany", "--classes", "covid,bacterial,normal",
          "--binary", "covid"]],
    ids=["all", "paper"],
)  # fmt: skip
def test_on_the_shared_data_finding_is_a_finer_label_and_the_source_leads(tmp_path, task):
    path = shared_stand_in(tmp_path)
    result, report = evaluate(path, "--folds", "3", *task)
    assert not any("finding" in w for w in report["warnings"])
    assert report["warnings"][0].startswith("confound: source (and dataset")
    found = {c["column"]: c for c in report["confounds"]}
    assert found["finding"]["refines"] == "label" and set(found["finding"]) == {
        "column", "values", "refines"
    }  # fmt: skip
    assert found["source"]["warn"] and found["view"]["warn"]  # sites and views stay confounds
    assert " ".join(result.stdout.split()).count("finding refines the label") == 1
    assert report["neighbourhoods"][0]["column"] == "source"
    (tmp_path / "plots").mkdir()
    [figure] = confound_plots(report, tmp_path / "plots")  # the strongest real confound's
    assert figure.endswith("-confound-source.png")
    page = write_report([tmp_path / "report.json"], tmp_path / "r.html").path.read_text()
    assert "finding" not in re.findall(r"<td>([^<]*)</td>", page)  # no row of the table
    assert "finding refines the label" in page


# ---- the reports ---------------------------------------------------------------------------


class Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cells: list[tuple[str, str]] = []
        self.tag = ""

    def handle_starttag(self, tag, attrs):
        self.tag = tag

    def handle_data(self, data):
        self.cells.append((self.tag, data))


def test_the_html_summary_says_the_design_first_and_prints_p_as_the_terminal(
    make_synthetic_store, tmp_path
):
    path = with_site_in_embedding(
        make_synthetic_store({"covid": 20, "normal": 20}, meta={"site": site_of}), 6.0
    )
    plots = tmp_path / "plots"
    args = ["--folds", "4", "--head", "knn", "--plots", str(plots)]
    evaluate(path, *args)
    doc = path.parent.parent / "report.json"
    data = json.loads(doc.read_text())
    for r in data["results"]:  # one comparison no bootstrap replicate crossed
        if not r["comparison"]["is_best"]:
            r["comparison"]["p"] = 0.0
    doc.write_text(json.dumps(data))
    page = write_report([doc], tmp_path / "r.html").path.read_text()
    parsed = Text()
    parsed.feed(page)
    summary = page[page.index("<h2>Summary</h2>") :]
    assert summary.index("<p>") < summary.index("<table>")  # words before any number
    design = html.unescape(summary[summary.index("<p>") + 3 : summary.index("</p>")])
    assert design.startswith("Validation: 4-fold cross-validation")
    assert "StratifiedGroupKFold by patient (no patient on both sides of a split)" in design
    assert "1 repeat(s), seed 0" in design and "bootstrap, unit: patient" in design
    headers = [d for t, d in parsed.cells if t == "th"]
    assert "bal. accuracy" in headers and "sens. @ 95% spec." in headers
    assert not {"balanced_accuracy", "sens_at_spec", "macro_f1", "roc_auc"} & set(headers)
    comparisons = page[page.index("<h2>Paired comparisons</h2>") :]
    comparisons = comparisons[: comparisons.index("</table>")]
    assert "&lt; 5e-03" in comparisons and ">0.000<" not in comparisons
    # The map sits beside its numbers, once.
    section = page[page.index("<h2>Neighbours in the embedding</h2>") :]
    assert section.index("<table>") < section.index("embedding-map.png")
    assert page.count('embedding-map.png"') == 1


def test_leave_out_designs_say_what_was_held_out(make_synthetic_store, tmp_path):
    path = make_synthetic_store({"covid": 20, "normal": 20}, meta={"site": site_of})
    evaluate(path, "--leave-out", "site")
    page = write_report([path.parent.parent / "report.json"], tmp_path / "r.html").path
    text = page.read_text()
    assert "Validation: leave one site out" in text and "Held out in turn: A, B." in text


def test_every_warning_is_wrapped_to_the_terminal_at_120_columns(make_synthetic_store):
    path = with_site_in_embedding(
        make_synthetic_store({"covid": 20, "normal": 20}, meta={"site": site_of}), 6.0
    )
    ev = cxr.evaluate(path.parent, heads=["logreg", "knn"], folds=4, bootstrap=50, jobs=1)
    assert max(map(len, ev.report["warnings"])) > 120
    console = Console(width=120, record=True)
    render(ev.report, console)
    lines = console.export_text().splitlines()
    assert all(len(line) <= 120 for line in lines)
    assert any(line.startswith("warning: confound: site") for line in lines)


# ---- the API -------------------------------------------------------------------------------


def test_predictions_carry_the_fold_and_the_stores_columns_never_clobbered(make_synthetic_store):
    split = {"covid": "train", "normal": "test"}
    path = make_synthetic_store(
        {"covid": 15, "normal": 15},
        meta={"site": site_of, "split": lambda r: split[r["label"]], "fold": lambda r: "f"},
    )
    ev = cxr.evaluate(
        path.parent, heads=["logreg"], binary="covid", folds=3, bootstrap=20, predictions=True
    )
    frame = ev.predictions()
    fs = cxr.load_store(path)
    assert {"fold", "source", "site", "split", "patient_id", "stored_label"} <= set(frame)
    assert "stored_fold" in frame and set(frame["stored_fold"]) == {"f"}  # the store's "fold"
    assert set(frame["fold"]) == {0, 1, 2}  # ours: the split that tested the row
    by_id = dict(zip(fs.ids, fs.column("site"), strict=True))
    assert [by_id[i] for i in frame["id"]] == list(frame["site"])
    assert set(frame["label"]) == {"covid", "non-covid"}
    assert set(frame["stored_label"]) == {"covid", "normal"}
    assert (frame["split"] == frame["stored_label"].map(split)).all()
    text = repr(ev)
    assert "3-fold cross-validation" in " ".join(text.split())
    assert "StratifiedGroupKFold by patient (no patient on both sides" in " ".join(text.split())
    assert "Validation: 3-fold cross-validation" in ev._repr_html_()
