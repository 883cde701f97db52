"""SIGTERM and Ctrl-C (issue 38): `evaluate`, `features`, `train` and `audit`, run as real
processes and stopped while they work, end within seconds with their workers stopped, one line
on stderr, status 143 (SIGTERM) or 130 (SIGINT), and nothing torn: no temporary file left, no
half-written output, and what was committed is readable.

Before: SIGTERM to `cxr evaluate` left its worker processes fitting (holding its output pipe:
the caller waited for them) in 4 of 5 tries, and Ctrl-C ended in a joblib traceback in 2 of 5;
every command but `features` printed a KeyboardInterrupt traceback."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import save_png

psutil = pytest.importorskip("psutil")
pytestmark = pytest.mark.slow  # whole commands in subprocesses (about a minute in all)
CXR = str(Path(sys.executable).with_name("cxr"))
# TensorFlow's own start-up lines on a machine without a GPU (printed before any cxr code runs,
# since helpers.py sets TF_CPP_MIN_LOG_LEVEL=2 and cxr then leaves TensorFlow's logs alone): absl's
# "E0000 ..." format, or "2026-12-07 20:31:43.227793: E ..." (TensorFlow 2.20, the lock's).
TF_LOG = re.compile(
    r"^([IWEF]\d{4} |\d{4}-\d\d-\d\d [\d:.]+: [IWEF] |WARNING: All log messages before absl)"
)


def stop(args: list[str], busy: Callable[[psutil.Process], bool], signum: int, limit: float = 240):
    """Run ``cxr ARGS``, wait until ``busy(process)``, send ``signum``; the process must end
    within 20 s, and every process it started within 10 s more. Returns (status, stderr)."""
    proc = subprocess.Popen([CXR, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    me = psutil.Process(proc.pid)
    started = time.monotonic()
    try:
        while not busy(me):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() - started < limit, "never got busy"
            time.sleep(0.2)
        children = me.children(recursive=True)
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=20)  # the pipes close: no worker holds them
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    _, alive = psutil.wait_procs(children, timeout=10)
    for left in alive:
        left.kill()
    assert not alive, f"workers still running: {alive}"
    assert not _shared_memory_left(proc.pid), "joblib's memmapping folder left behind"
    return proc.returncode, stderr


def _shared_memory_left(pid: int, within: float = 10) -> list[Path]:
    """joblib's memmapping folders of process PID still there after WITHIN seconds (loky's
    resource tracker removes those the process could not)."""
    places = {Path("/dev/shm"), Path(tempfile.gettempdir())}
    deadline = time.monotonic() + within
    while True:
        left = [
            p for d in places if d.is_dir() for p in d.glob(f"joblib_memmapping_folder_{pid}_*")
        ]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def one_line(stderr: str, signum: int) -> str:
    lines = [line for line in stderr.strip().splitlines() if not TF_LOG.match(line)]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("stopped: interrupted"), lines[0]
    return lines[0]


def workers_busy(me: psutil.Process) -> bool:
    """joblib's worker processes started and fitting for a second."""
    workers = [p for p in me.children(recursive=True) if "loky" in " ".join(_cmdline(p))]
    return len(workers) >= 2 and sum(_cpu(p) for p in workers) > 0.5


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def _cpu_tree(me: psutil.Process) -> float:
    """CPU seconds of the command and its workers (the audit's probes run in workers: on a
    loaded machine the parent alone may never reach the mark before the work ends)."""
    return _cpu(me) + sum(_cpu(p) for p in me.children(recursive=True))


def _cpu(p: psutil.Process) -> float:
    try:
        return sum(p.cpu_times()[:2])
    except psutil.Error:
        return 0.0


def leftovers(*folders: Path) -> list[Path]:
    """Temporary files (and their folders) a write in progress would leave."""
    return [p for f in folders if f.exists() for p in f.rglob("*") if ".tmp" in p.name]


@pytest.fixture
def big_store(make_synthetic_store):
    """Enough rows that every fit takes a while."""
    return make_synthetic_store({"a": 700, "b": 700, "c": 700}, dim=96, separation=0.5)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_evaluate_stops_with_its_workers(big_store, tmp_path, signum):
    out = tmp_path / "out" / "evaluate.json"
    args = ["evaluate", "--features", str(big_store.parent), "--head", "mlp", "--head", "svm"]
    args += ["--folds", "5", "--jobs", "2", "--quiet", "--json", str(out)]
    status, stderr = stop(args, workers_busy, signum)
    assert status == 128 + signum
    assert f"({signal.Signals(signum).name})" in one_line(stderr, signum)
    assert not out.exists()  # written once the evaluation is done, whole
    assert not leftovers(big_store.parent, out.parent)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_train_stops_and_leaves_no_model_and_no_lock_held(make_synthetic_store, tmp_path, signum):
    """Before, Ctrl-C was caught by scikit-learn's MLP, which ended its training early: the
    half-fitted model was saved, exit 0."""
    store = make_synthetic_store({"a": 300, "b": 300, "c": 300}, dim=256)
    model = tmp_path / "models" / "m.skops"
    args = ["train", "--features", str(store.parent), "--head", "mlp", "--out", str(model)]
    args += ["--set", "mlp.hidden_layer_sizes=2048,2048"]  # minutes of fitting
    status, stderr = stop(args, lambda me: _cpu(me) > 3.0, signum)
    assert status == 128 + signum
    one_line(stderr, signum)
    assert not model.exists() and not leftovers(model.parent)
    from cxr.files import acquire_lock

    os.close(acquire_lock(model.with_name(".m.skops.lock")))  # released with the process


def test_evaluate_in_one_process_never_scores_a_half_fitted_head(make_synthetic_store, tmp_path):
    """With --jobs 1 the MLP fits in the main process: Ctrl-C ended its training early and the
    evaluation went on to score the half-fitted head."""
    store = make_synthetic_store({"a": 300, "b": 300, "c": 300}, dim=256)
    out = tmp_path / "evaluate.json"
    args = ["evaluate", "--features", str(store.parent), "--head", "mlp", "--folds", "3"]
    args += ["--jobs", "1", "--quiet", "--json", str(out), "--no-cache"]
    args += ["--set", "mlp.hidden_layer_sizes=2048,2048"]
    status, stderr = stop(args, lambda me: _cpu(me) > 4.0, signal.SIGINT)
    assert status == 130
    one_line(stderr, signal.SIGINT)
    assert not out.exists()


def test_audit_stops_with_its_workers(make_synthetic_store, tmp_path):
    store = make_synthetic_store({"a": 250, "b": 250, "c": 250}, dim=256)
    from cxr.store import load

    data = tmp_path / "data"
    for i, path in enumerate(load(store).rows["path"]):
        save_png(data / path, i, (40, 40))
    args = ["audit", "--features", str(store.parent), "--data", str(data)]
    args += ["--probe", "source", "--probe", "label", "--json", str(tmp_path / "a.json")]
    status, stderr = stop(args, lambda me: _cpu_tree(me) > 3.0, signal.SIGTERM)
    assert status == 143
    one_line(stderr, signal.SIGTERM)
    assert not leftovers(store.parent, tmp_path)


def test_features_stops_keeping_whole_batches(tmp_path):
    from cxr.store.schema import parts_dir, read_shard

    data = tmp_path / "data"
    for i in range(120):
        save_png(data / ("covid" if i % 2 else "normal") / f"{i:03d}.png", i, (64, 64))
    features = tmp_path / "features"
    parts = parts_dir(features, "mobilenet_025")
    args = ["features", str(data), "-b", "mobilenet_025", "--weights", "random"]
    args += ["--features", str(features), "--batch-size", "8"]
    status, stderr = stop(args, lambda me: len(list(parts.glob("*.h5"))) >= 2, signal.SIGTERM)
    assert status == 143
    line = one_line(stderr, signal.SIGTERM)
    assert "batch(es) of mobilenet_025 kept" in line and "run the same command" in line
    shards = sorted(parts.glob("*.h5"))
    assert shards and all(len(read_shard(s)[1]) == 8 for s in shards)
    assert not leftovers(features)
