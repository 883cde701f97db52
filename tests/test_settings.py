"""Every evaluate setting is defined once (`cxr.classify.settings`), and every features setting
(`cxr.extract.settings`): the CLI's options and the API's keywords have an entry there and its
default, `EvaluateConfig` and the records it holds (and stage 1's runner) take their defaults
from it, no default is written again as a literal, and the library names settings (the CLI
prints flags)."""

from __future__ import annotations

import ast
import inspect
import io
import re
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import pytest
import typer
from helpers import save_png
from rich.console import Console
from typer.testing import CliRunner

import cxr
from cxr.classify.config import EvaluateConfig
from cxr.classify.designs import CrossValidation
from cxr.classify.metrics import Bootstrap
from cxr.classify.settings import EVALUATE, as_flags, flag
from cxr.classify.tasks import TaskSpec
from cxr.cli import app
from cxr.errors import CxrError
from cxr.extract.discovery import discover
from cxr.extract.layouts import ReadOptions
from cxr.extract.settings import FEATURES
from cxr.progress import RichProgress

PACKAGE = Path(cxr.__file__).parent
# Options of the edge, not of the evaluation: where things are read and written, how it is shown.
CLI_ONLY = {"features_dir", "json_out", "plots", "quiet", "track", "tracking_uri", "config"}
API_ONLY = {"features", "design", "plots", "progress"}
# The records the configuration holds, and the setting each of their fields is.
RECORDS = {
    TaskSpec: {f: f for f in ("classes", "binary", "where", "exclude", "target")},
    CrossValidation: {"folds": "folds", "repeats": "repeats", "group_by": "group_by"},
    Bootstrap: {"replicates": "bootstrap", "operating_point": "operating_point"},
}
# Parameters elsewhere that hold a setting under another name.
ALIASES = {"draws": "curve_draws", "margin": "curve_margin", "replicates": "bootstrap"}


# The same for `cxr features`: its edge's own options and keywords, and the runner's parameters
# that hold a setting under another name (or several: ``read``).
FEATURES_CLI_ONLY = {"data", "out", "strict", "json_out"}
FEATURES_API_ONLY = {"data", "progress"}
RUNNER = {"features_dir": "features"}


def _cli_options(command_name: str = "evaluate") -> dict[str, Any]:
    """The click parameters of a command, by their Python name."""
    command: Any = typer.main.get_command(app)
    return {p.name: p for p in command.commands[command_name].params if p.name}


def _setting_of(param: Any, table: dict = EVALUATE) -> Any:
    return next((s for s in table.values() if s.flag in param.opts), None)


def test_every_cli_option_is_a_setting_with_its_default_and_help():
    options = _cli_options()
    for name, param in options.items():
        if name in CLI_ONLY:
            continue
        entry = _setting_of(param)
        assert entry is not None, f"cxr evaluate {param.opts}: no setting defines it"
        cli_default = param.default if not param.multiple else list(param.default or [])
        assert cli_default == entry.cli_default, entry.name
        assert entry.help in (param.help or "") or entry.name == "scheduler", entry.name
    shown = {_setting_of(p).name for n, p in options.items() if n not in CLI_ONLY}
    assert shown == set(EVALUATE), "a setting without a CLI option"


def test_every_api_keyword_is_a_setting_with_its_default():
    keywords = inspect.signature(cxr.evaluate).parameters
    for name, parameter in keywords.items():
        if name in API_ONLY:
            continue
        assert name in EVALUATE, f"cxr.evaluate({name}=...): no setting defines it"
        assert parameter.default == EVALUATE[name].default, name
    assert set(keywords) - API_ONLY == set(EVALUATE), "a setting without an API keyword"


def test_the_cli_and_the_api_agree_on_every_default():
    """Without the table: the CLI's default, read back into Python values, is the API's (they
    drifted once: --predictions was off in the CLI and on in the API)."""
    keywords = inspect.signature(cxr.evaluate).parameters
    options = _cli_options()
    as_python = {"confounds": {"auto": None}, "cache": {False: True}}
    for name, param in options.items():
        if name in CLI_ONLY:
            continue
        keyword = _setting_of(param).name
        value = param.default
        if not isinstance(value, list):
            value = as_python.get(keyword, {}).get(value, value)
        expected = keywords[keyword].default
        if param.multiple or expected == ():
            value, expected = list(value or ()), list(expected or ())
        assert value == expected, f"--{name}: CLI {value!r}, API {expected!r}"


def test_the_configuration_takes_its_defaults_from_the_settings():
    defaults = {f.name: f.default for f in fields(EvaluateConfig) if f.default is not MISSING}
    for name, value in defaults.items():
        if name in EVALUATE and name != "bootstrap":  # a `Bootstrap` (checked below)
            assert value == EVALUATE[name].default, name
    assert EvaluateConfig().jobs == EVALUATE["jobs"].default
    for record, names in RECORDS.items():
        own = {f.name: f.default for f in fields(record) if f.default is not MISSING}
        for field_name, name in names.items():
            if field_name in own and EVALUATE[name].default is not None:
                assert own[field_name] == EVALUATE[name].default, f"{record.__name__}.{name}"


def _defaults(tree: ast.AST):
    """(name, default node) of every parameter and class-body field of a module."""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args
            positional = args.posonlyargs + args.args
            with_default = positional[len(positional) - len(args.defaults) :]
            yield from zip([a.arg for a in with_default], args.defaults, strict=True)
            yield from (
                (a.arg, d)
                for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)
                if d is not None
            )
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if (
                    isinstance(item, ast.AnnAssign)
                    and isinstance(item.target, ast.Name)
                    and item.value is not None
                ):
                    yield item.target.id, item.value


def test_no_default_of_a_setting_is_written_again_as_a_literal():
    """A parameter or field named like a setting takes its default from the table: a literal
    there (``metric: str = "balanced_accuracy"``) would drift."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if (
            relative.parts[0] in ("tests", "benchmarks", "docs", ".venv")
            or path.name == "settings.py"
        ):
            continue
        for name, node in _defaults(ast.parse(path.read_text())):
            entry = EVALUATE.get(ALIASES.get(name, name)) or FEATURES.get(RUNNER.get(name, name))
            if entry is None or not isinstance(entry.default, str | int | float):
                continue
            try:
                value = ast.literal_eval(node)
            except ValueError:
                continue  # a name: the table's, or a constant of its own
            if value == entry.default and value not in (0, False, True, ""):
                found.append(f"{relative}: {name} = {value!r}")
    assert not found


FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]*")


LIBRARY = ["classify", "extract", "store"]


def _messages(package: str):
    """(where, text) of every string literal of a package's modules but their docstrings and
    the settings tables."""
    for path in sorted((PACKAGE / package).rglob("*.py")):
        if path.name == "settings.py":
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        yield from (
            (f"{path.relative_to(PACKAGE)}:{node.lineno}", node.value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        )


@pytest.mark.parametrize("package", LIBRARY)
def test_no_module_of_the_library_names_a_cli_flag(package):
    """The library speaks in settings; text that the CLI shows takes its flags from the table
    (`as_flags` on its errors and stage 1's notes, `flag` in what is stored or reported)."""
    found = [f"{at}: {text.strip()[:60]}" for at, text in _messages(package) if FLAG.search(text)]
    assert not found


@pytest.mark.parametrize("package", LIBRARY)
def test_every_name_in_backticks_is_a_flag_the_cli_has(package):
    """`as_flags` turns every `name` of a message into ``--name``: each must be an option of
    a command (else the CLI would print a flag that does not exist)."""
    command: Any = typer.main.get_command(app)
    flags = {o for c in command.commands.values() for p in c.params for o in p.opts}
    found = [
        f"{at}: `{name}`"
        for at, text in _messages(package)
        for name in re.findall(r"`([a-z][a-z0-9_]*)`", text)
        if flag(name) not in flags
    ]
    assert not found


def test_library_errors_name_the_setting_and_the_cli_its_flag(make_synthetic_store):
    with pytest.raises(CxrError, match=r"^`curve_draws` must be 1\.\.100$"):
        EvaluateConfig(curve_draws=500)
    with pytest.raises(CxrError, match=r"^`folds` must be 2\.\.1000 and `repeats` 1\.\.100"):
        cxr.evaluate("features", folds=1)
    with pytest.raises(CxrError, match=r"`params` logreg\.C lists 2 values: add `search`"):
        cxr.evaluate("features", params={"logreg": {"C": [1, 2]}}, heads=["logreg"])
    path = make_synthetic_store()
    done = CliRunner().invoke(app, ["evaluate", "--features", str(path.parent), "--folds", "1"])
    assert done.exit_code == 2
    assert "error: --folds must be 2..1000 and --repeats 1..100" in done.output
    done = CliRunner().invoke(
        app, ["evaluate", "--features", str(path.parent), "--set", "logreg.C=1,2", "-q"]
    )
    assert "--set logreg.C lists 2 values: add --search" in done.output


def test_flags_are_the_tables_and_otherwise_the_setting_with_dashes():
    assert flag("params") == "--set" and flag("cache") == "--no-cache"
    assert flag("backbones") == "--backbone" and flag("trust_pickle") == "--trust-pickle"
    assert as_flags("`leave_out` and `test_where`; `cxr train` stays") == (
        "--leave-out and --test-where; `cxr train` stays"
    )


def test_every_features_option_and_keyword_is_a_setting_with_its_default():
    """`cxr features`, `cxr.extract_features` and stage 1's runner take every setting from
    `cxr.extract.settings` (before: literals in each, and the CLI's --shard 256 was the runner's
    None)."""
    options = _cli_options("features")
    for name, param in options.items():
        if name in FEATURES_CLI_ONLY:
            continue
        entry = _setting_of(param, FEATURES)
        assert entry is not None, f"cxr features {param.opts}: no setting defines it"
        cli_default = param.default if not param.multiple else list(param.default or [])
        assert cli_default == entry.cli_default, entry.name
        assert entry.help in (param.help or "") or entry.name == "scheduler", entry.name
    shown = {
        _setting_of(p, FEATURES).name for n, p in options.items() if n not in FEATURES_CLI_ONLY
    }
    assert shown == set(FEATURES), "a setting without a CLI option"
    keywords = inspect.signature(cxr.extract_features).parameters
    for name, parameter in keywords.items():
        if name not in FEATURES_API_ONLY:
            assert name in FEATURES, f"cxr.extract_features({name}=...): no setting defines it"
            assert parameter.default == FEATURES[name].default, name
    assert set(keywords) - FEATURES_API_ONLY == set(FEATURES), "a setting without a keyword"
    from cxr.extract.runner import extract_features

    for name, parameter in inspect.signature(extract_features).parameters.items():
        entry = FEATURES.get(RUNNER.get(name, name))
        if entry is not None and parameter.default is not inspect.Parameter.empty:
            assert parameter.default == entry.default, f"runner {name}"


def test_a_setting_of_two_commands_has_one_flag():
    for name in set(EVALUATE) & set(FEATURES):
        assert EVALUATE[name].flag == FEATURES[name].flag == flag(name), name
    assert flag("columns") == "--column" and flag("region_box") == "--region-box"


def test_stage_1_errors_name_the_setting_and_the_cli_its_flag(tmp_path):
    with pytest.raises(CxrError, match=r"^`region_box` 0\.99: the central box"):
        cxr.extract_features(tmp_path, region="centre-masked", region_box=0.99)
    done = CliRunner().invoke(
        app, ["features", str(tmp_path), "--region", "centre-masked", "--region-box", "0.99"]
    )
    assert done.exit_code == 2 and "--region-box 0.99: the central box" in done.output


def test_the_edges_name_no_setting_that_the_configuration_holds():
    """What makes a new setting one entry: cli.py and api.py never name a setting that reaches
    `EvaluateConfig` or `extract_features` as is (they pass all of them by name); the few they
    do name are read by the edge itself, for the reason given."""
    from cxr.extract.runner import extract_features

    edge_reads = {
        "backbones": "the API's positional arguments",
        "heads": "the API's positional arguments",
        "predictions": "the CLI refuses it without --json",
        "params": "the CLI merges --config's file into --set",
        "features": "the CLI's old --out and its folder check",
    }
    passed = {f.name for f in fields(EvaluateConfig)} | set(
        inspect.signature(extract_features).parameters
    )
    commands = {"cli.py": ("evaluate", "features"), "api.py": ("evaluate", "extract_features")}
    settings = (set(EVALUATE) | set(FEATURES)) & passed
    for edge, names in commands.items():
        tree = ast.parse((PACKAGE / edge).read_text())
        for command in (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names):
            named = {
                n.value
                for n in ast.walk(command)
                if isinstance(n, ast.Constant) and isinstance(n.value, str)
            } | {n.arg for n in ast.walk(command) if isinstance(n, ast.arg)}
            extra = (named & settings) - set(edge_reads)
            assert not extra, f"{edge} {command.name} names {sorted(extra)}"


def test_stage_1_errors_and_notes_name_the_setting_and_the_cli_its_flag(tmp_path):
    """The same for the layouts' errors and notes: the API names `columns` and `label_map`,
    the CLI prints --column and --label-map (its errors at the edge, its notes through
    `RichProgress`)."""
    save_png(tmp_path / "covid" / "a.png", 1)
    (tmp_path / "manifest.csv").write_text("file,diagnosis\ncovid/a.png,covid\n")
    missing = r"name yours with `columns` path=NAME, `columns` label=NAME$"
    with pytest.raises(CxrError, match=missing):
        cxr.extract_features(tmp_path)
    done = CliRunner().invoke(app, ["features", str(tmp_path)])
    assert done.exit_code == 2
    assert "name yours with --column path=NAME, --column label=NAME" in done.output
    (tmp_path / "manifest.csv").unlink()
    save_png(tmp_path / "normal" / "b.png", 2)
    found = discover(tmp_path, None, options=ReadOptions.of(label_map={"normal": ""}))
    assert "left out (`label_map`): normal 1 film(s)" in found.notes
    shown = io.StringIO()
    RichProgress(Console(file=shown, width=200), bars=False).note(found.notes[-1])
    assert shown.getvalue() == "left out (--label-map): normal 1 film(s)\n"
