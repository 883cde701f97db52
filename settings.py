"""The settings tables' machinery: a `Setting` (name, default, help, CLI flags), the lookup
from a setting's name to its flag, and what derives an edge from a table.

Each command's settings are one table beside the code they configure (`cxr.classify.settings`
for evaluate, `cxr.extract.settings` for features); the CLI's options (`cxr.cli`) and the Python
API's keywords (`takes`) are derived from them, and `listed` reads a list setting in either
syntax. The library names a setting in backticks (`folds`), and the CLI prints its flag
(`as_flags`), from whichever table defines it. Plain data: no import of the rest of the package
but its error type.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cxr.errors import CxrError

_SAME = object()
F = TypeVar("F", bound=Callable[..., Any])
TABLES: list[dict[str, Setting]] = []  # every table made, in import order


@dataclass(frozen=True)
class Setting:
    """One setting. ``cli`` is the CLI's spelling of the default where its syntax differs from
    Python's (``a,b,c`` text for a list, ``auto`` for None); ``flags`` are the CLI's names
    (``--NAME`` unless given; a lone ``--no-NAME`` turns a setting that is on by default off);
    ``type`` is the type of the CLI's value where the default does not say it (``int | None``
    for a number whose default is None)."""

    name: str
    default: Any
    help: str
    flags: tuple[str, ...] = ()
    cli: Any = field(default=_SAME, repr=False)
    type: Any = field(default=None, repr=False)

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

    @property
    def negated(self) -> bool:
        """The CLI's flag switches the setting off (``--no-cache``): its value is the inverse."""
        return self.flag == "--no-" + self.name.replace("_", "-")

    @property
    def cli_type(self) -> Any:
        """The type of the CLI's value: ``type``, or the default's (a list of texts for a
        list, an optional text for None)."""
        if self.type is not None:
            return self.type
        value = self.cli_default
        if isinstance(value, list):
            return list[str]
        return str | None if value is None else type(value)


def table(*settings: Setting) -> dict[str, Setting]:
    """A command's settings by name (its `--help` order), known to `flag` from now on."""
    made = {s.name: s for s in settings}
    TABLES.append(made)
    return made


def listed(values: str | Sequence[Any] | None, name: str) -> tuple[Any, ...]:
    """A list setting: a sequence, or the CLI's ``a,b,c`` text (so ``"view"`` is one name,
    never four letters); None is empty. ``name`` is the setting, for the error."""
    if values is None:
        return ()
    if isinstance(values, str):
        names = tuple(n.strip() for n in values.split(",") if n.strip())
        if values.strip() and not names:
            raise CxrError(f"`{name}` {values!r}: expected comma-separated names")
        return names
    if not isinstance(values, Sequence):
        raise CxrError(f"`{name}`: give a list, not {type(values).__name__}")
    return tuple(values)


def takes(settings: Mapping[str, Setting], skip: tuple[str, ...] = ()) -> Callable[[F], F]:
    """Give a function that takes ``settings`` as ``**settings`` their keywords, with their
    defaults, in its signature (what `help()`, IDEs and the tests read); ``skip``: those it
    names itself."""

    def decorate(function: F) -> F:
        signature = inspect.signature(function)
        own = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
        keywords = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=entry.default)
            for name, entry in settings.items()
            if name not in skip
        ]
        function.__signature__ = signature.replace(parameters=own + keywords)  # type: ignore[attr-defined]
        return function

    return decorate


def unknown(settings: Mapping[str, Setting], given: Mapping[str, Any], where: str) -> None:
    """A keyword no setting defines is a TypeError, as Python's own for a misspelt keyword."""
    import difflib

    for name in given:
        if name not in settings:
            close = difflib.get_close_matches(name, settings, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(f"{where}() got an unexpected keyword argument {name!r}{hint}")


def flag(name: str) -> str:
    """The CLI flag of a setting (of any command: ``--NAME`` unless a table says otherwise),
    for text that is written into a report as the CLI prints it."""
    known = next((t[name] for t in TABLES if name in t), None)
    return known.flag if known is not None else "--" + name.replace("_", "-")


def as_flags(message: str) -> str:
    """A library message as the CLI prints it: every `setting` named by its flag."""
    return re.sub(r"`([a-z][a-z0-9_]*)`", lambda m: flag(m[1]), message)
