"""Storage faults and damaged stores end cleanly: one line, exit 1 (or 2), nothing lost."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import make_class_folders, weight_flags
from typer.testing import CliRunner

from cxr.cli import app
from cxr.store import load
from cxr.store.schema import parts_dir, store_path

BACKBONE = "mobilenet_025"
CODE = "import sys\nfrom cxr.cli import app\nsys.argv = ['cxr', *sys.argv[1:]]\napp()"
runner = CliRunner()


def features(data: Path, out: Path, *extra: str, file_limit: int | None = None):
    """A real `cxr features` process; ``file_limit`` caps the size of every file it writes
    (RLIMIT_FSIZE, with SIGXFSZ ignored), as a full disk would stop it."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    args = ["features", str(data), "-b", BACKBONE, "--features", str(out), "--batch-size", "4"]
    return subprocess.run(
        [sys.executable, "-c", CODE, *args, *weight_flags(), *extra],
        capture_output=True,
        text=True,
        preexec_fn=limit if file_limit else None,
    )


def last_error(stderr: str) -> str:
    [line] = [line for line in stderr.splitlines() if line.startswith("error:")]
    return line


@pytest.mark.slow  # `cxr features` processes
def test_a_full_disk_at_publish_loses_nothing_and_the_next_run_resumes(tmp_path):
    data, out = make_class_folders(tmp_path / "data", per_class=6), tmp_path / "features"
    failed = features(data, out, file_limit=20_000)  # shards fit, the store does not
    assert failed.returncode == 1, failed.stderr
    assert "Traceback" not in failed.stderr + failed.stdout
    error = last_error(failed.stderr)
    assert str(out) in error and "12 image(s)" in error and "again to resume" in error
    assert not store_path(out, BACKBONE).exists() and len(list(parts_dir(out, BACKBONE).iterdir()))
    again = features(data, out)
    assert again.returncode == 0 and "resuming after 3 committed batch(es)" in again.stdout
    assert len(load(out, BACKBONE)) == 12


@pytest.mark.slow  # `cxr features` processes
def test_a_full_disk_mid_run_keeps_the_published_store(tmp_path):
    data, out = make_class_folders(tmp_path / "data", per_class=2), tmp_path / "features"
    assert features(data, out).returncode == 0
    before = store_path(out, BACKBONE).read_bytes()
    make_class_folders(data, per_class=6, start=100)  # new images to embed
    failed = features(data, out, file_limit=1_000)  # not even a shard fits
    assert failed.returncode == 1 and "cannot write the next batch" in last_error(failed.stderr)
    assert "0 image(s)" in last_error(failed.stderr)
    assert store_path(out, BACKBONE).read_bytes() == before  # the published store is intact


def test_an_unusable_features_folder_is_one_line(tmp_path):
    data = make_class_folders(tmp_path / "data", per_class=2)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = runner.invoke(
        app,
        ["features", str(data), "-b", BACKBONE, "--features", str(blocker / "f"), *weight_flags()],
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert str(blocker / "f") in result.stderr and "again to resume" in result.stderr


@pytest.mark.slow  # `cxr features` processes
def test_a_damaged_store_says_how_to_recover_and_rebuild_touches_nothing_else(tmp_path):
    data, out = make_class_folders(tmp_path / "data", per_class=3), tmp_path / "features"
    other = out / "other.h5"
    out.mkdir()
    other.write_bytes(b"another store, left alone")
    path = store_path(out, BACKBONE)
    for damage in (b"not hdf5 at all", None):
        assert features(data, out).returncode == 0
        if damage is None:  # a real store, cut in half
            whole = path.read_bytes()
            path.write_bytes(whole[: len(whole) // 2])
        else:
            path.write_bytes(damage)
        broken = features(data, out)
        assert broken.returncode == 2 and "--rebuild" in last_error(broken.stderr), broken.stderr
        evaluate = runner.invoke(app, ["evaluate", "--features", str(out), "-b", BACKBONE])
        assert evaluate.exit_code == 2 and "--rebuild" in evaluate.stderr
        rebuilt = features(data, out, "--rebuild")
        assert rebuilt.returncode == 0 and "aside" in rebuilt.stdout, rebuilt.stderr
        assert len(load(out, BACKBONE)) == 6
        [aside] = [p for p in out.iterdir() if ".damaged-" in p.name]
        aside.unlink()
    assert other.read_bytes() == b"another store, left alone"


@pytest.mark.slow  # `cxr features` processes
def test_a_newer_schema_is_refused_with_the_way_out(tmp_path):
    data, out = make_class_folders(tmp_path / "data", per_class=2), tmp_path / "features"
    assert features(data, out).returncode == 0
    with h5py.File(store_path(out, BACKBONE), "a") as f:
        f.attrs["schema_version"] = np.int64(99)
    result = runner.invoke(app, ["info", "--features", str(out)])
    assert result.exit_code == 2 and "upgrade cxr" in result.output and "--rebuild" in result.output


@pytest.mark.slow  # `cxr features` processes
def test_info_lists_healthy_stores_beside_a_damaged_one(tmp_path):
    data, out = make_class_folders(tmp_path / "data", per_class=2), tmp_path / "features"
    assert features(data, out).returncode == 0
    (out / "broken.h5").write_bytes(b"junk")
    result = runner.invoke(app, ["info", "--features", str(out)])
    assert result.exit_code == 2 and BACKBONE in result.stdout
    assert "broken.h5" in result.stdout and "-b broken --rebuild" in result.stdout


@pytest.mark.slow  # `cxr features` processes
def test_rebuild_keeps_a_damaged_shard_beside_the_store(tmp_path):
    data, out = make_class_folders(tmp_path / "data", per_class=2), tmp_path / "features"
    parts = parts_dir(out, BACKBONE)
    parts.mkdir(parents=True)
    (parts / "0001.h5").write_bytes(b"half a shard")
    stopped = features(data, out)
    assert stopped.returncode == 2 and "--rebuild" in last_error(stopped.stderr)
    assert "no store published yet" in runner.invoke(app, ["info", "--features", str(out)]).stdout
    assert features(data, out, "--rebuild").returncode == 0
    [aside] = out.glob(f"{BACKBONE}.shard-0001.h5.damaged-*")
    assert aside.read_bytes() == b"half a shard" and len(load(out, BACKBONE)) == 4


def test_features_folder_that_is_a_file_is_a_user_error(tmp_path):
    data = make_class_folders(tmp_path / "data", per_class=2)
    blocker = tmp_path / "features.h5"
    blocker.write_text("")
    result = runner.invoke(
        app, ["features", str(data), "-b", BACKBONE, "--features", str(blocker), *weight_flags()]
    )
    assert result.exit_code == 2 and "is a file" in result.stderr
