"""How the results of each validation design are shown: the report's words for the design, the
summary's title and part column, the column it holds out, and the file names of its plots.

A design only splits (`cxr.classify.designs`); this registry, beside the tables and plots that
read it, says how its results look. It reads nothing but a result's JSON (through its records),
which outlives the design object: a report drawn from a file is drawn the same way. Adding a
design adds one `Presentation` subclass here, named by the design's ``kind``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from cxr.classify.records import CROSS_VALIDATION, Protocol, Validation
from cxr.classify.results import result_name
from cxr.classify.settings import flag

PRESENTATIONS: dict[str, type[Presentation]] = {}  # a design's kind -> how its results look


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


class Presentation:
    """How the results of one design (its ``kind``) are shown; subclasses are registered by
    being defined."""

    kind: ClassVar[str]  # the design's, as in the results' validation.kind
    summary_title: ClassVar[str] = "Heads on held-out rows: pooled [95% CI]"
    part_header: ClassVar[str | None] = None  # a summary column naming each result's part

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        PRESENTATIONS[cls.kind] = cls

    @classmethod
    def describe(cls, result: Mapping) -> str:
        """The report's words for how ``result`` was validated."""
        raise NotImplementedError

    @classmethod
    def slug(cls, result: Mapping) -> str:
        """File-name part naming the task and this design's run of it, so runs that differ
        in either never share a plot file."""
        return f"{slug(result['task']['name'])}-{slug(cls.kind)}"

    @classmethod
    def forest_slug(cls, result: Mapping) -> str:
        """The forest plot's file name: one per task and design run (all parts together)."""
        return cls.slug(result)

    @classmethod
    def held_out_column(cls, result: Mapping) -> str | None:
        """The metadata column this run holds out, if any (the confound warning says so)."""
        return None


def part_name(result: Mapping) -> str:
    """A result's name and the part of its design it was tested on, as the HTML report and the
    API's summary show it: ``mobilenet_v2 + mlp [held out kermany]``."""
    held = Validation.of(result).held_out
    return result_name(result) + (f" [held out {held}]" if held is not None else "")


def presentation_of(result: Mapping) -> type[Presentation]:
    """How a result (its JSON) is shown, by the kind of design that validated it."""
    return PRESENTATIONS[Validation.of(result).kind]


class CrossValidation(Presentation):
    kind: ClassVar[str] = CROSS_VALIDATION
    summary_title: ClassVar[str] = (
        f"Cross-validated heads: pooled out-of-fold [95% CI] (per fold: {flag('json')})"
    )

    @classmethod
    def describe(cls, result: Mapping) -> str:
        cv = Protocol.of(result)
        if cv.folds is None or cv.grouped is None:
            raise KeyError("cv")  # a document of another version: the caller shows its JSON
        unit = str(cv.unit)
        if not cv.grouped:
            split = "StratifiedKFold by image (no patient grouping: a patient's films can sit on "
            split += "both sides of a split)"
        else:
            kept = (
                "patient"
                if unit.startswith("patient")
                else "duplicate group"
                if unit.startswith("image")
                else f"{unit} value"
            )
            split = f"{cv.scheme} by {unit} (no {kept} on both sides of a split)"
        return (
            f"{cv.folds}-fold cross-validation, stratified by class, {cv.repeats} "
            f"repeat(s), seed {cv.seed}: {split}; CIs of pooled out-of-fold values"
        )

    @classmethod
    def slug(cls, result: Mapping) -> str:
        cv, name = Protocol.of(result), slug(result["task"]["name"])
        if cv.grouped and cv.unit not in ("patient", None):
            return f"{name}-by-{slug(cv.unit)}"
        return name if cv.grouped is not False else f"{name}-by-image"


class LeaveOneOut(Presentation):
    kind: ClassVar[str] = "leave-one-out"
    part_header: ClassVar[str | None] = "held out"

    @classmethod
    def describe(cls, result: Mapping) -> str:
        column = Validation.of(result).column
        return f"leave one {column} out (train on the others, test on each)"

    @classmethod
    def slug(cls, result: Mapping) -> str:
        held = str(Validation.of(result).held_out)
        return f"{slug(result['task']['name'])}-without-{slug(held)}"

    @classmethod
    def forest_slug(cls, result: Mapping) -> str:
        column = str(Validation.of(result).column)
        return f"{slug(result['task']['name'])}-leave-out-{slug(column)}"

    @classmethod
    def held_out_column(cls, result: Mapping) -> str | None:
        return str(Validation.of(result).column)


class ExternalTest(Presentation):
    kind: ClassVar[str] = "external"

    @classmethod
    def describe(cls, result: Mapping) -> str:
        validation = Validation.of(result)
        return (
            f"external test set ({'; '.join(validation.test_where or ())}): "
            f"{validation.n_train} training rows, {validation.n_test} test rows"
        )

    @classmethod
    def slug(cls, result: Mapping) -> str:
        where = " ".join(Validation.of(result).test_where or ())
        return f"{slug(result['task']['name'])}-test-{slug(where)}"
