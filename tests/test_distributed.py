"""--scheduler: extraction sharded over Dask workers, and evaluate/audit through joblib's Dask
backend, against local runs. One LocalCluster of two worker processes (behind nannies, on
loopback) serves the module, reached by its address as a remote cluster would be."""

from __future__ import annotations

import json
import os
import shutil
import signal
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from helpers import make_class_folders, small_weights

from cxr.cluster import local_workers, worker_env
from cxr.errors import CxrError
from cxr.extract.distributed import File, Target, Task, embed_task
from cxr.extract.runner import extract_features
from cxr.extract.runtimes import Runtime
from cxr.extract.weights import ResolvedWeights
from cxr.progress import Silent
from cxr.store import load
from cxr.store.schema import parts_dir

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        host="127.0.0.1",
        env=worker_env(2),
    ) as local:
        yield local


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_class_folders(tmp_path_factory.mktemp("dist") / "data", per_class=12)


def run(data: Path, out: Path, **options):
    return extract_features(
        data=data,
        manifest=None,
        backbones=["mobilenet_025"],
        weights=small_weights(),
        features_dir=out,
        batch_size=8,
        **options,
    )


@pytest.fixture(scope="module")
def local_store(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    run(data, out)
    return load(out, "mobilenet_025")


def same_store(a, b) -> None:
    assert list(a.ids) == list(b.ids)
    assert list(a.rows["path"]) == list(b.rows["path"])
    np.testing.assert_allclose(a.X, b.X, atol=1e-5)


def test_distributed_store_is_the_local_store(cluster, data, local_store, tmp_path):
    (summary,) = run(data, tmp_path, scheduler=cluster.scheduler_address, shard=5)
    assert (summary.new, summary.cached, summary.stored) == (24, 0, 24)
    same_store(load(tmp_path, "mobilenet_025"), local_store)
    assert not parts_dir(tmp_path, "mobilenet_025").exists()  # shards folded into the store


def test_incremental_runs_mix_local_and_distributed(cluster, data, local_store, tmp_path):
    growing = tmp_path / "data"  # one data set, half of it first: a store belongs to its data
    files = sorted(data.rglob("*.png"))
    for file in files[::2]:
        (growing / file.relative_to(data)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, growing / file.relative_to(data))
    run(growing, tmp_path / "f")  # local: the first 12
    for file in files[1::2]:
        shutil.copyfile(file, growing / file.relative_to(data))
    (summary,) = run(growing, tmp_path / "f", scheduler=cluster.scheduler_address, shard=4)
    assert (summary.new, summary.cached) == (12, 12)
    (again,) = run(growing, tmp_path / "f")  # local again: nothing left
    assert (again.new, again.cached) == (0, 24)
    same_store(load(tmp_path / "f", "mobilenet_025"), local_store)


class OnShard(Silent):
    """Progress that calls ``adopted`` each time the client adopts a worker's shard."""

    @contextmanager
    def parts(self, totals):
        yield lambda backbone, images: self.adopted()

    def adopted(self) -> None:
        raise NotImplementedError


class KillOnFirstShard(OnShard):
    """Kills one worker process (SIGKILL, as the OOM killer would) once a shard is adopted."""

    def __init__(self, client):
        self.pids = client.run(os.getpid)  # address -> pid
        self.killed: list[int] = []

    def adopted(self) -> None:
        if not self.killed:
            pid = next(iter(self.pids.values()))
            os.kill(pid, signal.SIGKILL)
            self.killed.append(pid)


def test_a_killed_worker_loses_nothing_and_duplicates_nothing(cluster, data, local_store, tmp_path):
    with distributed.Client(cluster.scheduler_address) as client:
        reporter = KillOnFirstShard(client)
        (summary,) = run(
            data, tmp_path, scheduler=cluster.scheduler_address, shard=3, progress=reporter
        )
        assert reporter.killed
        client.wait_for_workers(2, timeout=60)  # the nanny restarts it for the next tests
    store = load(tmp_path, "mobilenet_025")
    assert len(set(store.ids)) == len(store.ids) == summary.stored == 24
    same_store(store, local_store)


class StopAfterShards(OnShard):
    """The client goes away (Ctrl-C, a lost scheduler) after ``n`` adopted shards."""

    def __init__(self, n: int):
        self.left = n

    def adopted(self) -> None:
        self.left -= 1
        if self.left == 0:
            raise KeyboardInterrupt


def test_committed_shards_outlive_the_client_and_a_local_run_resumes(
    cluster, data, local_store, tmp_path
):
    with pytest.raises(KeyboardInterrupt):
        run(
            data,
            tmp_path,
            scheduler=cluster.scheduler_address,
            shard=4,
            progress=StopAfterShards(2),
        )
    parts = list(parts_dir(tmp_path, "mobilenet_025").glob("*.h5"))
    assert len(parts) >= 2
    notes = []

    class Notes(Silent):
        def note(self, text: str) -> None:
            notes.append(text)

    (summary,) = run(data, tmp_path, progress=Notes())
    assert any("resuming after" in n for n in notes)
    assert summary.new < 24  # the adopted shards were not embedded again
    same_store(load(tmp_path, "mobilenet_025"), local_store)


def test_a_worker_that_cannot_see_a_file_says_so(tmp_path):
    weights = ResolvedWeights("random", None, "", 0)
    task = Task(
        "t",
        (File("covid/a.png", str(tmp_path / "gone.png"), "covid", "0" * 64, ("mobilenet_025",)),),
        (Target("mobilenet_025", weights, {"dim": 256}, str(tmp_path)),),
        "squash",
        8,
        Runtime("tensorflow", "f32"),
    )
    with pytest.raises(CxrError, match=r"cannot read .*gone\.png.*shared file system"):
        embed_task(task)


def test_scheduler_option_is_checked_before_any_work(data, tmp_path):
    with pytest.raises(CxrError, match="local:N"):
        run(data, tmp_path, scheduler="local:zero")
    assert local_workers("tcp://10.0.0.1:8786") is None and local_workers("local:3") == 3
    assert worker_env(2, cores=8)["TF_NUM_INTRAOP_THREADS"] == "4"


def test_unreachable_scheduler_is_one_line(data, tmp_path):
    with pytest.raises(CxrError, match="cannot reach a Dask scheduler"):
        run(data, tmp_path, scheduler="tcp://127.0.0.1:9")


def test_distributed_evaluate_equals_local(cluster, make_synthetic_store):
    from helpers import evaluate

    store = make_synthetic_store({"covid": 12, "normal": 12}, separation=1.0)
    reports = [
        evaluate(store.parent, heads=["logreg", "knn"], folds=4, jobs=jobs, scheduler=scheduler)
        for jobs, scheduler in ((1, None), (2, cluster.scheduler_address))
    ]
    assert json.dumps(reports[0]) == json.dumps(reports[1])


def test_distributed_audit_equals_local(cluster, data, tmp_path):
    """Hashes computed on the workers (a fresh hash cache each) and probes: the same report."""
    from cxr.audit.run import audit

    reports = []
    for scheduler in (None, cluster.scheduler_address):
        out = tmp_path / str(len(reports))
        run(data, out)
        report = audit(out, probes=["label"], scheduler=scheduler)
        assert report["timing"].pop("hashes_computed") == 24
        reports.append({k: v for k, v in report.items() if k not in ("timing", "store")})
    assert json.dumps(reports[0], default=str) == json.dumps(reports[1], default=str)


def test_scheduler_errors_are_plain_text_and_checked_with_nothing_to_do(data, tmp_path):
    """`local:x` once printed as `local❌` (Rich read `:x:` as an emoji code); a mistyped
    address must fail even when every image is stored already."""
    from typer.testing import CliRunner

    from cxr.cli import app

    run(data, tmp_path)
    runner = CliRunner()
    for scheduler, words in (("local:x", "local:x: write local:N"), ("garbage", "garbage: give")):
        result = runner.invoke(
            app,
            [
                "features",
                str(data),
                "-b",
                "mobilenet_025",
                "--features",
                str(tmp_path),
                *[f for w in small_weights() for f in ("--weights", w)],
                "--scheduler",
                scheduler,
            ],
        )
        assert result.exit_code == 2 and words in result.output, result.output


def test_a_worker_importing_the_script_again_gets_the_guard_advice(monkeypatch):
    """A script without `if __name__ == "__main__":` runs cxr again in each spawned worker."""
    import multiprocessing

    from cxr.cluster import connect

    monkeypatch.setattr(multiprocessing.current_process(), "_inheriting", True, raising=False)
    with pytest.raises(CxrError, match="__main__"), connect("local:1"):
        pass
