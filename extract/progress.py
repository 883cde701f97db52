"""How a run reports itself: a small protocol the caller implements, so the loop never prints.

The run loop (`cxr.extract.runner`) calls a ``Reporter``; a library user passes nothing and the
run is silent, the CLI passes ``RichReporter`` (progress bars, rejects in yellow, a summary
table), a Dask worker or a notebook can pass its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text


@dataclass(frozen=True)
class Summary:
    """What one backbone's store looks like after a run."""

    backbone: str
    path: Path
    dim: int
    new: int
    cached: int
    rejected: int
    stored: int
    seconds: float
    published: bool


class Reporter(Protocol):
    def note(self, text: str) -> None:
        """A line of plain information (what was found, resuming, nothing to do)."""

    def rejected(self, path: str, reason: str) -> None:
        """One file could not be used."""

    def computing(self, totals: dict[str, int]) -> AbstractContextManager[None]:
        """Work starts: images to embed per backbone; the context ends when it is done."""

    def advance(self, backbone: str, images: int) -> None:
        """``images`` more images of ``backbone`` are committed."""

    def finished(self, summaries: Sequence[Summary]) -> None:
        """The run is over: one summary per backbone."""


class Silent:
    """The default for library calls: report nothing."""

    def note(self, text: str) -> None:
        pass

    def rejected(self, path: str, reason: str) -> None:
        pass

    def computing(self, totals: dict[str, int]) -> AbstractContextManager[None]:
        return _Nothing()

    def advance(self, backbone: str, images: int) -> None:
        pass

    def finished(self, summaries: Sequence[Summary]) -> None:
        pass


class _Nothing(AbstractContextManager):
    def __exit__(self, *exc) -> None:
        return None


class RichReporter:
    """Terminal reporting: one progress bar per backbone (img/s, ETA) and a summary table."""

    def __init__(self, console: Console):
        self.console = console
        self._progress: Progress | None = None
        self._tasks: dict[str, int] = {}

    def note(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False)

    def rejected(self, path: str, reason: str) -> None:
        self.console.print(
            f"rejected {path}: {reason}", markup=False, highlight=False, style="yellow"
        )

    def computing(self, totals: dict[str, int]) -> AbstractContextManager[None]:
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _RateColumn(),
            TimeRemainingColumn(),
            console=self.console,
        )
        self._tasks = {name: progress.add_task(name, total=n) for name, n in totals.items()}
        self._progress = progress
        return progress  # type: ignore[return-value]  # Progress is its own context manager

    def advance(self, backbone: str, images: int) -> None:
        if self._progress is not None and backbone in self._tasks:
            self._progress.advance(self._tasks[backbone], images)

    def finished(self, summaries: Sequence[Summary]) -> None:
        table = Table(title="Feature stores")
        for column in ("backbone", "new", "cached", "rejected", "dim", "seconds", "store"):
            justify = "left" if column in ("backbone", "store") else "right"
            table.add_column(column, justify=justify, overflow="fold")
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
        self.console.print(table)


class _RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed:5.1f} img/s" if task.speed else "  ... img/s")
