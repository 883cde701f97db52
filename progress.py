"""How long work reports itself, in both stages: one protocol and two reporters.

The work never prints: extraction, evaluation, the audit and the study call a ``Progress``.
Library calls are silent by default (`Silent`); the CLI hands in `RichProgress`, whose bars
show only on a terminal unless asked, so logs, pipes and CI stay free of them, and whose lines
name settings by their flags, as the CLI's errors do. A notebook, a Dask worker or a test can
pass its own (its lines name a setting in backticks: `label_map`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import (
    Progress as Bars,
)
from rich.text import Text

from cxr.settings import as_flags

Advance = Callable[[int], None]  # n more units done
AdvanceEach = Callable[[str, int], None]  # n more units of one named part done


class Progress(Protocol):
    def note(self, text: str) -> None:
        """A line of plain information (what was found, resuming, nothing to do)."""
        ...

    def warn(self, text: str) -> None:
        """A line that asks for attention (a file that could not be used)."""
        ...

    def step(self, description: str, total: int) -> AbstractContextManager[Advance]:
        """A stage of ``total`` units; call the yielded function with each unit count done."""
        ...

    def parts(self, totals: Mapping[str, int]) -> AbstractContextManager[AdvanceEach]:
        """Several named parts at once (a backbone each), ``totals`` units each."""
        ...


def _nothing(n: int = 1) -> None:
    pass


def _nothing_each(name: str, n: int) -> None:
    pass


class Silent:
    """The default for library calls: report nothing."""

    def note(self, text: str) -> None:
        pass

    def warn(self, text: str) -> None:
        pass

    @contextmanager
    def step(self, description: str, total: int) -> Iterator[Advance]:
        yield _nothing

    @contextmanager
    def parts(self, totals: Mapping[str, int]) -> Iterator[AdvanceEach]:
        yield _nothing_each


class RichProgress:
    """Lines on ``console`` (printed as text, never as markup, settings by their flags); a
    transient bar per step and a bar per part with its rate, when ``bars`` (default: only if the
    console is a terminal)."""

    def __init__(self, console: Console | None = None, *, bars: bool | None = None):
        self.console = console or Console(stderr=True)
        self.bars = self.console.is_terminal if bars is None else bars

    def note(self, text: str) -> None:
        self.console.print(as_flags(text), markup=False, highlight=False, soft_wrap=True)

    def warn(self, text: str) -> None:
        self.console.print(
            as_flags(text), markup=False, highlight=False, soft_wrap=True, style="yellow"
        )

    @contextmanager
    def step(self, description: str, total: int) -> Iterator[Advance]:
        if not self.bars:
            yield _nothing
            return
        columns = (
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Bars(*columns, console=self.console, transient=True) as bars:
            task = bars.add_task(description, total=total)

            def advance(n: int = 1) -> None:
                bars.advance(task, n)

            yield advance

    @contextmanager
    def parts(self, totals: Mapping[str, int]) -> Iterator[AdvanceEach]:
        if not self.bars:
            yield _nothing_each
            return
        columns = (
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            _RateColumn(),
            TimeRemainingColumn(),
        )
        with Bars(*columns, console=self.console) as bars:
            tasks = {name: bars.add_task(name, total=n) for name, n in totals.items()}

            def advance(name: str, n: int) -> None:
                if name in tasks:
                    bars.advance(tasks[name], n)

            yield advance


class _RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed:5.1f} img/s" if task.speed else "  ... img/s")
