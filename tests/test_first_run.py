"""A first run that works here: the Makefile finds ../shared's weight files by itself."""

from __future__ import annotations

import subprocess

import pytest
from helpers import ROOT, WEIGHTS_DIR, make_class_folders

from cxr.store import load


def make_command(target: str, *variables: str) -> str:
    """The command `make TARGET` would run (dry run), backslash continuations joined."""
    dry = subprocess.run(
        ["make", "-n", "--no-print-directory", target, *variables],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.replace("\\\n", " ")
    [command] = [line for line in dry.splitlines() if f"/cxr {target}" in line]
    return command


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
