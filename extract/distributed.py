"""Sharded extraction on a Dask cluster (``cxr features --scheduler ADDRESS|local:N``).

The client does what a local run does around the CNN: discovery, hashing, the store writers
(lock, resume, publish). Only the decoding and the forward passes move. The images still to
embed are cut into tasks of ``shard`` files; a worker decodes a task's files once, runs every
backbone that needs them, and commits one shard per backbone with the store's own shard writer
(written, fsynced, renamed: whole or absent). The client adopts each shard as its task finishes
and then publishes exactly the store a local run would: rows in listing order, gathered by
content hash.

Each worker process builds a backbone once and keeps it for all its tasks (``_EMBEDDERS``).

Faults: a task's shard names are fixed by the run and the task, so a task that runs twice (its
worker died after writing) rewrites the same files, and rows are gathered by content hash, so no
image can appear twice. Dask re-runs a lost worker's tasks elsewhere. If the client or the
scheduler goes, the committed shards stay in ``<backbone>.parts/`` and the next run, local or
distributed, resumes from them.

Workers must see the data and the features folder at the client's paths (a shared file system):
a worker that cannot read a file, or write a shard, fails its task with a line naming both.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cxr.errors import CxrError
from cxr.extract.dataset import Entry
from cxr.extract.job import Embedder, run_job
from cxr.extract.job import Target as JobTarget
from cxr.extract.reader import WHOLE
from cxr.extract.regions import Region
from cxr.extract.registry import get_spec
from cxr.extract.runner import Pending
from cxr.extract.runtimes import Runtime
from cxr.extract.settings import EXACT, SHARD_FILES
from cxr.extract.weights import ResolvedWeights
from cxr.files import own_folder
from cxr.progress import Progress
from cxr.store.schema import Reject, reject_table, write_shard

RETRIES = 2  # a task that raised is tried again (a lost worker's tasks are re-run by Dask itself)


@dataclass(frozen=True)
class Target:
    """One backbone a task serves, with what its shard must record."""

    backbone: str
    weights: ResolvedWeights
    attrs: dict  # the store's attributes (the shard keeps its fingerprint)
    parts: str  # the store's parts folder, as the client sees it


@dataclass(frozen=True)
class File:
    path: str  # as stored (relative to the data root)
    file: str  # absolute, as the client sees it
    label: str
    sha256: str
    backbones: tuple[str, ...]  # the targets that still need it


@dataclass(frozen=True)
class Task:
    name: str  # shard file name (the same in every target's parts folder)
    files: tuple[File, ...]
    targets: tuple[Target, ...]
    resize: str
    batch_size: int
    runtime: Runtime
    region: Region = WHOLE
    decode: str = EXACT


@dataclass(frozen=True)
class Done:
    """What a task sends back: where its shards are, never the vectors themselves."""

    name: str
    shards: dict[str, str]  # backbone -> shard path
    counts: dict[str, int]  # backbone -> files settled (embedded or rejected)
    max_abs_diff: dict[str, float]  # backbone -> the runtime's probe against TensorFlow
    rejected: list[Reject]


_EMBEDDERS: dict[tuple, Embedder] = {}  # per worker process: built once, kept for every task


def _embedder(target: Target, batch_size: int, runtime: Runtime) -> Embedder:
    key = (target.backbone, target.weights, batch_size, runtime)
    if key not in _EMBEDDERS:
        from cxr.extract.model import make_embedder

        _EMBEDDERS[key] = make_embedder(
            get_spec(target.backbone), target.weights, batch_size, runtime
        )
    return _EMBEDDERS[key]


def _where() -> str:
    try:
        from distributed import get_worker

        return f"worker {get_worker().address}"
    except (ImportError, ValueError):
        return f"host {socket.gethostname()}"


def embed_task(task: Task) -> Done:
    """Run on a worker: decode the task's files once, embed them for every target, commit."""
    for f in task.files:
        if not os.access(f.file, os.R_OK):
            raise CxrError(
                f"{_where()} cannot read {f.file}, which the client can: every worker must see "
                "the data at the client's path (a shared file system)"
            )
    for target in task.targets:
        if not os.access(target.parts, os.W_OK):
            raise CxrError(
                f"{_where()} cannot write to {target.parts}: every worker must see the "
                "features folder at the client's path (a shared file system)"
            )
    entries = [
        Entry(path=f.path, file=Path(f.file), label=f.label, sha256=f.sha256) for f in task.files
    ]
    needs = {f.sha256: f.backbones for f in task.files}
    sinks = {t.backbone: _Shard(Path(t.parts) / f"{task.name}.h5", t.attrs) for t in task.targets}
    targets = {}
    for t in task.targets:
        spec = get_spec(t.backbone)
        embed = _embedder(t, task.batch_size, task.runtime)
        sink = sinks[t.backbone]
        targets[t.backbone] = JobTarget(
            t.backbone, spec.input_size, spec.dim, embed, sink, task.batch_size
        )
    rejected: list[Reject] = []
    run_job(
        entries,
        needs,
        targets,
        task.resize,
        lambda e, reason: rejected.append(e.reject(reason)),
        task.region,
        task.decode,
    )
    for sink in sinks.values():
        sink.write()
    return Done(
        task.name,
        {name: str(sink.path) for name, sink in sinks.items()},
        {name: sink.files for name, sink in sinks.items()},
        {name: float(target.embedder.max_abs_diff) for name, target in targets.items()},
        rejected,
    )


@dataclass
class _Shard:
    """A task's rows of one backbone, written as one shard when the task is done (whole or
    absent: the store's own shard writer)."""

    path: Path
    attrs: dict
    ids: list[str] = field(default_factory=list)
    X: list[np.ndarray] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)

    @property
    def files(self) -> int:
        return len(self.ids) + len(self.rejects)

    def commit(self, ids: Sequence[str], X: np.ndarray, rejected: Sequence[Reject]) -> None:
        self.ids.extend(ids)
        self.X.append(X)
        self.rejects.extend(rejected)

    def write(self) -> None:
        dim = int(self.attrs["dim"])
        X = np.concatenate(self.X) if self.X else np.empty((0, dim), np.float32)
        try:
            write_shard(self.path, self.attrs, self.ids, X, reject_table(self.rejects))
        except OSError as exc:
            raise CxrError(
                f"{_where()} cannot write {self.path} ({exc.strerror or exc}); the shards "
                "already committed are kept: fix the folder and run `cxr features` again to resume"
            ) from None


def plan_tasks(
    jobs: Sequence[Pending],
    resize: str,
    runtime: Runtime,
    shard: int = SHARD_FILES,
    region: Region = WHOLE,
    decode: str = EXACT,
) -> list[Task]:
    """Cut the union of the jobs' pending files into tasks of ``shard`` files."""
    needs: dict[str, list[str]] = {}
    first: dict[str, Entry] = {}
    for job in jobs:
        for entry in job.todo:
            needs.setdefault(entry.sha256, []).append(job.spec.name)
            first.setdefault(entry.sha256, entry)
    files = [
        File(e.path, str(e.file.absolute()), e.label, sha, tuple(needs[sha]))
        for sha, e in first.items()
    ]
    run = f"{jobs[0].writer.run_id}-d"  # beside the client's own shard names, never on them
    batch = max(job.batch_size for job in jobs)
    tasks = []
    for index, start in enumerate(range(0, len(files), shard)):
        mine = tuple(files[start : start + shard])
        wanted = {b for f in mine for b in f.backbones}
        targets = tuple(
            Target(job.spec.name, job.weights, dict(job.writer.attrs), str(job.writer.parts))
            for job in jobs
            if job.spec.name in wanted
        )
        tasks.append(
            Task(f"{run}{index:07d}", mine, targets, resize, batch, runtime, region, decode)
        )
    return tasks


def compute_on_cluster(
    jobs: Sequence[Pending],
    resize: str,
    copies: dict[str, list[str]],
    report: Progress,
    runtime: Runtime,
    scheduler: str,
    shard: int = SHARD_FILES,
    region: Region = WHOLE,
    decode: str = EXACT,
) -> None:
    """The distributed counterpart of the runner's local loop: tasks out, shards adopted."""
    from distributed import KilledWorker, as_completed

    from cxr.cluster import connect

    busy = [job for job in jobs if job.todo]
    for job in busy:
        own_folder(job.writer.parts)
    tasks = plan_tasks(busy, resize, runtime, shard, region, decode)
    by_name = {job.spec.name: job for job in busy}
    paths = {f.path: f.sha256 for task in tasks for f in task.files}
    with connect(scheduler) as client:
        workers = len(client.scheduler_info().get("workers", {}))
        report.note(
            f"{len(tasks)} task(s) of up to {shard} files on {scheduler} ({workers} worker(s) now)"
            + ("" if workers else "; waiting for workers: start them with `dask worker ADDRESS`")
        )
        futures = [
            client.submit(embed_task, task, key=f"cxr-{task.name}", retries=RETRIES, pure=False)
            for task in tasks
        ]
        with report.parts({job.spec.name: len(job.todo) for job in busy}) as advance:
            try:
                for future in as_completed(futures):
                    done: Done = future.result()
                    for name, path in done.shards.items():
                        job = by_name[name]
                        job.new += job.writer.adopt(Path(path))
                        job.writer.record_probe(done.max_abs_diff[name])
                        advance(name, done.counts[name])
                    for reject in done.rejected:
                        for copy in copies[paths[reject.path]]:
                            report.warn(f"rejected {copy}: {reject.reason}")
            except KilledWorker as exc:
                client.cancel(futures)
                raise CxrError(
                    f"`scheduler` {scheduler}: a task's workers kept dying ({exc}; "
                    "out of memory? each worker holds its backbones and one shard of images); "
                    "the shards already committed are kept: run `cxr features` again to resume"
                ) from None
            except BaseException:
                client.cancel(futures)
                raise
