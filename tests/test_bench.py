"""The performance page's table, the scale page's section and the quick start's timings say what
the last `make bench` and `make bench-scale` measured."""

from __future__ import annotations

import json

import pytest
from helpers import ROOT, script


def bench_report():
    return script("benchmarks/rendering.py")


@pytest.mark.parametrize("name", ["performance", "scale", "timings"])
def test_the_quoted_measurements_are_rendered_from_the_committed_results(name):
    """The pages' blocks that quote the benchmarks (their tables, the quick start's timings)
    are what the committed JSON renders to: a `make bench` committed without its pages fails."""
    outputs = script("docs/outputs.py")
    generated = json.loads((ROOT / "docs" / "outputs.json").read_text())["blocks"]
    assert generated[name] == outputs.BLOCKS[name](None)


def test_the_section_reports_every_result_with_its_verdict():
    report = bench_report()
    fake = {
        "command": "make bench",
        "generated": "today",
        "repeats": 3,
        "machine": {"platform": "p", "cpus": 2, "python": "3", "tensorflow": "t", "sklearn": "s"},
        "results": [
            {"name": "a", "target": ">= 1", "measured": "2", "passed": True},
            {"name": "b", "target": "< 60 s", "measured": "90 s", "passed": False, "note": "why"},
        ],
    }
    text = report.performance(fake)
    assert "| a | >= 1 | 2 | pass |" in text and "| b | < 60 s | 90 s | FAIL |" in text
    assert "- b: why" in text and "load average" not in text
    fake["machine"]["load"] = 4.5
    assert "load average 4.5 at the start" in report.performance(fake)


def test_the_scale_section_judges_the_audit_target():
    report = bench_report()
    fake = {
        "command": "make bench-scale",
        "generated": "today",
        "machine": {"platform": "p", "cpus": 2},
        "sizes": {"rows": 10, "dim": 4, "patients": 5, "planted_pairs_per_method": 2},
        "publish": {"seconds": 1, "peak_mb": 2},
        "load": {"seconds": 1, "peak_mb": 2},
        "info": {"seconds": 1, "peak_mb": 2},
        "audit": {"seconds": 10, "peak_mb": 2, "recall_cosine": 1.0, "recall_phash": 0.5},
    }
    fake["sizes"]["embeddings_mb"] = 0
    assert "FAIL" in report.scale(fake)
    fake["audit"]["recall_phash"] = 1.0
    assert "pass" in report.scale(fake)
    fake["audit"]["seconds"] = 400
    assert "FAIL" in report.scale(fake)
