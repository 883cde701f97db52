"""Progress of long stage-2 work (evaluate, audit, reproduce): a protocol and two reporters.

Library calls are silent by default; the CLI hands in `RichSteps` when stderr is a terminal and
``--quiet`` was not given, so logs, pipes and CI stay free of bars. (Extraction has its own,
richer reporter in `cxr.extract.progress`: per-backbone bars with images per second.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

Advance = Callable[[int], None]


class Steps(Protocol):
    def step(self, description: str, total: int) -> AbstractContextManager[Advance]:
        """A stage of ``total`` units; call the yielded function with each unit count done."""
        ...


class Silent:
    @contextmanager
    def step(self, description: str, total: int) -> Iterator[Advance]:
        yield lambda n=1: None


class RichSteps:
    """One transient bar per stage on stderr: it vanishes when the stage is done."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)

    @contextmanager
    def step(self, description: str, total: int) -> Iterator[Advance]:
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=self.console, transient=True) as progress:
            task = progress.add_task(description, total=total)
            yield lambda n=1: progress.advance(task, n)
