"""Run tracking (issue 25): `cxr evaluate --track` logs to MLflow, `cxr runs` lists and compares.
Against the local SQLite backend, a real `mlflow server` on loopback, and a server that is down."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cxr.cli import app

pytest.importorskip("mlflow")
runner = CliRunner()
FAST = ["--head", "mlp", "--folds", "3", "--bootstrap", "50", "--jobs", "1", "--quiet"]


def evaluate(features: Path, *args: str):
    return runner.invoke(app, ["evaluate", "--features", str(features), *FAST, *args])


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def test_two_runs_logged_locally_and_compared(make_synthetic_store, tmp_path):
    features = make_synthetic_store().parent
    for alpha in ("1e-3", "1e-2"):
        out = tmp_path / f"alpha-{alpha}.json"
        result = evaluate(features, "--set", f"mlp.alpha={alpha}", "--track", "--json", str(out))
        assert result.exit_code == 0, result.output
        assert "Tracked as run" in result.output and out.is_file()
    database = tmp_path / "mlruns.db"  # beside the features folder, by default
    assert database.is_file()
    uri = f"sqlite:///{database}"
    [experiment] = [e for e in client(uri).search_experiments() if e.name == "cxr"]
    runs = client(uri).search_runs([experiment.experiment_id])
    assert len(runs) == 2
    latest = max(runs, key=lambda r: r.info.start_time)
    assert latest.data.params["mlp.alpha"] == "0.01"
    assert latest.data.tags["cxr.settings"] == "mlp alpha=0.01"
    metrics = latest.data.metrics
    value = metrics["mobilenet_v2.mlp.balanced_accuracy"]
    low, high = (metrics[f"mobilenet_v2.mlp.balanced_accuracy_ci_{b}"] for b in ("low", "high"))
    assert low <= value <= high
    logged = json.loads((tmp_path / "alpha-1e-2.json").read_text())
    assert value == logged["results"][0]["metrics"]["balanced_accuracy"]["pooled"]
    names = {a.path for a in client(uri).list_artifacts(latest.info.run_id)}
    assert {"evaluate.json", "predictions.json", "report.html"} <= names
    page = client(uri).download_artifacts(latest.info.run_id, "report.html", str(tmp_path))
    assert "<h2>Summary</h2>" in Path(page).read_text()  # the run's own HTML report
    assert (tmp_path / "mlartifacts").is_dir()  # not ./mlruns wherever the user stood

    listed = runner.invoke(app, ["runs", "--features", str(features), "--json", "-"])
    assert listed.exit_code == 0, listed.output
    assert [r["settings"] for r in json.loads(listed.stdout)] == [
        "mlp alpha=0.01",
        "mlp alpha=0.001",
    ]
    compared = runner.invoke(app, ["runs", "--features", str(features), "--compare"])
    assert compared.exit_code == 0, compared.output
    assert "mlp.alpha" in compared.output and "0.001" in compared.output
    assert "mobilenet_v2 + mlp: balanced_accuracy" in compared.output
    assert "paired bootstrap on" in compared.output
    ids = [r.info.run_id[:8] for r in sorted(runs, key=lambda r: r.info.start_time)]
    by_id = runner.invoke(app, ["runs", "--features", str(features), *ids, "--json", "-"])
    document = json.loads(by_id.stdout)
    assert document["differ"] == {"mlp.alpha": ["0.001", "0.01"]}
    [paired] = document["paired"]
    assert paired["n_paired"] == logged["results"][0]["n"] and not paired["why_not"]


def test_runs_on_other_images_are_not_paired(make_synthetic_store, tmp_path):
    features = make_synthetic_store().parent
    assert evaluate(features, "--track").exit_code == 0
    assert evaluate(features, "--track", "--binary", "covid").exit_code == 0
    compared = runner.invoke(app, ["runs", "--features", str(features), "--compare"])
    assert compared.exit_code == 0, compared.output
    assert "Not paired: the runs used different images or splits" in compared.output


def test_a_server_that_is_down_is_one_warning_and_the_files_are_written(
    make_synthetic_store, tmp_path
):
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "evaluate.json"
    plots = tmp_path / "plots"
    features = make_synthetic_store().parent
    uri = f"http://127.0.0.1:{port}"
    result = evaluate(features, "--tracking-uri", uri, "--json", str(out), "--plots", str(plots))
    assert result.exit_code == 0, result.output
    assert out.is_file() and any(plots.glob("*.png"))
    warned = [line for line in result.stderr.splitlines() if "warning: tracking" in line]
    assert len(warned) == 1 and uri in warned[0] and "Traceback" not in result.output


def test_the_config_file_turns_tracking_on_and_its_typos_are_one_line(
    make_synthetic_store, tmp_path
):
    features = make_synthetic_store().parent
    database = tmp_path / "elsewhere" / "runs.db"
    config = tmp_path / "cxr.toml"
    config.write_text(
        f'[mlp]\nalpha = 0.001\n\n[tracking]\nenabled = true\nuri = "sqlite:///{database}"\n'
    )
    result = evaluate(features, "--config", str(config))
    assert result.exit_code == 0, result.output
    assert database.is_file() and "alpha=0.001" in result.output
    config.write_text("[tracking]\nenable = true\n")
    result = evaluate(features, "--config", str(config))
    assert result.exit_code == 2
    assert f"{config}: [tracking] has no setting 'enable'" in result.stderr


def test_tracking_without_mlflow_stops_before_any_work(make_synthetic_store, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed: find_spec gives None
    out = tmp_path / "evaluate.json"
    result = evaluate(make_synthetic_store().parent, "--track", "--json", str(out))
    assert result.exit_code == 2
    assert "tracking needs MLflow: pip install 'cxr-transfer[tracking]'" in result.stderr
    assert not out.exists()  # stopped before the evaluation, not warned after it


def test_a_run_that_breaks_halfway_is_failed_with_one_warning(
    make_synthetic_store, tmp_path, monkeypatch
):
    from cxr.tracking import log

    def broken(*args):
        raise RuntimeError("the artifact store refused")

    monkeypatch.setattr(log, "report_page", broken)  # after the params, metrics and JSON
    result = evaluate(make_synthetic_store().parent, "--track")
    assert result.exit_code == 0, result.output
    warned = [line for line in result.stderr.splitlines() if "warning: tracking" in line]
    assert len(warned) == 1 and "the artifact store refused" in warned[0]
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    [experiment] = [e for e in client(uri).search_experiments() if e.name == "cxr"]
    [run] = client(uri).search_runs([experiment.experiment_id])
    assert run.info.status == "FAILED"


NO_MLFLOW = textwrap.dedent(
    """
    import atexit, sys
    atexit.register(lambda: print("MLFLOW" if "mlflow" in sys.modules else "NO-MLFLOW"))
    sys.argv = ["cxr", *sys.argv[1:]]
    from cxr.cli import app
    app()
    """
)


@pytest.mark.parametrize("command", ["help", "evaluate"])
def test_mlflow_is_imported_only_when_tracking(make_synthetic_store, command):
    args = ["--help"] if command == "help" else ["evaluate", "--features"]
    if command == "evaluate":
        args += [str(make_synthetic_store().parent), *FAST]
    proc = subprocess.run(
        [sys.executable, "-c", NO_MLFLOW, *args], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "NO-MLFLOW"


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on a free loopback port, stopped in teardown."""
    executable = shutil.which("mlflow", path=str(Path(sys.executable).parent))
    if executable is None:
        pytest.skip("the mlflow command is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = tmp_path / "server"
    store.mkdir()
    proc = subprocess.Popen(
        [executable, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
         "--artifacts-destination", str(store / "artifacts")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # bounded; a loaded machine starts it in minutes
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {proc.returncode}")
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not answer /health")
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_a_run_logged_to_a_loopback_server(make_synthetic_store, tmp_path, mlflow_server):
    features = make_synthetic_store().parent
    for alpha in ("1e-3", "1e-2"):
        result = evaluate(features, "--set", f"mlp.alpha={alpha}", "--tracking-uri", mlflow_server)
        assert result.exit_code == 0, result.output
        assert f"in {mlflow_server}" in result.output
    compared = runner.invoke(app, ["runs", "--tracking-uri", mlflow_server, "--compare"])
    assert compared.exit_code == 0, compared.output
    assert "mlp.alpha" in compared.output and "paired bootstrap on" in compared.output


# ---- issue 40: a tracked run holds what it made, nothing else ----------------------------------


def _seeded(folder: Path, make_synthetic_store) -> None:
    """A --plots folder as users have them: a study key, a private file in a sub-folder, a
    store, and an older run's figure."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".id-key").write_text("ab" * 32 + "\n")
    (folder / ".id-key").chmod(0o600)
    (folder / "private").mkdir(exist_ok=True)
    (folder / "private" / "notes.txt").write_text("not for the group server\n")
    make_synthetic_store(seed=5, directory=folder / "old-features")
    (folder / "mobilenet_v2-knn-bacterial-covid-normal-confusion.png").write_bytes(
        b"\x89PNG\r\n\x1a\n an older run's figure"
    )


def _artifacts(uri: str, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client(uri).list_artifacts(run_id, path):
        found |= _artifacts(uri, run_id, item.path) if item.is_dir else {item.path}
    return found


def _made(document: Path) -> set[str]:
    """The JSON, the predictions, the report, and the figures the run says it drew."""
    doc = json.loads(document.read_text())
    drawn = [*doc["plots"], *(p for r in doc["results"] for p in r["plots"])]
    return {"evaluate.json", "predictions.json", "report.html"} | {
        f"plots/{Path(p).name}" for p in drawn
    }


def test_a_run_tracked_elsewhere_holds_only_what_it_made(make_synthetic_store, tmp_path):
    """Before: the artifacts held the folder's .id-key, a private file, the store's .h5 and
    every film under it, and an older run's confusion matrix."""
    features = make_synthetic_store().parent
    plots = tmp_path / "reports"
    _seeded(plots, make_synthetic_store)
    uri = f"sqlite:///{tmp_path / 'team' / 'runs.db'}"
    out = plots / "evaluate.json"
    result = evaluate(features, "--tracking-uri", uri, "--json", str(out), "--plots", str(plots))
    assert result.exit_code == 0, result.output
    [run] = client(uri).search_runs([client(uri).get_experiment_by_name("cxr").experiment_id])
    logged = _artifacts(uri, run.info.run_id)
    assert logged == _made(out) and len(logged) > 5
    figure = sorted(p for p in logged if p.startswith("plots/"))[0]
    copy = client(uri).download_artifacts(run.info.run_id, figure, str(tmp_path / "down"))
    assert Path(copy).read_bytes() == (plots / Path(figure).name).read_bytes()


def test_the_default_store_in_the_working_folder_logs_on_the_first_try(
    make_synthetic_store, tmp_path, monkeypatch
):
    """`--plots .` with the default store beside the features folder: the artifacts folder
    copied itself into itself until the path was too long, and the run was not logged."""
    work = tmp_path / "study"
    make_synthetic_store(directory=work / "features")
    _seeded(work, make_synthetic_store)
    monkeypatch.chdir(work)
    args = ["--json", "evaluate.json", "--plots", ".", "--track"]
    result = evaluate(Path("features"), *args)
    assert result.exit_code == 0, result.output
    assert "Tracked as run" in result.output and "warning" not in result.stderr
    uri = f"sqlite:///{work / 'mlruns.db'}"
    [run] = client(uri).search_runs([client(uri).get_experiment_by_name("cxr").experiment_id])
    assert _artifacts(uri, run.info.run_id) == _made(work / "evaluate.json")


@pytest.mark.parametrize("kind", ["database-is-a-folder", "a-file-in-the-way", "read-only-folder"])
def test_a_store_that_cannot_be_written_is_one_warning_within_5_s(
    make_synthetic_store, tmp_path, kind
):
    """Before: MLflow retried the SQLite file for 117 s on a read-only folder."""
    features = make_synthetic_store().parent
    folder = tmp_path / "runs"
    if kind == "database-is-a-folder":  # what SQLite cannot open, even for root
        (folder / "runs.db").mkdir(parents=True)
    elif kind == "a-file-in-the-way":
        folder.write_text("a file, not a folder")
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into a read-only folder")
        folder.mkdir()
        folder.chmod(0o555)
    out = tmp_path / "evaluate.json"
    started = time.monotonic()
    result = evaluate(features, "--tracking-uri", f"sqlite:///{folder}/runs.db", "--json", str(out))
    assert time.monotonic() - started < 5 + _evaluation_seconds(features, tmp_path)
    assert result.exit_code == 0, result.output
    [warned] = [line for line in result.stderr.splitlines() if "warning" in line]
    assert "tracking: run not logged" in warned and str(folder) in warned
    assert out.is_file()


def _evaluation_seconds(features: Path, tmp_path: Path) -> float:
    """The same evaluation untracked: what the 5 s are added to."""
    started = time.monotonic()
    assert evaluate(features, "--json", str(tmp_path / "plain.json")).exit_code == 0
    return time.monotonic() - started
