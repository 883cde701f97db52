"""A first run that works here: `make evaluate` builds the stores it needs (then reports), and the
Makefile finds ../shared's weight files by itself."""

from __future__ import annotations

import subprocess

import pytest
from helpers import ROOT, WEIGHTS_DIR, make_class_folders

from cxr.store import load


def make_commands(target: str, *variables: str) -> list[str]:
    """The `cxr` commands `make TARGET` would run, in order (a dry run; backslash continuations
    joined)."""
    dry = subprocess.run(
        ["make", "-n", "--no-print-directory", target, *variables],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.replace("\\\n", " ")
    return [line for line in dry.splitlines() if "/cxr " in line]


def make_command(target: str, *variables: str) -> str:
    [command] = [line for line in make_commands(target, *variables) if f"/cxr {target}" in line]
    return command


def test_make_evaluate_builds_the_stores_before_it_evaluates():
    commands = make_commands("evaluate")
    assert [c.split("/cxr ")[1].split()[0] for c in commands] == ["features", "evaluate", "report"]
    assert "--features features" in commands[0] and "--features features" in commands[1]
    assert "--plots reports/plots" in commands[1]  # the report's figures


@pytest.mark.slow
@pytest.mark.skipif(not WEIGHTS_DIR.is_dir(), reason="../shared/weights absent")
def test_make_evaluate_alone_reports_and_a_second_run_embeds_nothing(tmp_path):
    data = make_class_folders(tmp_path / "data", per_class=10)
    features, report = tmp_path / "features", tmp_path / "reports"
    variables = [f"DATA={data}", f"OUT={features}", f"REPORTS={report}"]
    commands = make_commands("evaluate", *variables, "EVAL_ARGS=--head logreg --folds 3")
    outputs = []
    for _ in range(2):
        for command in commands:
            done = subprocess.run(command, shell=True, cwd=ROOT, capture_output=True, text=True)
            assert done.returncode == 0, done.stdout + done.stderr
            outputs.append(done.stdout)
    _, first_report, _, second_features, _, _ = outputs
    assert len(load(features, "mobilenet_v2")) == 20 and "Cross-validated heads" in first_report
    assert "No new images to embed: all 20 files are stored." in second_features
    assert (report / "evaluate.json").is_file() and (report / "report.html").is_file()
    assert "data:image/png;base64," in (report / "report.html").read_text()  # figures embedded


@pytest.mark.slow
@pytest.mark.skipif(not WEIGHTS_DIR.is_dir(), reason="../shared/weights absent")
def test_make_features_then_evaluate_work_offline_with_no_arguments(tmp_path):
    data = make_class_folders(tmp_path / "data", per_class=10)
    features, report = tmp_path / "features", tmp_path / "reports"
    command = make_command("features", f"DATA={data}", f"OUT={features}")
    assert "--weights mobilenet_v2=../shared/weights/" in command  # WEIGHTS_DIR, from the repo
    done = subprocess.run(command, shell=True, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(load(features, "mobilenet_v2")) == 20
    evaluate = make_command(
        "evaluate", f"OUT={features}", f"REPORTS={report}", "EVAL_ARGS=--head logreg --folds 3"
    )
    done = subprocess.run(evaluate, shell=True, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and "Cross-validated heads" in done.stdout, done.stderr
    assert (report / "evaluate.json").is_file()


def test_without_shared_weights_keras_downloads_as_usual():
    command = make_command("features", "SHARED_WEIGHTS=/nowhere")
    assert "--weights" not in command


def test_the_readmes_quick_start_opens_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    start = text.index("## Quick start")
    block = text[
        text.index("```bash\n", start) + 8 : text.index("```", text.index("```bash\n", start) + 8)
    ]
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["make features", "make evaluate"]
