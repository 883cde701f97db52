"""Turn a store's rows into one classification task: X, integer y, class names and groups.

The order is fixed and documented: metadata filter (``--where``) -> exclusion file -> merges ->
class subset -> one-vs-rest. All validation of the task happens here, so later code can trust
that X is finite and at least two classes are left.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cxr.classify.folds import patient_groups
from cxr.classify.settings import TARGET, flag
from cxr.errors import CxrError
from cxr.settings import listed
from cxr.store import FeatureSet
from cxr.store.exclusions import Exclusions


@dataclass(frozen=True)
class Condition:
    """One ``--where``: a row passes if ANY alternative ``column=v1,v2`` matches it.

    ``label=covid | dataset=kermany`` keeps every COVID-19 image and the Kermany images of the
    other classes (the paper's composition). Several ``--where`` options must all pass.
    """

    alternatives: tuple[tuple[str, tuple[str, ...]], ...]

    @classmethod
    def parse(cls, text: str, option: str = "`where`") -> Condition:
        try:
            return cls(tuple(_assignment(part, option) for part in text.split("|")))
        except CxrError:
            raise CxrError(f"{option} {text!r}: expected COLUMN=v1,v2[ | COLUMN=v3]") from None

    def mask(self, fs: FeatureSet) -> np.ndarray:
        keep = np.zeros(len(fs), dtype=bool)
        for column, values in self.alternatives:
            keep |= np.isin(fs.column(column), list(values))
        return keep

    def __str__(self) -> str:
        return " | ".join(f"{column}={','.join(values)}" for column, values in self.alternatives)


@dataclass(frozen=True)
class TaskSpec:
    """What to classify; every field is optional and empty means "all stored labels".

    Built from Python values (``merge={"pneumonia": ["bacterial", "viral"]}``, ``where`` as
    `Condition` values) and checked here, once; the CLI parses its own syntax with
    `from_options`.
    """

    classes: tuple[str, ...] = ()
    merge: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    binary: str | None = None
    where: tuple[Condition, ...] = ()
    exclude: Path | None = None
    target: str = TARGET  # any stored column; e.g. "dataset" probes for source shortcuts

    def __post_init__(self) -> None:
        classes = tuple(str(c).strip() for c in self.classes)
        if any(not c for c in classes):
            raise CxrError(f"`classes` {','.join(classes)!r}: expected comma-separated names")
        merge: dict[str, tuple[str, ...]] = {}
        owner: dict[str, str] = {}
        for new, olds in self.merge.items():
            olds = (olds,) if isinstance(olds, str) else tuple(olds)
            if not str(new).strip() or not olds:
                raise CxrError(f"`merge` {new}={','.join(olds)}: expected NAME=a,b[,...]")
            for old in olds:
                if owner.get(old, new) != new:
                    raise CxrError(
                        f"`merge`: class {old!r} is merged into both {owner[old]!r} and {new!r}"
                    )
                owner[old] = new
            merge[str(new).strip()] = tuple(dict.fromkeys(olds))
        object.__setattr__(self, "classes", classes)
        object.__setattr__(self, "merge", merge)
        object.__setattr__(self, "binary", self.binary or None)
        object.__setattr__(self, "where", tuple(self.where))
        object.__setattr__(self, "exclude", Path(self.exclude) if self.exclude else None)

    @classmethod
    def from_options(
        cls,
        classes: str | Sequence[str] | None = None,
        merge: Mapping[str, Sequence[str]] | Sequence[str] | None = None,
        binary: str | None = None,
        where: Sequence[str | Condition] | None = None,
        exclude: Path | str | None = None,
        target: str = TARGET,
    ) -> TaskSpec:
        """The task from the settings, as Python values or the CLI's syntax: ``a,b,c``,
        ``new=a,b`` (repeatable), ``col=v1,v2 | col2=v3``."""
        return cls(
            classes=listed(classes, "classes"),
            merge={new: (o,) if isinstance(o, str) else tuple(o) for new, o in merge.items()}
            if isinstance(merge, Mapping)
            else _merges([merge] if isinstance(merge, str) else merge or ()),
            binary=binary or None,
            where=conditions(where, "`where`"),
            exclude=Path(exclude) if exclude else None,
            target=target,
        )

    @classmethod
    def from_dict(cls, document: Mapping) -> TaskSpec:
        """The inverse of ``to_dict`` (a model file's task)."""
        exclude = document.get("exclude")
        return cls(
            classes=tuple(document.get("classes") or ()),
            merge={k: tuple(v) for k, v in (document.get("merge") or {}).items()},
            binary=document.get("binary"),
            where=tuple(Condition.parse(w) for w in document.get("where") or ()),
            exclude=Path(exclude) if exclude else None,
            target=str(document.get("target") or TARGET),
        )

    def to_dict(self) -> dict:
        return {
            "classes": list(self.classes),
            "merge": {k: list(v) for k, v in self.merge.items()},
            "binary": self.binary,
            "where": [str(condition) for condition in self.where],
            "exclude": str(self.exclude) if self.exclude else None,
            "target": self.target,
        }


@dataclass(frozen=True)
class TaskData:
    """Rows selected for one task, aligned: ``X[i]``, ``y[i]``, ``groups[i]``, ``ids[i]``."""

    source: Path
    X: np.ndarray
    y: np.ndarray  # int index into classes
    classes: tuple[str, ...]
    groups: np.ndarray  # patient id per row ("" where unknown), or an --exclude file's group
    ids: np.ndarray
    paths: np.ndarray
    missing_ids: int = 0  # selected rows without a stored patient id (each its own group)
    columns: Mapping[str, np.ndarray] = field(default_factory=dict)  # stored columns, aligned
    excluded: int = 0  # rows --exclude dropped
    regrouped: int = 0  # rows --exclude put in another group (with their copies)

    def column(self, name: str, option: str = "") -> np.ndarray:
        """A stored column (label, source, dataset, view, ...) of the selected rows."""
        if name not in self.columns:
            asked = f"{option} {name}: " if option else ""
            raise CxrError(
                f"{self.source}: {asked}no column {name!r}; available: {', '.join(self.columns)}"
            )
        return self.columns[name]

    @property
    def has_groups(self) -> bool:
        return bool(np.all(self.groups != ""))

    @property
    def patients(self) -> np.ndarray | None:
        """The groups folds keep together and the bootstrap resamples (None: every row alone)."""
        return self.groups if self.has_groups else None

    @property
    def group_unit(self) -> str:
        """What one group is: a patient, or (no patient ids) a cluster from an exclusion file."""
        if self.missing_ids == 0:
            return "patient"
        if self.missing_ids < len(self.y):
            return "patient (image where no id)"
        return f"image (duplicate groups from {flag('exclude')})"

    @property
    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.y, minlength=len(self.classes))
        return {c: int(n) for c, n in zip(self.classes, counts, strict=True)}

    def rows_sha256(self) -> str:
        """Digest of the selected rows (image id and task label, in order)."""
        return rows_digest(self.ids, np.asarray(self.classes, dtype=object)[self.y])


def rows_digest(ids: np.ndarray, labels: np.ndarray) -> str:
    digest = hashlib.sha256()
    for row_id, label in zip(ids, labels, strict=True):
        digest.update(f"{row_id}\t{label}\n".encode())
    return digest.hexdigest()


def _names(text: str, option: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if text.strip() and not names:
        raise CxrError(f"{option} {text!r}: expected comma-separated names")
    return names


def conditions(values: Sequence[str | Condition] | None, option: str) -> tuple[Condition, ...]:
    """``where``-style conditions: `Condition` values, or their text (``dataset=kermany``)."""
    if isinstance(values, str | Condition):
        values = [values]
    return tuple(
        v if isinstance(v, Condition) else Condition.parse(str(v), option) for v in values or ()
    )


def _merges(texts: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """``--merge p=a --merge p=b`` is ``p=a,b``: repeating a name adds to it, never replaces it
    (a class merged into two names is refused by `TaskSpec`)."""
    merged: dict[str, tuple[str, ...]] = {}
    for text in texts:
        new, olds = _assignment(text, "`merge`")
        merged[new] = merged.get(new, ()) + olds
    return merged


def _assignment(text: str, option: str) -> tuple[str, tuple[str, ...]]:
    key, sep, values = text.partition("=")
    names = _names(values, option)
    if not sep or not key.strip() or not names:
        raise CxrError(f"{option} {text!r}: expected NAME=a,b[,...]")
    return key.strip(), names


def select(fs: FeatureSet, spec: TaskSpec) -> TaskData:
    """Apply the task to one store and validate the result (CxrError naming the store)."""
    name = str(fs.path)
    if spec.where:
        full = fs
        fs = fs.take(np.flatnonzero(np.logical_and.reduce([c.mask(fs) for c in spec.where])))
        if not len(fs):
            raise CxrError(
                f"{name}: no rows match `where` {'; '.join(map(str, spec.where))} "
                f"({_existing(full, spec.where)})"
            )
    groups = patient_groups(fs.patient_ids, fs.ids)
    excluded = regrouped = 0
    if spec.exclude is not None:
        exclusions = Exclusions.read(spec.exclude)
        before = groups
        groups = exclusions.regroup(fs.ids, groups)
        keep = ~exclusions.dropped(fs.ids, fs.rows["path"])
        excluded, regrouped = int(np.sum(~keep)), int(np.sum((groups != before) & keep))
        fs, groups = fs.take(np.flatnonzero(keep)), groups[keep]
    labels = np.asarray(fs.column(spec.target), dtype=object).copy()
    stored = sorted(set(labels.tolist()))
    _check_known(name, "`merge`", [n for names in spec.merge.values() for n in names], stored)
    for new, olds in spec.merge.items():
        labels[np.isin(labels, list(olds))] = new
    available = sorted(set(labels.tolist()))
    if spec.classes:
        _check_known(name, "`classes`", spec.classes, available)
        keep = np.isin(labels, list(spec.classes))
        fs, groups, labels = fs.take(np.flatnonzero(keep)), groups[keep], labels[keep]
    present = set(labels.tolist())  # --classes order is the report's order; otherwise sorted
    classes = tuple(c for c in spec.classes if c in present) or tuple(sorted(present))
    if spec.binary:
        _check_known(name, "`binary`", [spec.binary], list(classes))
        negative = f"non-{spec.binary}"
        labels = np.where(labels == spec.binary, spec.binary, negative).astype(object)
        classes = (negative, spec.binary)  # positive class last, as in sklearn's binary AUC
    if len(classes) < 2:
        raise CxrError(
            f"{name}: only {len(classes)} class left after filtering ({', '.join(classes)})"
        )
    X = fs.X
    finite = np.isfinite(X).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise CxrError(
            f"{name}: {len(bad)} row(s) have NaN or infinite features "
            f"(first: {fs.rows['path'][bad[0]]}); re-extract or `exclude` them"
        )
    index = {c: i for i, c in enumerate(classes)}
    y = np.fromiter((index[v] for v in labels), dtype=np.int64, count=len(labels))
    missing = int(np.sum(fs.patient_ids == ""))
    columns = {**fs.rows.columns, **fs.meta.columns}
    return TaskData(
        fs.path,
        X,
        y,
        classes,
        groups,
        fs.ids,
        fs.rows["path"],
        missing,
        columns,
        excluded,
        regrouped,
    )


def _existing(fs: FeatureSet, conditions: Sequence[Condition], shown: int = 12) -> str:
    """The values a --where could have named, e.g. ``source has: ieee8023, kermany``."""
    parts = []
    for column in dict.fromkeys(c for cond in conditions for c, _ in cond.alternatives):
        values = sorted(set(np.asarray(fs.column(column)).astype(str).tolist()))
        more = f", ... ({len(values)} values)" if len(values) > shown else ""
        parts.append(f"{column} has: {', '.join(values[:shown])}{more}")
    return "; ".join(parts)


def _check_known(where: str, option: str, names, available: list[str]) -> None:
    unknown = [n for n in names if n not in available]
    if unknown:
        raise CxrError(
            f"{where}: {option}: no class {', '.join(map(repr, unknown))}; "
            f"available: {', '.join(available)}"
        )
