"""The store writer: one per store, crash-safe, resumable, incremental.

- A lock file (``flock``, released by the kernel even on SIGKILL) admits one writer per store;
  a lock file or a parts folder that is a symbolic link is refused (`cxr.files`), so a link
  planted in a shared folder can neither be written through nor have its folder emptied.
- Each finished batch is committed as its own shard file (written, fsynced, renamed), so a crash
  loses at most the batch in flight and never exposes half of one.
- At the end of a run the published store is rebuilt from the current data set listing: rows in
  listing order, embeddings gathered by content hash from the old store and the shards, then
  swapped in atomically and the shards removed. Rows of files that left the data set disappear;
  a file whose bytes changed has a new hash and was recomputed.
- If nothing changed, the published file is left untouched.
- A store is its backbone, weights, preprocessing, region and precision, not the engine: f32
  runtimes share it. The runtimes that wrote its rows are recorded (``runtimes``); before a
  runtime adds rows beside another's, the run re-embeds a few stored films with it and
  ``agree`` refuses a difference over ``F32_TOLERANCE``, before anything is written.
- A store belongs to its data: a run over another data root or manifest that would drop any of
  the store's rows is refused (``claim``), naming both, unless the caller says ``replace``.
- A storage fault (disk full, file too large, unwritable folder) ends the run with RunFailed:
  one line naming the folder and how many images are committed; a re-run resumes from them.
- ``rebuild`` moves the store aside (``<backbone>.h5.damaged-<time>``, which no reader takes for
  a store) together with unreadable shards, and builds it again; other stores are not touched.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cxr.errors import CxrError, RunFailed
from cxr.extract.dataset import Discovery
from cxr.extract.runtimes import F32_TOLERANCE
from cxr.files import NOT_OWN, own_folder, take_lock
from cxr.settings import flag
from cxr.store.schema import (
    ROW_COLUMNS,
    Reject,
    StoreAttrs,
    StoreContent,
    StoreError,
    Table,
    fingerprint,
    lock_path,
    parts_dir,
    published_attrs,
    read_content,
    read_shard,
    reject_table,
    runtimes_of,
    runtimes_text,
    store_name,
    store_path,
    write_atomic,
    write_shard,
)


@dataclass
class _Cache:
    """Embeddings already computed for this store, by content hash."""

    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)

    def add(self, ids, X, rejected: Table) -> None:
        self.vectors.update(zip(ids, X, strict=True))
        self.rejected.update(zip(rejected["id"], rejected["reason"], strict=True))

    def __contains__(self, sha: str) -> bool:
        return sha in self.vectors or sha in self.rejected


class StoreWriter:
    """Context manager: ``with StoreWriter(out, attrs) as w: w.commit(...); w.publish(...)``."""

    def __init__(self, directory: Path, attrs: StoreAttrs, *, rebuild: bool = False):
        self.directory = Path(directory)
        self.attrs = attrs
        self.backbone = store_name(attrs)  # the backbone, @region for a store of masked films
        self.path = store_path(self.directory, self.backbone)
        self.parts = parts_dir(self.directory, self.backbone)
        self._lock_fd: int | None = None
        self._old: StoreContent | None = None
        self.cache = _Cache()
        self.resumed_batches = 0
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"  # names its shards
        self._seq = 0
        self.rebuild = rebuild
        self.committed = 0  # images durable in shards (resumed or of this run), not yet published
        self.adopted = 0  # shards committed by Dask workers for this run
        self.moved_aside: list[Path] = []
        self.changes = ""  # what publishing changed, in words ("" when nothing)
        self.runtime = runtimes_of(attrs)[-1]  # the runtime of this run
        self.runtimes: list[str] = []  # the runtimes that wrote the stored and resumed rows
        self.others: list[str] = []  # ids of rows only other runtimes wrote (to check against)
        self.measured = 0.0  # largest |runtime - TensorFlow| known of the rows kept

    def __enter__(self) -> StoreWriter:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._fault(exc, "features folder") from None
        self._acquire_lock()
        try:
            self._load_existing()
        except BaseException:
            self._release_lock()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._release_lock()

    def _fault(self, exc: OSError, what: str) -> RunFailed:
        """A storage fault as one line: where, why, what is safe, what to do."""
        published = (
            "the published store is intact" if self.path.exists() else "no store is published yet"
        )
        return RunFailed(
            f"{self.directory}: cannot write the {what} ({exc.strerror or exc}); "
            f"{self.committed} image(s) of {self.backbone} are committed and {published}: free "
            "space or fix the folder, then run `cxr features` again to resume"
        )

    def _acquire_lock(self) -> None:
        lock = lock_path(self.directory, self.backbone)
        try:
            busy = f"{self.path}: another `cxr features` is writing this store"
            self._lock_fd = take_lock(lock, busy=busy)
        except OSError as exc:
            raise self._fault(exc, "lock file") from None

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def _load_existing(self) -> None:
        if self.parts.is_symlink():
            raise CxrError(f"{self.parts}: the store's parts folder is {NOT_OWN}; remove it")
        # We hold the lock, so temporary files left here are from a run that died mid-write.
        for stale in self.directory.glob(f".{self.path.name}.*.tmp"):
            stale.unlink()
        if self.rebuild and self.path.exists():
            self._move_aside(self.path)
        if self.path.exists():
            self._old = read_content(self.path)
            self._check_compatible(self.path, self._old.attrs)
            self.cache.add(self._old.rows["id"], self._old.X, self._old.rejected)
            self._written_by(self._old.attrs, self._old.rows["id"])
            self.measured = float(self._old.attrs.get("runtime_max_abs_diff", 0.0))
        for shard in sorted(self.parts.glob("*.h5")) if self.parts.is_dir() else []:
            try:
                attrs, ids, X, rejected = read_shard(shard)
            except (OSError, KeyError) as exc:
                if self.rebuild:
                    self._move_aside(shard)
                    continue
                raise StoreError(
                    f"{shard}: unreadable shard of an interrupted run ({exc}); run `cxr features "
                    f"... {flag('rebuild')}` to move it aside"
                ) from None
            self._check_compatible(shard, attrs)
            self.cache.add(ids, X, rejected)
            self._written_by(attrs, ids)
            self.resumed_batches += 1
            self.committed += len(ids)

    def _written_by(self, attrs: Mapping, ids: Iterable[str]) -> None:
        names = runtimes_of(attrs)
        self.runtimes.extend(n for n in names if n not in self.runtimes)
        if self.runtime not in names:
            self.others.extend(ids)

    def agree(self, ids: Sequence[str], X: np.ndarray) -> float:
        """Check this run's embeddings of stored films (``ids``) against the stored ones, before
        it adds rows beside other runtimes': the largest difference, or CxrError above
        ``F32_TOLERANCE`` (nothing written)."""
        stored = np.stack([self.cache.vectors[i] for i in ids])
        worst = float(np.max(np.abs(stored - X)))
        if worst > F32_TOLERANCE:
            raise CxrError(
                f"{self.path}: {self.runtime}'s embeddings of {len(ids)} stored films differ "
                f"from those {'+'.join(self.runtimes)} wrote by up to {worst:.3g} (allowed "
                f"{F32_TOLERANCE:g}); add rows with `runtime` {self.runtimes[0]}, or give "
                f"{self.runtime} its own `features` folder"
            )
        self.measured = max(self.measured, worst)
        return worst

    def _move_aside(self, path: Path) -> None:
        """Beside the store (not in the parts folder, which publishing empties)."""
        name = path.name if path == self.path else f"{self.backbone}.shard-{path.name}"
        aside = self.directory / f"{name}.damaged-{self.run_id}"
        try:
            os.replace(path, aside)
        except OSError as exc:
            raise self._fault(exc, f"moved-aside copy of {path.name}") from None
        self.moved_aside.append(aside)

    def _check_compatible(self, path: Path, attrs: Mapping) -> None:
        theirs, ours = fingerprint(attrs), fingerprint(self.attrs)
        if theirs != ours:
            diff = ", ".join(
                f"{k}: stored {theirs[k]!r} vs now {ours[k]!r}"
                for k in ours
                if theirs[k] != ours[k]
            )
            raise StoreError(
                f"{path}: was built with other settings ({diff}); embeddings must not mix. "
                "Use another `features` folder, or `rebuild` to move it aside and start again"
            )

    def claim(self, discovery: Discovery, replace: bool = False) -> None:
        """Refuse to let rows of another data set replace this store's (CxrError naming both
        and the way out): a store built from one data root or manifest keeps its rows unless
        the caller says ``replace``; the same data set updates it as it always did."""
        old = self._old
        if old is None or replace:
            return
        root, manifest = str(old.attrs.get("data_root", "")), str(old.attrs.get("manifest", ""))
        if _same(root, discovery.root) and _same(manifest, discovery.manifest):
            return
        kept = {(e.path, e.sha256) for e in discovery.entries}
        kept |= {(r.path, r.id) for r in discovery.rejects}
        lost = sum(
            (p, i) not in kept for p, i in zip(old.rows["path"], old.rows["id"], strict=True)
        )
        if not lost:
            return
        built = f"{root}" + (f" (manifest {manifest})" if manifest else "")
        now = f"{discovery.root}" + (
            f" (manifest {discovery.manifest})" if discovery.manifest else ""
        )
        raise CxrError(
            f"{self.path}: holds {len(old.rows):,} rows of {built}; this run reads {now} and "
            f"would drop or replace {lost:,} of them. Give this data its own `features` folder "
            "(make features does, per data root), or `replace` to rebuild the store from it"
        )

    def record_probe(self, max_abs_diff: float) -> None:
        """The runtime's probe against TensorFlow, measured when its model was built (0 for
        TensorFlow itself): the store records it."""
        self.attrs["runtime_max_abs_diff"] = float(max_abs_diff)

    def _provenance(self, attrs: StoreAttrs) -> None:
        """The runtimes that wrote the rows (this run's if it committed any) and the largest
        difference to TensorFlow measured of them."""
        wrote = bool(self._seq or self.adopted)
        attrs["runtimes"] = runtimes_text(
            [*self.runtimes, self.runtime] if wrote or not self.runtimes else self.runtimes
        )
        probe = float(self.attrs.get("runtime_max_abs_diff", 0.0))
        attrs["runtime_max_abs_diff"] = max(self.measured, probe if wrote or not self._old else 0)

    def commit(self, ids: Sequence[str], X: np.ndarray, rejected: Sequence[Reject]) -> None:
        """Make one finished batch durable: its embeddings by content hash, and its rejects."""
        table = reject_table(rejected)
        self._seq += 1
        try:
            own_folder(self.parts)
            shard = self.parts / f"{self.run_id}-{self._seq:07d}.h5"
            write_shard(shard, self.attrs, ids, X, table)
        except OSError as exc:
            raise self._fault(exc, "next batch") from None
        self.cache.add(ids, X, table)
        self.committed += len(ids)

    def adopt(self, shard: Path) -> int:
        """Take in a shard another process committed (a Dask worker); returns its image count."""
        try:
            attrs, ids, X, rejected = read_shard(shard)
        except (OSError, KeyError) as exc:
            raise StoreError(f"{shard}: unreadable shard from a worker ({exc})") from None
        self._check_compatible(shard, attrs)
        self.cache.add(ids, X, rejected)
        self._written_by(attrs, ids)
        self.adopted += 1
        self.committed += len(ids)
        return len(ids)

    def publish(self, discovery: Discovery) -> bool:
        """Rebuild the store for the current data set; returns False when nothing changed."""
        entries = [e for e in discovery.entries if e.sha256 in self.cache.vectors]
        rows = Table.from_records([e.record() for e in entries], ROW_COLUMNS)
        meta = Table.from_records([e.meta for e in entries], discovery.meta_columns)
        rejected = reject_table(
            [
                e.reject(self.cache.rejected[e.sha256])
                for e in discovery.entries
                if e.sha256 in self.cache.rejected
            ]
            + discovery.rejects
        )
        X = [self.cache.vectors[e.sha256] for e in entries]  # rows, written block by block
        now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        created = str(self._old.attrs.get("created", "")) if self._old else None
        attrs = published_attrs(
            self.attrs,
            data_root=discovery.root,
            manifest=discovery.manifest,
            layout=discovery.layout,
            created=created,
            now=now,
        )
        self._provenance(attrs)
        if self._unchanged(rows, meta, rejected, attrs):
            self._remove_shards()
            return False
        self.changes = _changes(self._old, rows)
        try:
            write_atomic(
                self.path, StoreContent(attrs=attrs, rows=rows, meta=meta, X=X, rejected=rejected)
            )
        except OSError as exc:
            raise self._fault(exc, "store") from None
        self._remove_shards()
        return True

    def _unchanged(self, rows: Table, meta: Table, rejected: Table, attrs: Mapping) -> bool:
        old = self._old
        if old is None or self.resumed_batches or self._seq or self.adopted:
            return False
        same_attrs = all(
            old.attrs.get(k) == v for k, v in attrs.items() if k not in ("created", "updated")
        )
        return same_attrs and all(
            _tables_equal(a, b)
            for a, b in ((old.rows, rows), (old.meta, meta), (old.rejected, rejected))
        )

    def _remove_shards(self) -> None:
        if self.parts.is_dir():
            for leftover in self.parts.iterdir():  # shards and any half-written shard of a crash
                leftover.unlink()
            self.parts.rmdir()


def _same(recorded: str, now: Path | None) -> bool:
    """Whether a recorded path (data root, manifest; "" for none) names the same as ``now``."""
    if not recorded or now is None:
        return not recorded and now is None
    return Path(recorded).resolve() == Path(now).resolve()


def _changes(old: StoreContent | None, rows: Table) -> str:
    """``"3 rows added, 1 gone"`` between the published rows and these ("" when the same)."""
    before = set(old.rows["path"]) if old is not None else set()
    after = set(rows["path"])
    added, gone = len(after - before), len(before - after)
    parts = ([f"{added:,} rows added"] if added else []) + ([f"{gone:,} gone"] if gone else [])
    return ", ".join(parts)


def _tables_equal(a: Table, b: Table) -> bool:
    return a.columns.keys() == b.columns.keys() and all(
        np.array_equal(a[k], b[k]) for k in a.columns
    )
