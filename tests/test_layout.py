"""The layout shows the architecture, and stays true: every module documented, tests import the
package as `cxr.*` only, the wheel holds the package and nothing else, no import cycle in
stage 2."""

from __future__ import annotations

import ast
import contextlib
import re
import shutil
import subprocess
import sys
import zipfile

from helpers import ROOT

PACKAGE_DIRS = (
    "extract", "extract/layouts", "classify", "store", "audit", "reproduce", "reporting", "tracking"
)  # fmt: skip
# The package's top level, as the repository root shows it (installed: cxr.<name>).
TOP_LEVEL = {p.stem for p in ROOT.glob("*.py") if p.stem != "__init__"} | set(PACKAGE_DIRS)


def package_modules() -> list[str]:
    """Every module of the package, as a path relative to the root (``classify/evaluate.py``)."""
    found = [p.name for p in ROOT.glob("*.py")]
    for folder in PACKAGE_DIRS:
        found += [f"{folder}/{p.name}" for p in sorted((ROOT / folder).glob("*.py"))]
    return sorted(found)


def test_every_module_is_in_the_architecture_document():
    text = (ROOT / "docs" / "architecture.md").read_text()
    listed = set(re.findall(r"^\| `([\w/]+\.py)`", text, flags=re.M))
    modules = {m for m in package_modules() if not m.endswith("__init__.py")}
    assert modules - listed == set(), "modules missing from docs/architecture.md"
    assert listed - set(package_modules()) == set(), "docs/architecture.md names gone modules"


def _imports(tree: ast.AST) -> list[str]:
    """Modules imported anywhere in ``tree``, and in the Python code of its string constants
    (what tests run in subprocesses)."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            with contextlib.suppress(SyntaxError):  # prose, not code
                names += _imports(ast.parse(node.value)) if "import " in node.value else []
    return names


def test_tests_import_the_package_only_as_cxr():
    """``import cli`` from the repository root would load a second copy of the module, with its
    own globals: a monkeypatch of ``cxr.cli`` would then miss it."""
    wrong = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        names = _imports(ast.parse(path.read_text()))
        wrong += [f"{path.name}: {n}" for n in names if n.split(".")[0] in TOP_LEVEL]
    assert wrong == []


def test_the_wheel_holds_the_package_and_nothing_else(tmp_path):
    source = tmp_path / "source"  # a copy: building in the checkout leaves build/ there
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "features", "build"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
         "-q", "-w", str(tmp_path)],
        check=True, capture_output=True,
    )  # fmt: skip
    [wheel] = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist() if ".dist-info/" not in n]
        archive.extractall(tmp_path / "site")
    assert sorted(n.removeprefix("cxr/") for n in names) == package_modules()
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import cxr, cxr.errors\n"
        "assert cxr.__file__.startswith(sys.argv[1]), cxr.__file__\n"
        "for name in ('tests', 'benchmarks', 'features', 'docs'):\n"
        "    try:\n"
        "        __import__('cxr.' + name)\n"
        "    except ImportError:\n"
        "        continue\n"
        "    raise SystemExit('cxr.' + name + ' is importable')\n"
    )
    # -S: no site-packages, so the development checkout's own install cannot answer
    subprocess.run([sys.executable, "-S", "-c", probe, str(tmp_path / "site")], check=True)


def test_stage_2_has_no_import_cycle():
    """classify/ modules import each other one way only (a module-level import graph with no
    cycle, imports for type checking counted), so each can be read and changed on its own."""
    graph = {}
    for path in sorted((ROOT / "classify").glob("*.py")):
        tree = ast.parse(path.read_text())
        typing_only = [
            item
            for node in tree.body
            if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
            for item in node.body
        ]
        graph[path.stem] = {
            node.module.rsplit(".", 1)[1]
            for node in [*tree.body, *typing_only]  # lazy imports in functions are not cycles
            if isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("cxr.classify.")
        }
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == "done":
            return
        assert state.get(name) != "open", " -> ".join([*trail, name])
        state[name] = "open"
        for other in sorted(graph.get(name, ())):
            visit(other, [*trail, name])
        state[name] = "done"

    for name in graph:
        visit(name, [])
