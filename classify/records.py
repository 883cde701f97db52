"""Typed records a result is made of: how it was validated, by which protocol, and what its head
was fitted on.

Each is a frozen dataclass that a design or an evaluation makes, that is serialised once (the
result's JSON keeps the form it always had) and that every reader gets back through ``of``,
never by indexing the JSON. Being hashable, they join results (the same head on the same
validation part) on their fields. Plain data: no import of the rest of the package.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar

CROSS_VALIDATION = "cross-validation"  # the kind of a result that records no validation
EMBEDDINGS = "embeddings"
_WITH, _ALONE = "embeddings + ", " alone"


R = TypeVar("R", bound="_Record")


class _Record:
    """A record kept in a result's JSON under ``key``: written by `to_dict`, read by `of`."""

    key: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (in field order, None fields left out, tuples as lists)."""
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]  # every subclass is a dataclass
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def of(cls: type[R], result: Mapping[str, Any]) -> R:
        """The record a result (its JSON, perhaps read from a file) holds: unknown keys are
        ignored, a result without one gets the defaults."""
        raw = result.get(cls.key)
        if not isinstance(raw, Mapping):
            return cls()
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        values: dict[str, Any] = {
            k: tuple(map(str, v)) if isinstance(v, list | tuple) else v
            for k, v in raw.items()
            if k in known
        }
        return cls(**values)


@dataclass(frozen=True)
class Validation(_Record):
    """The result's ``validation`` entry: the design's ``kind`` and, for a design whose parts
    are held-out rows, which rows and what they lacked. A field that is None is not in the
    JSON (cross-validation records its kind alone; a result without one was cross-validated)."""

    key: ClassVar[str] = "validation"
    kind: str = CROSS_VALIDATION
    column: str | None = None  # leave-one-out: the held-out column
    held_out: str | None = None  # leave-one-out: this part's held-out value
    test_where: tuple[str, ...] | None = None  # external: the test rows' conditions
    n_train: int | None = None
    n_test: int | None = None
    train_rows_dropped_shared_patients: int | None = None
    test_lacks_classes: tuple[str, ...] | None = None
    train_lacks_classes: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Protocol(_Record):
    """The result's ``cv`` entry: the scheme of a design's splits and its settings, the same for
    every part of one run (a field that is None is not in the JSON)."""

    key: ClassVar[str] = "cv"
    scheme: str = ""
    folds: int | None = None
    repeats: int | None = None
    column: str | None = None  # leave-one-out
    test_where: tuple[str, ...] | None = None  # external
    seed: int | None = None
    grouped: bool | None = None  # no group (patient, or the unit) on both sides of a split
    unit: str | None = None  # what the splits keep together: patient, image, a column


@dataclass(frozen=True)
class Inputs:
    """What a head was fitted on: the embeddings, stored covariates (their label, e.g.
    ``age, sex``), or both. Its text is the result's ``inputs`` in the JSON."""

    embeddings: bool = True
    covariates: str = ""

    def __str__(self) -> str:
        if not self.covariates:
            return EMBEDDINGS
        return f"{_WITH}{self.covariates}" if self.embeddings else self.covariates + _ALONE

    @classmethod
    def parse(cls, text: str) -> Inputs:
        """The record a result's ``inputs`` text was written from."""
        if text.startswith(_WITH):
            return cls(True, text.removeprefix(_WITH))
        if text != EMBEDDINGS and text.endswith(_ALONE):
            return cls(False, text.removesuffix(_ALONE))
        return cls()

    @classmethod
    def of(cls, result: Mapping[str, Any]) -> Inputs:
        return cls.parse(str(result.get("inputs", EMBEDDINGS)))

    @property
    def alone(self) -> bool:
        """The embeddings alone (no covariates)."""
        return not self.covariates
