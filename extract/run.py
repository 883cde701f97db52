"""Stage 1 end to end: discover -> skip what is cached -> decode once -> every backbone -> store.

Decoding runs in a small thread pool ahead of the forward passes (PIL and hashing release the
GIL), so file I/O and decode overlap with TensorFlow. Each image is decoded once and resized for
every backbone that still needs it; each backbone commits its own batches to its own store.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table as RichTable
from rich.text import Text

from extract.dataset import Entry, discover
from extract.images import RESIZE_POLICIES, Rejected, decode, resize
from extract.registry import BackboneSpec, get_spec
from extract.weights import ResolvedWeights, parse_weights, resolve
from extract.writer import StoreWriter
from store.errors import CxrError

DECODE_WORKERS = 2
PREFETCH = 4  # batches decoded ahead of the forward pass


@dataclass
class Summary:
    backbone: str
    path: Path
    dim: int
    new: int
    cached: int
    rejected: int
    stored: int
    seconds: float
    published: bool


@dataclass
class EmbedResult:
    X: np.ndarray
    paths: list[str]
    rejected: list[tuple[str, str]]
    attrs: dict


@dataclass
class _Job:
    """One backbone's share of the run: its pending batch, its store writer, its counters."""

    spec: BackboneSpec
    weights: ResolvedWeights
    writer: StoreWriter
    todo: list[Entry]
    batch_size: int
    embed: Callable[[np.ndarray], np.ndarray] | None = None
    on_commit: Callable[[int], None] = lambda n: None
    ids: list[str] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    rejects: list[tuple[str, str, str, str]] = field(default_factory=list)
    new: int = 0

    def add(self, entry: Entry, image: np.ndarray) -> None:
        self.ids.append(entry.sha256)
        self.images.append(image)
        if len(self.images) == self.batch_size:
            self.flush()

    def reject(self, entry: Entry, reason: str) -> None:
        self.rejects.append((entry.sha256, entry.path, entry.label, reason))

    def flush(self) -> None:
        if not self.ids and not self.rejects:
            return
        dim = self.spec.dim
        X = self.embed(np.stack(self.images)) if self.images else np.empty((0, dim), np.float32)
        self.writer.commit(self.ids, X, self.rejects)
        self.new += len(self.ids)
        self.on_commit(len(self.ids) + len(self.rejects))
        self.ids, self.images, self.rejects = [], [], []


def store_attrs(spec: BackboneSpec, weights: ResolvedWeights, resize_policy: str) -> dict:
    from extract.model import versions

    return {
        "backbone": spec.name,
        "constructor": spec.constructor_label,
        "dim": spec.dim,
        "input_size": spec.input_size,
        "preprocessing": spec.preprocessing,
        "pooling": "global average",
        "resize": resize_policy,
        **weights.attrs(),
        "versions": json.dumps(versions(), sort_keys=True),
    }


def extract_features(
    *,
    data: Path | None,
    manifest: Path | None,
    backbones: list[str],
    weights: list[str],
    out: Path,
    batch_size: int = 32,
    resize: str = "squash",
    seed: int = 0,
    console: Console | None = None,
) -> list[Summary]:
    """Bring ``out/<backbone>.h5`` up to date with the data set for every requested backbone."""
    console = console or Console(stderr=True)
    specs = [get_spec(name) for name in dict.fromkeys(backbones)]
    if resize not in RESIZE_POLICIES:
        raise CxrError(f"--resize {resize}: choose from {', '.join(RESIZE_POLICIES)}")
    choices = parse_weights(weights, [s.name for s in specs], seed)
    discovery = discover(data, manifest)
    source = f"manifest {discovery.manifest}" if discovery.manifest else "class folders"
    console.print(f"{len(discovery.entries)} files in {discovery.root} ({source})", highlight=False)
    for entry, reason in discovery.rejects:
        _say_rejected(console, entry.path, reason)
    if not discovery.entries:
        raise CxrError(f"{discovery.root}: none of the listed files could be read (see above)")

    with ExitStack() as stack:
        jobs = []
        for spec in specs:
            resolved = resolve(spec, choices[spec.name])
            writer = stack.enter_context(StoreWriter(out, store_attrs(spec, resolved, resize)))
            todo = list(
                {e.sha256: e for e in discovery.entries if e.sha256 not in writer.cache}.values()
            )
            if writer.resumed_batches:
                console.print(
                    f"{spec.name}: resuming after {writer.resumed_batches} committed batch(es)"
                )
            jobs.append(_Job(spec, resolved, writer, todo, batch_size))
        started = time.perf_counter()
        if any(job.todo for job in jobs):
            copies: dict[str, list[str]] = {}
            for entry in discovery.entries:
                copies.setdefault(entry.sha256, []).append(entry.path)
            _compute(jobs, resize, copies, console)
        else:
            console.print(
                f"Nothing to compute: all {len(discovery.entries)} files are already stored."
            )
        summaries = [_publish(job, discovery, time.perf_counter() - started) for job in jobs]
    _print_summaries(console, summaries)
    return summaries


def _compute(
    jobs: list[_Job], resize_policy: str, copies: dict[str, list[str]], console: Console
) -> None:
    """Decode each distinct file once; ``copies`` names every path that holds the same bytes."""
    from extract.model import Embedder

    needs: dict[str, list[_Job]] = {}
    for job in jobs:
        for entry in job.todo:
            needs.setdefault(entry.sha256, []).append(job)
    union = list({e.sha256: e for job in jobs for e in job.todo}.values())
    with _progress(console) as progress:
        for job in jobs:
            if job.todo:
                job.embed = Embedder(job.spec, job.weights, job.batch_size)
                task = progress.add_task(job.spec.name, total=len(job.todo))
                job.on_commit = lambda n, task=task: progress.advance(task, n)
        sizes = lambda e: {j.spec.input_size for j in needs[e.sha256]}  # noqa: E731
        window = PREFETCH * max(job.batch_size for job in jobs)
        for entry, result in decode_stream(union, sizes, resize_policy, window):
            for job in needs[entry.sha256]:
                if isinstance(result, str):
                    job.reject(entry, result)
                else:
                    job.add(entry, result[job.spec.input_size])
            if isinstance(result, str):
                for path in copies[entry.sha256]:
                    _say_rejected(console, path, result)
        for job in jobs:
            job.flush()


def decode_stream(
    entries: Iterable[Entry], sizes: Callable[[Entry], set[int]], policy: str, window: int
) -> Iterator[tuple[Entry, dict[int, np.ndarray] | str]]:
    """Decoded, resized images in input order, ``window`` files ahead; a str is a reject reason."""
    entries = iter(entries)
    with ThreadPoolExecutor(max_workers=DECODE_WORKERS) as pool:
        pending = deque(pool.submit(_prepare, e, sizes(e), policy) for e in islice(entries, window))
        while pending:
            entry, result = pending.popleft().result()
            following = next(entries, None)
            if following is not None:
                pending.append(pool.submit(_prepare, following, sizes(following), policy))
            yield entry, result


def _prepare(
    entry: Entry, sizes: set[int], policy: str
) -> tuple[Entry, dict[int, np.ndarray] | str]:
    try:
        data = entry.file.read_bytes()
    except OSError as exc:
        return entry, f"unreadable ({exc.strerror or exc})"
    if entry.sha256 and hashlib.sha256(data).hexdigest() != entry.sha256:
        return entry, "file changed during the run; run `cxr features` again"
    try:
        rgb = decode(data, entry.file.name)
    except Rejected as exc:
        return entry, str(exc)
    return entry, {size: resize(rgb, size, policy) for size in sizes}


def _publish(job: _Job, discovery, seconds: float) -> Summary:
    published = job.writer.publish(discovery)
    stored = sum(e.sha256 in job.writer.cache.vectors for e in discovery.entries)
    rejected = len(discovery.rejects) + sum(
        e.sha256 in job.writer.cache.rejected for e in discovery.entries
    )
    return Summary(
        backbone=job.spec.name,
        path=job.writer.path,
        dim=job.spec.dim,
        new=job.new,
        cached=stored - job.new,
        rejected=rejected,
        stored=stored,
        seconds=seconds,
        published=published,
    )


def embed_images(
    paths: list[Path],
    backbone: str,
    weights: list[str],
    resize: str = "squash",
    seed: int = 0,
    batch_size: int = 16,
) -> EmbedResult:
    """Embeddings of loose image files (for `cxr predict`), with the attrs a store would record."""
    spec = get_spec(backbone)
    resolved = resolve(spec, parse_weights(weights, [backbone], seed)[backbone])
    attrs = store_attrs(spec, resolved, resize)
    from extract.model import Embedder

    embed = Embedder(spec, resolved, batch_size)
    entries = [Entry(path=str(p), file=Path(p), label="") for p in paths]
    kept, images, rejected = [], [], []
    for entry, result in decode_stream(
        entries, lambda e: {spec.input_size}, resize, 2 * batch_size
    ):
        if isinstance(result, str):
            rejected.append((entry.path, result))
        else:
            kept.append(entry.path)
            images.append(result[spec.input_size])
    chunks = [
        embed(np.stack(images[i : i + batch_size])) for i in range(0, len(images), batch_size)
    ]
    X = np.concatenate(chunks) if chunks else np.empty((0, spec.dim), np.float32)
    return EmbedResult(X=X, paths=kept, rejected=rejected, attrs=attrs)


class _RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed:5.1f} img/s" if task.speed else "  ... img/s")


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _say_rejected(console: Console, path: str, reason: str) -> None:
    console.print(f"rejected {path}: {reason}", markup=False, highlight=False, style="yellow")


def _print_summaries(console: Console, summaries: list[Summary]) -> None:
    table = RichTable(title="Feature stores")
    for column in ("backbone", "new", "cached", "rejected", "dim", "seconds", "store"):
        table.add_column(column, justify="left" if column in ("backbone", "store") else "right")
    for s in summaries:
        table.add_row(
            s.backbone,
            str(s.new),
            str(s.cached),
            str(s.rejected),
            str(s.dim),
            f"{s.seconds:.1f}",
            f"{s.path}" + ("" if s.published else " (unchanged)"),
        )
    console.print(table)
