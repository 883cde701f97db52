"""`cxr.classify.records`: the typed records of a result, serialised once and read back by one
reader. Checked against every result of the golden runs (written by an earlier version of the
code), so the records hold exactly what the JSON always held, in its order."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cxr.classify.records import CROSS_VALIDATION, Inputs, Protocol, Validation

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = sorted((ROOT / "tests" / "golden").glob("*.json"))


def _results() -> list[dict]:
    return [r for path in GOLDEN for r in json.loads(path.read_text())["results"]]


def test_every_golden_validation_and_protocol_is_its_record_serialised():
    kinds, schemes = set(), set()
    for r in _results():
        record, protocol = Validation.of(r), Protocol.of(r)
        kinds.add(record.kind)
        schemes.add(protocol.scheme)
        assert json.dumps(record.to_dict()) == json.dumps(r["validation"])  # keys in order
        assert json.dumps(protocol.to_dict()) == json.dumps(r["cv"])
    assert kinds == {CROSS_VALIDATION, "leave-one-out", "external"}
    assert {"StratifiedGroupKFold", "StratifiedKFold", "external test set"} <= schemes


def test_every_golden_inputs_text_is_its_record_written():
    seen = set()
    for r in _results():
        record = Inputs.of(r)
        assert str(record) == r["inputs"]
        seen.add((record.embeddings, record.alone))
    assert seen == {(True, True), (True, False), (False, False)}


def test_results_join_on_the_validation_fields_not_its_text():
    """Two results of one held-out part are one key, whatever order a file wrote the keys in;
    another part is another key."""
    a = {"validation": {"kind": "leave-one-out", "column": "site", "held_out": "A", "n_test": 3}}
    b = {"validation": {"n_test": 3, "held_out": "A", "column": "site", "kind": "leave-one-out"}}
    c = {"validation": {"kind": "leave-one-out", "column": "site", "held_out": "B", "n_test": 3}}
    assert str(a["validation"]) != str(b["validation"])
    assert Validation.of(a) == Validation.of(b) and hash(Validation.of(a)) == hash(Validation.of(b))
    assert Validation.of(a) != Validation.of(c)


@pytest.mark.parametrize(
    "result",
    [{}, {"validation": None}, {"validation": "odd"}, {"validation": {"kind": CROSS_VALIDATION}}],
)
def test_a_result_without_a_validation_record_was_cross_validated(result):
    assert Validation.of(result) == Validation()
    assert Validation.of({"validation": {"kind": "external", "later": 1}}).kind == "external"


@pytest.mark.parametrize(
    ("text", "record"),
    [
        ("embeddings", Inputs()),
        ("embeddings + age, sex", Inputs(True, "age, sex")),
        ("age, sex alone", Inputs(False, "age, sex")),
    ],
)
def test_inputs_text_round_trips(text, record):
    assert Inputs.parse(text) == record and str(record) == text


def test_no_module_reads_the_validation_or_inputs_json_but_the_records():
    """Every reader goes through `Validation.of` / `Inputs.of`: no `.get("validation")` chain,
    no "embeddings + " parsed back, outside the module that owns the form."""
    pattern = re.compile(
        r"""get\(\s*["']validation["']|\[["']validation["']\]\[|["']embeddings \+ """
    )
    found = []
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).parts
        if parts[0] in (".venv", "tests", "build") or path.name == "records.py":
            continue
        found += [f"{path}:{n}" for n, line in enumerate(path.read_text().splitlines(), 1)
                  if pattern.search(line)]  # fmt: skip
    assert found == []
