"""`cxr report`: the page holds what the documents say, escaped; bad documents are one line."""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from cxr.api import Evaluation
from cxr.cli import app
from cxr.errors import CxrError
from cxr.reporting import read_documents, write_report
from cxr.reporting.checklist import AUTHOR, ITEMS, TOOL, fill
from cxr.reporting.html import esc, table

runner = CliRunner()
HOSTILE = "<script>alert(1)</script>"
ATTRIBUTE = 'x" onerror="alert(1)'


class Parsed(HTMLParser):
    """Tags, attributes and text of a page, as a browser's parser reads them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parsed(page: str) -> Parsed:
    p = Parsed()
    p.feed(page)
    return p


@pytest.fixture
def evaluated(make_synthetic_store) -> Path:
    """A real evaluate document with --plots (figures named in it), on a synthetic store."""
    store = make_synthetic_store({"bacterial": 10, "covid": 10, "normal": 10})
    out = store.parent.parent / "evaluate.json"
    plots = store.parent.parent / "plots"
    args = ["evaluate", "--features", str(store.parent), "--head", "logreg", "--head", "knn"]
    args += ["--folds", "3", "--bootstrap", "20", "--json", str(out), "--plots", str(plots)]
    result = runner.invoke(app, [*args, "--quiet"])
    assert result.exit_code == 0, result.output
    return out


def test_the_report_holds_every_section_and_embeds_every_figure(evaluated, tmp_path):
    doc = json.loads(evaluated.read_text())
    written = write_report([evaluated], tmp_path / "r.html")
    page = written.path.read_text()
    assert written.size == written.path.stat().st_size
    for title in ("Summary", "Paired comparisons", "Per-class results", "Calibration", "Figures",
                  "Provenance", "Reporting checklist"):  # fmt: skip
        assert title in written.sections
        assert f"<h2>{title}</h2>" in page
    named = [*doc["plots"], *(p for r in doc["results"] for p in r["plots"])]
    images = [a["src"] for t, a in parsed(page).tags if t == "img"]
    assert len(images) == len(named) > 0
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert not [a for t, a in parsed(page).tags if t in ("script", "link", "iframe", "object")]
    for r in doc["results"]:
        assert esc(f"{r['backbone']} + {r['head']}") in page
        assert f"{r['metrics']['accuracy']['pooled']:.3f}" in page


def test_strings_from_a_crafted_document_render_as_text(evaluated, tmp_path):
    doc = json.loads(evaluated.read_text())
    r = doc["results"][0]
    r["metrics"]["per_class"][HOSTILE] = r["metrics"]["per_class"].pop("covid")
    r["class_counts"][HOSTILE] = 1
    r["head"] = "<img src=x onerror=alert(1)>"
    doc["warnings"].append(HOSTILE)
    doc["figures"]["files"].append({"file": f"{ATTRIBUTE}.png", "sha256": "0" * 64})
    path = evaluated.parent / "crafted.json"  # beside its figures
    path.write_text(json.dumps(doc))
    page = write_report([path], tmp_path / "crafted.html").path.read_text()
    tree = parsed(page)
    assert [t for t, _ in tree.tags].count("img") == len(doc["figures"]["files"]) - 1
    # the crafted name is not an image
    assert not any(k.startswith("on") for _, a in tree.tags for k in a)
    assert "script" not in [t for t, _ in tree.tags]
    text = "".join(tree.text)
    assert HOSTILE in text and "<img src=x onerror=alert(1)>" in text
    assert f"{ATTRIBUTE}.png: not found" in text


@given(st.text())
def test_any_cell_is_one_text_node(value):
    tree = parsed(table([value], [[value]]))
    assert [t for t, _ in tree.tags] == ["table", "thead", "tr", "th", "tbody", "tr", "td"]
    assert all(not a for _, a in tree.tags)
    assert "".join(tree.text) == value * 2 or value == ""


def report_error(tmp_path: Path, name: str, content: str | bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    result = runner.invoke(app, ["report", str(path), "--out", str(tmp_path / "x.html")])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    [line] = result.output.strip().splitlines()
    assert str(path) in line
    return line


def test_a_foreign_or_broken_document_is_one_line_naming_it(tmp_path, evaluated):
    assert "not JSON" in report_error(tmp_path, "broken.json", '{"results": [')
    assert "not a cxr evaluate or audit" in report_error(tmp_path, "f.json", '{"a": 1}')
    assert "not a cxr evaluate or audit" in report_error(tmp_path, "l.json", "[1, 2]")
    assert "not UTF-8" in report_error(tmp_path, "b.json", b"\xff\x00\x81")
    assert "not JSON" in report_error(tmp_path, "deep.json", "[" * 100_000)
    doc = json.loads(evaluated.read_text())
    doc["results"][0]["metrics"] = 5
    assert "malformed evaluate" in report_error(tmp_path, "m.json", json.dumps(doc))
    doc = json.loads(evaluated.read_text())
    doc["results"] = [1]
    assert "results are not objects" in report_error(tmp_path, "n.json", json.dumps(doc))
    assert not (tmp_path / "x.html").exists()


def test_only_the_pngs_the_run_recorded_are_embedded(evaluated, tmp_path):
    """A crafted document named any PNG the user could read (absolute, ../, a symlink out):
    the page embedded it. Only files the run recorded, as regular files inside its figures
    folder beside the document, and still the bytes it wrote, are embedded now."""
    doc = json.loads(evaluated.read_text())
    plots = Path(doc["figures"]["folder"])
    real = doc["figures"]["files"][0]
    secret = tmp_path / "elsewhere" / "private.png"  # a PNG the user can read, outside
    secret.parent.mkdir()
    secret.write_bytes((plots / real["file"]).read_bytes())
    (plots / "link.png").symlink_to(secret)
    (plots / "fake.png").write_text("not an image")
    (plots / "older-run.png").write_bytes(secret.read_bytes())  # not in this run's record
    crafted = {
        str(secret): "not a PNG file name inside the figures folder",
        "../elsewhere/private.png": "not a PNG file name inside the figures folder",
        "link.png": "not a regular file (a symbolic link)",
        "fake.png": "not a PNG image",
        "missing.png": "not found",
        ".hidden.png": "not a PNG file name inside the figures folder",
        "notes.txt": "not a PNG file name inside the figures folder",
    }
    sha = real["sha256"]
    doc["figures"]["files"] = [real] + [{"file": name, "sha256": sha} for name in crafted]
    page = write_report([_saved(evaluated, doc)], tmp_path / "r.html").path.read_text()
    tree = parsed(page)
    assert [t for t, _ in tree.tags].count("img") == 1  # the run's own figure, only
    text = "".join(tree.text)
    for name, reason in crafted.items():
        assert f"{name}: {reason}" in text
    assert "older-run.png" not in text

    (plots / real["file"]).write_bytes(secret.read_bytes() + b"\0")  # replaced since
    page = write_report([evaluated], tmp_path / "r.html").path.read_text()
    assert "changed since the run wrote it" in page


def test_paths_a_crafted_document_names_are_never_read(evaluated, tmp_path):
    """The attack as the issue found it: absolute, ``../`` and symlinked names in ``plots``
    were read and embedded, whatever PNG they named."""
    doc = json.loads(evaluated.read_text())
    secret = tmp_path.parent / f"{tmp_path.name}-private.png"
    secret.write_bytes(b"\x89PNG\r\n\x1a\n the user's own picture, not the run's")
    (evaluated.parent / "link.png").symlink_to(secret)
    relative = os.path.relpath(secret, evaluated.parent)
    doc["plots"] += [str(secret), relative, "link.png"]
    doc["results"][0]["plots"].append(str(secret))
    page = write_report([_saved(evaluated, doc)], tmp_path / "r.html").path.read_text()
    embedded = base64.b64encode(secret.read_bytes()).decode()
    assert embedded not in page


@pytest.mark.parametrize(
    "folder", ["/", "..", "{outside}", "{link}"], ids=["root", "parent", "absolute", "link"]
)
def test_a_figures_folder_outside_the_documents_folder_is_not_read(evaluated, tmp_path, folder):
    doc = json.loads(evaluated.read_text())
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    shutil.move(doc["figures"]["folder"], outside / "plots")  # the figures, only outside now
    (evaluated.parent / "linked").symlink_to(outside / "plots")
    given = folder.format(outside=outside / "plots", link=evaluated.parent / "linked")
    doc["figures"]["folder"] = given
    page = write_report([_saved(evaluated, doc)], tmp_path / "r.html").path.read_text()
    assert "<img" not in page  # the same figures, read from outside: never embedded


def _saved(evaluated: Path, doc: dict) -> Path:
    path = evaluated.with_name("crafted.json")
    path.write_text(json.dumps(doc))
    return path


def test_an_older_document_without_a_record_embeds_nothing(evaluated, tmp_path):
    doc = json.loads(evaluated.read_text())
    del doc["figures"]
    page = write_report([_saved(evaluated, doc)], tmp_path / "r.html").path.read_text()
    assert "<img" not in page and "not recorded as written by the run" in page


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda text: text.replace('"n": ', '"n": ' + "9" * 5000 + ', "m": ', 1), "digits"),
        (lambda text: text.replace('"warnings": [', '"warnings": ["\\ud800", ', 1), "surrogate"),
        (lambda text: text.replace('"head": "', '"head": "\\udcff', 1), "surrogate"),
    ],
    ids=["huge-int", "lone-surrogate-warning", "lone-surrogate-head"],
)
def test_malformed_numbers_and_strings_are_one_line(evaluated, tmp_path, edit, reason):
    """A 5,000-digit integer, or a lone surrogate that no UTF-8 page can hold: tracebacks."""
    line = report_error(tmp_path, "odd.json", edit(evaluated.read_text()))
    assert reason in line


def test_the_checklist_answers_from_the_records_and_leaves_the_rest(evaluated):
    numbers = {g: [i.number for i in ITEMS if i.guideline == g] for g in ("TRIPOD+AI", "CLAIM")}
    assert numbers["TRIPOD+AI"] == [str(n) for n in range(1, 28)]
    assert numbers["CLAIM"] == [str(n) for n in range(1, 43)]
    filled = {(f.item.guideline, f.item.number): f for f in fill(read_documents([evaluated]))}
    assert filled["CLAIM", "20"].status == TOOL
    assert "patient level" in filled["CLAIM", "20"].text
    doc = json.loads(evaluated.read_text())
    assert str(doc["results"][0]["n"]) in filled["TRIPOD+AI", "20"].text
    assert filled["CLAIM", "16"].status == AUTHOR
    assert {f.status == AUTHOR for f in filled.values()} and all(
        (f.status == AUTHOR) == (f.item.answer is None) for f in filled.values()
    )


def test_the_cli_prints_the_sections_and_size(evaluated, tmp_path):
    out = tmp_path / "cli.html"
    result = runner.invoke(app, ["report", str(evaluated), "--out", str(out)])
    assert result.exit_code == 0, result.output
    size = out.stat().st_size / 1024
    assert re.search(rf"Wrote {re.escape(str(out))} \({size:,.0f} KB", result.output)
    assert "Sections: Summary;" in result.output


def test_evaluation_renders_as_an_escaped_html_table(evaluated):
    report = json.loads(evaluated.read_text())
    crafted = copy.deepcopy(report)
    crafted["results"][0]["backbone"] = HOSTILE
    tree = parsed(Evaluation(crafted)._repr_html_())
    assert "table" in [t for t, _ in tree.tags] and "script" not in [t for t, _ in tree.tags]
    assert HOSTILE in "".join(tree.text)
    html = Evaluation(report)._repr_html_()
    for r in report["results"]:
        assert f"{r['metrics']['balanced_accuracy']['pooled']:.3f}" in html


def test_write_report_takes_documents_already_read(evaluated, tmp_path):
    docs = read_documents([evaluated])
    written = write_report(docs, tmp_path / "sub" / "r.html")
    assert written.path.exists() and written.checklist[TOOL] > 0
    with pytest.raises(CxrError, match="no documents"):
        read_documents([])


def test_a_report_that_cannot_replace_its_target_is_one_line_and_leaves_nothing(
    evaluated, tmp_path
):
    target = tmp_path / "out" / "r.html"
    (target / "kept").mkdir(parents=True)  # a folder in the way: os.replace fails
    with pytest.raises(CxrError, match=r"r\.html: cannot write the report"):
        write_report([evaluated], target)
    assert [p.name for p in target.parent.iterdir()] == ["r.html"]  # no temporary file left


def test_the_commands_page_names_the_items_the_checklist_fills():
    from helpers import ROOT

    text = " ".join((ROOT / "docs" / "commands.md").read_text().split())
    answered = {g: [int(i.number) for i in ITEMS if i.guideline == g and i.answer] for g in
                ("TRIPOD+AI", "CLAIM")}  # fmt: skip
    claim = re.search(r"CLAIM ([\d\-, and]+) and (\d+)\.", text)
    assert claim is not None
    listed = []
    for part in re.split(r", | and ", f"{claim.group(1)}, {claim.group(2)}"):
        lo, _, hi = part.strip().partition("-")
        listed += range(int(lo), int(hi or lo) + 1)
    assert listed == answered["CLAIM"]
    for n in answered["TRIPOD+AI"]:
        assert re.search(rf"\b{n}\b", text.split("TRIPOD+AI 5")[1].split("CLAIM 7")[0] + " 5")
