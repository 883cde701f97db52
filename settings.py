"""The settings tables' machinery: a `Setting` (name, default, help, CLI flags) and the lookup
from a setting's name to its flag.

Each command's settings are one table beside the code they configure (`cxr.classify.settings`
for evaluate, `cxr.extract.settings` for features); the CLI's options and the Python API's
keywords are derived from them. The library names a setting in backticks (`folds`), and the CLI
prints its flag (`as_flags`), from whichever table defines it. Plain data: no import of the rest
of the package.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_SAME = object()
TABLES: list[dict[str, Setting]] = []  # every table made, in import order


@dataclass(frozen=True)
class Setting:
    """One setting. ``cli`` is the CLI's spelling of the default where its syntax differs from
    Python's (``a,b,c`` text for a list, ``auto`` for None); ``flags`` are the CLI's names
    (``--NAME`` unless given)."""

    name: str
    default: Any
    help: str
    flags: tuple[str, ...] = ()
    cli: Any = field(default=_SAME, repr=False)

    @property
    def flag(self) -> str:
        return next(
            (f for f in self.flags if f.startswith("--")), "--" + self.name.replace("_", "-")
        )

    @property
    def cli_default(self) -> Any:
        if self.cli is not _SAME:
            return self.cli
        return list(self.default) if isinstance(self.default, tuple) else self.default


def table(*settings: Setting) -> dict[str, Setting]:
    """A command's settings by name (its `--help` order), known to `flag` from now on."""
    made = {s.name: s for s in settings}
    TABLES.append(made)
    return made


def flag(name: str) -> str:
    """The CLI flag of a setting (of any command: ``--NAME`` unless a table says otherwise),
    for text that is written into a report as the CLI prints it."""
    known = next((t[name] for t in TABLES if name in t), None)
    return known.flag if known is not None else "--" + name.replace("_", "-")


def as_flags(message: str) -> str:
    """A library message as the CLI prints it: every `setting` named by its flag."""
    return re.sub(r"`([a-z][a-z0-9_]*)`", lambda m: flag(m[1]), message)
