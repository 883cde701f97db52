"""The terminal report at 120 columns: every result on one line with its settings, and headers
whole (issue 25: two runs in scrollback could not be told apart); every warning wrapped at words
to the width (issue 34: a 250-character confound warning ran past it)."""

from __future__ import annotations

import pytest
from rich.console import Console

import cxr
from cxr.classify.tables import render, result_settings

WIDTH = 120


def shown(report: dict) -> list[str]:
    console = Console(width=WIDTH, record=True)
    render(report, console)
    return console.export_text().splitlines()


def table_lines(lines: list[str], header: str) -> list[str]:
    """The header line of a table and its body, up to the blank line that ends it."""
    start = next(i for i, line in enumerate(lines) if header in line)
    end = next(i for i in range(start + 2, len(lines)) if not lines[i].strip())
    return lines[start:end]


@pytest.mark.parametrize(
    "options",
    [
        {"binary": "covid"},
        {"leave_out": "site"},
        {"test_where": ["site=b"]},
    ],
    ids=["binary", "leave-out", "external"],
)
def test_each_result_is_one_line_naming_its_settings(make_synthetic_store, options):
    sources = {"site": lambda r: "a" if int(r["patient_id"].rsplit("p", 1)[1]) % 2 else "b"}
    path = make_synthetic_store({"covid": 10, "normal": 10}, meta=sources)
    make_synthetic_store({"covid": 10, "normal": 10}, backbone="mobilenet_025", meta=sources)
    ev = cxr.evaluate(
        path.parent,
        heads=["mlp", "logreg"],
        params={"mlp": {"alpha": 1e-3, "hidden_layer_sizes": [64, 32]}},
        bootstrap=50,
        jobs=1,
        **options,
    )
    lines = shown(ev.report)
    assert all(len(line) <= WIDTH for line in lines)  # warnings too: wrapped at words
    body = table_lines(lines, "vs best (bal. accuracy)")
    header, rows = body[0], body[2:]
    inline = header.split()[-1] == "settings"
    assert header.split()[: -1 if inline else None] == [
        "#", "backbone", "head", *(["held", "out"] if "leave_out" in options else []), "n",
        "bal.", "accuracy", "vs", "best", "(bal.", "accuracy)",
    ]  # fmt: skip
    assert len(rows) == len(ev.results)  # one line per result: no cell wrapped
    for i, (row, result) in enumerate(zip(rows, ev.results, strict=True), 1):
        assert result["backbone"] in row and result["head"] in row and "…" not in row
        expected = (
            "hidden_layer_sizes=64,32, alpha=0.001" if result["head"] == "mlp" else "defaults"
        )
        below = [line for line in lines if line.startswith(f"#{i} settings: ")]
        assert (row.rstrip() if inline else below[0]).endswith(expected)
    metrics = table_lines(lines, "macro-F1")
    assert len(metrics) == 2 + len(ev.results)
    per_class = [line for line in lines if line.lstrip().startswith(("covid ", "normal "))]
    intervals = [line.count("[") for line in per_class if "[" in line]
    assert intervals and set(intervals) == {3, 4}  # every interval of a class on its line


def test_settings_compare_with_the_heads_defaults_as_json_reads_them():
    mlp = {"hidden_layer_sizes": [256], "alpha": 0.0001, "max_iter": 300}
    assert result_settings({"head": "mlp", "params": mlp}) == "defaults"  # a tuple read as a list
    assert result_settings({"head": "mlp", "params": {**mlp, "alpha": 0.01}}) == "alpha=0.01"
    searched = {"head": "logreg", "params": {"C": 1.0}, "search": {"grid": {"clf__C": [1, 10]}}}
    assert result_settings(searched) == "searched C"
    assert result_settings({"head": "svm", "params": {"pca": None}}) == "pca=none"


@pytest.mark.parametrize("width", [80, 100, 160])
def test_the_per_class_tables_cut_no_cell_at_the_terminal_width(make_synthetic_store, width):
    """At 100 columns the per-class table cut the class names and counts ("bacteri…  8…")."""
    path = make_synthetic_store({"bacterial": 10, "covid": 10, "normal": 10})
    ev = cxr.evaluate(path.parent, heads=["logreg"], bootstrap=50, jobs=1)
    console = Console(width=width, record=True)
    render(ev.report, console)
    lines = console.export_text().splitlines()
    rows = [line for line in lines if line.split()[:1] in (["bacterial"], ["covid"], ["normal"])]
    assert rows and not any("…" in line for line in rows)
    assert all(len(line.rstrip()) <= width for line in lines)
    headers = " ".join(line for line in lines if line.lstrip().startswith("class "))
    for title in ("sensitivity", "specificity", "F1", "ROC AUC", "spec. @ 95% sens."):
        assert title in headers
