"""The house: one CLI edge, one vocabulary, one metric table, one installed namespace."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import ROOT
from typer.testing import CliRunner

from cxr.classify import metric_table, outcomes
from cxr.cli import app
from cxr.errors import CxrError, RunFailed
from cxr.extract.runner import Summary

runner = CliRunner()

# Each command, its arguments, and the library function it hands the work to.
COMMANDS = {
    "features": (["features", "data"], "cxr.extract.runner.extract_features"),
    "info": (["info"], "cxr.store.find_stores"),
    "evaluate": (["evaluate"], "cxr.classify.evaluate.evaluate"),
    "train": (["train"], "cxr.classify.model.train"),
    "predict": (["predict", "x.png", "--model", "m.skops"], "cxr.classify.model.predict"),
    "audit": (["audit"], "cxr.audit.run.audit"),
    "reproduce": (["reproduce"], "cxr.reproduce.run.reproduce"),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("error", [CxrError, RunFailed])
def test_every_command_reports_errors_through_one_edge(monkeypatch, command, error):
    args, target = COMMANDS[command]

    def fail(*_, **__):
        raise error("some/file.png: the reason")

    monkeypatch.setattr(target, fail)
    result = runner.invoke(app, args)
    assert result.exit_code == error.exit_code
    assert result.stderr == "error: some/file.png: the reason\n"
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_features_keeps_out_as_a_hidden_alias(monkeypatch, tmp_path):
    seen = {}
    stored = Summary("b", tmp_path / "b.h5", 8, 1, 0, 0, 1, 0.1, True)
    monkeypatch.setattr(
        "cxr.extract.runner.extract_features", lambda **kw: seen.update(kw) or [stored]
    )
    for flag in ("--features", "--out"):
        assert runner.invoke(app, ["features", "data", flag, str(tmp_path / flag)]).exit_code == 0
        assert seen["features_dir"] == tmp_path / flag
    assert "--out" not in runner.invoke(app, ["features", "--help"]).output


def test_json_means_a_path_or_dash_for_stdout_everywhere(make_synthetic_store, tmp_path):
    features = make_synthetic_store().parent
    fast = ["--head", "logreg", "--folds", "3", "--bootstrap", "20", "--jobs", "1"]
    commands = {
        "backbones": ["backbones"],
        "info": ["info", "--features", str(features)],
        "evaluate": ["evaluate", "--features", str(features), *fast],
        "train": ["train", "--features", str(features), "--out", str(tmp_path / "m.skops")],
    }
    for name, args in commands.items():
        alone = runner.invoke(app, [*args, "--json", "-"])
        assert alone.exit_code == 0, alone.output
        document = json.loads(alone.stdout)  # stdout holds the JSON and nothing else...
        assert alone.stderr.strip()  # ...and people's report went to stderr
        path = tmp_path / f"{name}.json"
        written = runner.invoke(app, [*args, "--json", str(path)])
        assert written.exit_code == 0 and f"Wrote {path}" in written.stdout
        assert json.loads(path.read_text()).keys() == document.keys()


def test_a_metric_is_one_registry_entry(make_synthetic_store, monkeypatch, tmp_path):
    """Registered once, a metric reaches the CV summary, the JSON and the terminal report."""
    monkeypatch.setattr(metric_table, "METRICS", list(metric_table.METRICS))

    def npv(o):
        _, fn, _, tn = outcomes._counts(o.cm)
        return outcomes._ratio(tn, tn + fn)

    metric_table.register(metric_table.Metric("npv", "NPV", npv, per_class=True))
    metric_table.register(
        metric_table.Metric(
            "youden", "Youden J", lambda o: outcomes.balanced_accuracy(o.cm) * 2 - 1
        )
    )
    out = tmp_path / "e.json"
    args = ["evaluate", "--features", str(make_synthetic_store().parent), "--head", "logreg"]
    fast = ["--folds", "3", "--bootstrap", "50", "--jobs", "1", "--json", str(out)]
    result = runner.invoke(app, [*args, *fast], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "NPV" in result.stdout and "Youden J" in result.stdout
    entry = json.loads(out.read_text())["results"][0]
    cm = np.asarray(entry["confusion_matrix"], dtype=float)
    for i, cls in enumerate(entry["classes"]):
        tn = cm.sum() - cm[i].sum() - cm[:, i].sum() + cm[i, i]
        fn = cm[i].sum() - cm[i, i]
        assert entry["metrics"]["per_class"][cls]["npv"]["pooled"] == pytest.approx(tn / (tn + fn))
    youden = entry["metrics"]["youden"]
    assert youden["pooled"] == pytest.approx(
        2 * entry["metrics"]["balanced_accuracy"]["pooled"] - 1
    )
    assert len(youden["folds"]) == 3 and youden["ci95"][0] <= youden["pooled"] <= youden["ci95"][1]
    with pytest.raises(ValueError, match="already registered"):
        metric_table.register(metric_table.Metric("npv", "again", npv, per_class=True))


@pytest.mark.slow
def test_the_wheel_installs_one_package_cxr(tmp_path):
    source = tmp_path / "src"  # setuptools builds in the source tree: build a copy
    shutil.copytree(
        ROOT, source, ignore=shutil.ignore_patterns(".*", "features", "build", "*.h5", "*.egg-info")
    )
    build = [
        "wheel",
        str(source),
        "--no-deps",
        "--no-build-isolation",
        "--wheel-dir",
        str(tmp_path),
    ]
    done = subprocess.run(
        [sys.executable, "-m", "pip", *build],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    [wheel] = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {
        "cxr",
        "-".join(wheel.name.split("-")[:2]) + ".dist-info",
    }
    for module in ("cli.py", "errors.py", "store/schema.py", "classify/evaluate.py"):
        assert f"cxr/{module}" in names
    assert not any(n.startswith(("cxr/tests/", "cxr/benchmarks/")) for n in names)


def test_the_package_imports_from_outside_the_repository(tmp_path):
    code = "import cxr.store, cxr.classify.evaluate, cxr.cli; print(cxr.store.__file__)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).parent.name == "store"


def test_stage_2_source_has_no_stage_1_import():
    for path in (ROOT / "classify").glob("*.py"):
        for line in path.read_text().splitlines():
            assert not line.lstrip().startswith(("from cxr.extract", "import cxr.extract")), path


def test_the_cli_is_a_thin_edge():
    """Every command's tables live beside its logic (`*/tables.py`), the CLI
    imports nothing private from the package, and only `store/` knows its folders' layout."""
    source = (ROOT / "cli.py").read_text()
    assert "Table(" not in source and "def _render" not in source
    private = [line for line in source.splitlines() if re.search(r"from cxr\.\S+ import _", line)]
    assert private == []
    layout = [
        str(path.relative_to(ROOT))
        for path in ROOT.rglob("*.py")
        if path.relative_to(ROOT).parts[0] not in ("store", "tests", ".venv", "build")
        and '.parts"' in path.read_text()
    ]
    assert layout == []


def test_info_prints_names_from_the_folder_as_text(tmp_path):
    """A parts folder's name is the backbone `cxr info` prints: Rich markup in it is shown as
    it is (before: parsed, so the name printed was not the folder's)."""
    parts = tmp_path / ".[bold]x.parts"
    parts.mkdir()
    (parts / "0001.h5").write_bytes(b"")
    result = runner.invoke(app, ["info", "--features", str(tmp_path)])
    assert result.exit_code == 0
    assert "[bold]x: 1 committed batch(es)" in result.stdout
    empty = tmp_path / "[bold]none"
    empty.mkdir()
    assert f"No stores in {empty}." in runner.invoke(app, ["info", "--features", str(empty)]).stdout


# ---- traps a user met (issue 15; moved from tests/test_traps.py) --------------------


def test_version():
    from cxr import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"cxr {__version__}"


def test_every_commands_help_is_printed_as_written():
    """Rich markup is not applied to help text: ``pip install 'cxr-transfer[tracking]'`` keeps
    its brackets (Rich took ``[tracking]`` for a style and dropped it), in every option's help
    and every command's description."""
    import typer.main

    command_group: Any = typer.main.get_command(app)
    written = 0
    for name, command in command_group.commands.items():
        shown = runner.invoke(app, [name, "--help"], env={"COLUMNS": "2000"}).output
        flat = " ".join(shown.replace("│", " ").split())
        for item in [command, *command.params]:
            text = getattr(item, "help", None)
            if text and not getattr(item, "hidden", False):
                assert " ".join(text.split()) in flat, f"cxr {name}: {text!r}"
                written += "[" in text
    assert written >= 3  # the install hints of --track, --tracking-uri and --runtime at least
