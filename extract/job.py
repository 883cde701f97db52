"""One extraction job: decode files once, run every backbone that needs them, hand rows on.

This is the unit both distributors run (clip-retrieval's runner, img2dataset's distributor): the
local run (`cxr.extract.runner`) gives it every file still to embed, with the store writers as
sinks; a Dask task (`cxr.extract.distributed`) gives it one shard of files, with shard files as
sinks. Per backbone each decoded film is preprocessed straight into its row of a preallocated
batch on the calling thread; a full batch is run through the model and committed to its sink on
the backbone's own thread, one batch in flight (two buffers take turns): the next batch is
decoded and filled while the model works on this one. Batches commit in order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from cxr.extract.dataset import Entry
from cxr.extract.preprocess import Preprocessing
from cxr.extract.reader import WHOLE, decode_stream
from cxr.extract.regions import Region
from cxr.extract.settings import EXACT
from cxr.store.schema import Reject

PREFETCH = 4  # batches decoded ahead of the forward pass


class Embedder(Protocol):
    """A frozen backbone on batches (`cxr.extract.model.make_embedder` builds one)."""

    max_abs_diff: float
    input: Preprocessing

    def load(self, batch: np.ndarray) -> Any: ...

    def forward(self, batch: Any, n: int) -> np.ndarray: ...


class Sink(Protocol):
    """Where a backbone's finished batches go: a store writer, or a Dask task's shard."""

    def commit(self, ids: Sequence[str], X: np.ndarray, rejected: Sequence[Reject]) -> None: ...


@dataclass
class Target:
    """One backbone a job serves."""

    name: str
    input_size: int
    dim: int
    embedder: Embedder
    sink: Sink
    batch_size: int
    on_commit: Callable[[int], None] = lambda n: None  # files settled (embedded or rejected)
    new: int = 0  # files this job embedded for it
    _ids: list[str] = field(default_factory=list)
    _rejects: list[Reject] = field(default_factory=list)
    _thread: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1))
    _in_flight: Future | None = None
    _buffers: list[np.ndarray] = field(default_factory=list)  # filling, and in flight

    def add(self, entry: Entry, image: np.ndarray) -> None:
        """``image``: (s, s) gray or (s, s, 3) uint8, written preprocessed into the batch."""
        if not self._buffers:
            shape = (self.batch_size, self.input_size, self.input_size, 3)
            self._buffers = [np.empty(shape, np.float32) for _ in range(2)]
        self.embedder.input.fill(self._buffers[0][len(self._ids)], image)
        self._ids.append(entry.sha256)
        if len(self._ids) == self.batch_size:
            self.flush()

    def reject(self, entry: Entry, reason: str) -> None:
        self._rejects.append(entry.reject(reason))

    def flush(self) -> None:
        if not self._ids and not self._rejects:
            return
        batch = None
        if self._ids:
            rows = self._buffers[0]
            rows[len(self._ids) :] = self.embedder.input.blank
            batch = self.embedder.load(rows)
            self._buffers.reverse()  # the other buffer's batch is committed by the wait below
        self.wait()
        self._in_flight = self._thread.submit(self._finish, self._ids, batch, self._rejects)
        self._ids, self._rejects = [], []

    def _finish(self, ids: list[str], batch: Any, rejects: list[Reject]) -> None:
        if batch is not None:
            X = self.embedder.forward(batch, len(ids))
        else:
            X = np.empty((0, self.dim), np.float32)
        self.sink.commit(ids, X, rejects)
        self.new += len(ids)
        self.on_commit(len(ids) + len(rejects))

    def wait(self) -> None:
        """Until the batch in flight is committed; its error, if any, is raised here."""
        if self._in_flight is not None:
            future, self._in_flight = self._in_flight, None
            future.result()

    def close(self) -> None:
        self._thread.shutdown(wait=True)


def run_job(
    files: Iterable[Entry],
    needs: Mapping[str, Sequence[str]],
    targets: Mapping[str, Target],
    resize: str,
    on_reject: Callable[[Entry, str], None] = lambda entry, reason: None,
    region: Region = WHOLE,
    decode: str = EXACT,
) -> None:
    """Decode each of ``files`` once (``region`` applied; ``decode`` draft: a JPEG at a reduced
    scale), resized for every target that ``needs`` it (by sha256), and feed the targets; every
    target's last batch is committed when this returns."""
    with ExitStack() as stack:
        for target in targets.values():
            stack.callback(target.close)
        sizes = lambda e: {targets[n].input_size for n in needs[e.sha256]}  # noqa: E731
        window = PREFETCH * max((t.batch_size for t in targets.values()), default=1)
        stream = decode_stream(files, sizes, resize, window, region, gray=True, decode=decode)
        for entry, result in stream:
            for name in needs[entry.sha256]:
                target = targets[name]
                if isinstance(result, str):
                    target.reject(entry, result)
                else:
                    target.add(entry, result[target.input_size])
            if isinstance(result, str):
                on_reject(entry, result)
        for target in targets.values():
            target.flush()
        for target in targets.values():
            target.wait()
