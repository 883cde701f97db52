"""Every `cxr` command and Python example of the README and the docs pages run, on a small slice
of the real shared data (so the documentation cannot drift from the tool). Real outputs quoted in
them come from runs on the whole set by `make docs` (which CI runs, failing on any difference);
here every other command must simply succeed."""

from __future__ import annotations

import csv
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
from helpers import CXR_DATA, REAL_WEIGHTS, ROOT, script
from typer.testing import CliRunner

from cxr.cli import app

README = ROOT / "README.md"
# The pages whose commands and examples run here: all but docs/collections.md, whose commands
# run on each public collection as its distributor ships it (rebuilt by tests/shipped.py, for
# `make docs` and tests/test_collections.py), not on a slice of the shared set.
PAGES = [README, *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "collections.md")]
PER_GROUP = 12  # images per (label, dataset), distinct patients: enough for 10 grouped folds
runner = CliRunner()


def blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)


def commands(text: str) -> list[list[str]]:
    """`cxr ...` lines of bash blocks and `$ cxr ...` lines of untyped (console) blocks, with
    backslash continuations joined and comments dropped."""
    found = []
    for language, body in blocks(text):
        if language not in ("bash", ""):
            continue
        joined = re.sub(r"\\\n\s*", " ", body)
        for line in joined.splitlines():
            line = line.strip()
            if language == "" and not line.startswith("$ cxr "):
                continue
            line = line.removeprefix("$ ")
            if line.startswith("cxr "):
                found.append(shlex.split(line, comments=True)[1:])
    return found


def python_examples(text: str) -> list[str]:
    return [body for language, body in blocks(text) if language == "python"]


def test_the_pages_have_examples_to_run():
    found = [c for page in PAGES for c in commands(page.read_text())]
    assert ["features", "../shared/data/cxr", "-b", "mobilenet_v2", "-b", "mobilenet_025"] in found
    assert any(c[0] == "evaluate" and "--leave-out" in c for c in found)
    assert any(c[0] == "evaluate" for c in commands(README.read_text()))
    for page in (README, ROOT / "docs" / "api.md"):
        assert len(python_examples(page.read_text())) == 1, page.name


def slice_of_shared_data(dest: Path) -> Path:
    """The first PER_GROUP images of each (label, dataset), one per patient, with their rows."""
    with open(CXR_DATA / "manifest.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        columns, rows = reader.fieldnames, list(reader)
    kept, seen = [], set()
    for row in rows:
        group = (row["label"], row["dataset"])
        taken = sum(1 for r in kept if (r["label"], r["dataset"]) == group)
        if taken < PER_GROUP and (group, row["patient_id"]) not in seen:
            seen.add((group, row["patient_id"]))
            kept.append(row)
    for row in kept:
        target = dest / row["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(CXR_DATA / row["path"], target)
    with open(dest / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, columns)
        writer.writeheader()
        writer.writerows(kept)
    return dest


@pytest.mark.readme
@pytest.mark.realweights
def test_every_command_and_python_example_of_the_pages_run(tmp_path, monkeypatch):
    if not (CXR_DATA / "manifest.csv").is_file():
        pytest.skip(f"{CXR_DATA} not available")
    weights = {name: REAL_WEIGHTS[name] for name in ("mobilenet_v2", "mobilenet_025")}
    if not all(p.is_file() for p in weights.values()):
        pytest.skip("real weights not available")
    data = slice_of_shared_data(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    # Offline, the weight files are found by name like the ImageNet files Keras would download.
    monkeypatch.setenv("CXR_WEIGHTS_DIR", str(tmp_path / "weights"))
    (tmp_path / "weights").mkdir()
    for path in weights.values():
        (tmp_path / "weights" / path.name).symlink_to(path)
    found = [c for page in PAGES for c in commands(typed(page.read_text()))]
    found = [c for i, c in enumerate(found) if c not in found[:i]]  # a page repeating one: once
    ordered = [c for c in found if c[0] == "features"] + [c for c in found if c[0] != "features"]
    for args in ordered:
        args = [a.replace("../shared/data/cxr", str(data)) for a in args]
        if args[0] == "features":
            named = [name for name in weights if name in args]
            args += [f for name in named for f in ("--weights", f"{name}={weights[name].name}")]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, f"cxr {shlex.join(args)}:\n{result.output}"
    for page in PAGES:
        for example in python_examples(page.read_text()):
            exec(compile(example, page.name, "exec"), {})


def typed(page: str) -> str:
    """A page without its generated blocks: `make docs` runs their commands on the whole shared
    set, and CI runs `make docs` and fails on any difference, so here they would run twice."""
    for generated in script("docs/outputs.py").sections(page).values():
        page = page.replace(generated, "")
    return page


def test_the_real_outputs_are_the_generated_ones():
    """Every block `make docs` wrote to docs/outputs.json stands in exactly one page (the README
    or a page of docs/), as it was written there, and every block a page shows is one of them."""
    outputs = script("docs/outputs.py")
    generated = json.loads((ROOT / "docs" / "outputs.json").read_text())
    shown: dict[str, list[tuple[str, str]]] = {}
    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for name, text in outputs.sections(page.read_text()).items():
            shown.setdefault(name, []).append((page.name, text))
    assert set(shown) == set(generated["blocks"]) == set(outputs.BLOCKS)
    for name, places in shown.items():
        assert len(places) == 1, f"{name} stands in {[page for page, _ in places]}"
        [(page, text)] = places
        assert text == outputs.section(name, generated["blocks"][name]), f"{name} in {page}"
    assert {n: page.name for n, page in outputs.placed().items()} == {
        n: places[0][0] for n, places in shown.items()
    }


def test_the_make_evaluate_check_finds_a_changed_number():
    """CI's `docs/outputs.py --shown-in`: the README's `make evaluate` block against a capture
    of `make evaluate` (here, its own excerpts amid other lines; then one digit changed)."""
    outputs = script("docs/outputs.py")
    block = json.loads((ROOT / "docs" / "outputs.json").read_text())["blocks"]["quick-start"]
    runs = outputs.excerpts(block)
    assert block.splitlines()[1] == "$ make evaluate" and len(runs) >= 2
    printed = "\n".join(f"{line}   " for run in runs for line in ["(cut)", *run, "(cut)"])
    assert outputs.missing(block, printed) == []
    assert outputs.missing(block, "\n".join(line for run in runs[::-1] for line in run))
    digit = next(c for c in printed if c.isdigit())
    assert outputs.missing(block, printed.replace(digit, str((int(digit) + 1) % 10)))
