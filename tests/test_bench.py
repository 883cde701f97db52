"""The performance page's table and the scale page's section say what the last `make bench` and
`make bench-scale` measured."""

from __future__ import annotations

import importlib.util
import json

import pytest
from helpers import ROOT


def bench_report():
    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "benchmarks" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_performance_section_is_generated_from_the_results():
    results = ROOT / "benchmarks" / "results.json"
    if not results.is_file():
        pytest.skip("benchmarks/results.json not generated yet (run `make bench`)")
    report = bench_report()
    readme = (ROOT / "docs" / "performance.md").read_text()
    section = readme[readme.index(report.START) : readme.index(report.END) + len(report.END)]
    assert section == report.render_readme(json.loads(results.read_text()))


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
    text = report.render_readme(fake)
    assert "| a | >= 1 | 2 | pass |" in text and "| b | < 60 s | 90 s | FAIL |" in text
    assert "- b: why" in text and text.startswith(report.START) and text.endswith(report.END)
    readme = f"before\n{report.START}\nold\n{report.END}\nafter"
    assert report.replace_section(readme, text) == f"before\n{text}\nafter"


def test_the_scale_section_is_generated_from_the_scale_results():
    results = ROOT / "benchmarks" / "scale.json"
    if not results.is_file():
        pytest.skip("benchmarks/scale.json not generated yet (run `make bench-scale`)")
    report = bench_report()
    readme = (ROOT / "docs" / "scale.md").read_text()
    section = readme[readme.index(report.SCALE_START) : readme.index(report.SCALE_END)]
    assert section + report.SCALE_END == report.render_scale(json.loads(results.read_text()))


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
    assert "FAIL" in report.render_scale(fake)
    fake["audit"]["recall_phash"] = 1.0
    assert "pass" in report.render_scale(fake)
    fake["audit"]["seconds"] = 400
    assert "FAIL" in report.render_scale(fake)
