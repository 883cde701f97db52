"""The exclusion/merge file: `cxr audit --exclude-out` writes it, `cxr evaluate --exclude` reads it.

This module is its one owner (format, writing, reading, applying). Two forms are read, told
apart by content, not by file name:

- JSON, as written here::

      {"format": "cxr-exclusions/1", "exclude": [sha256 or path, ...], "groups": {sha256: group}}

  (``format`` and either key may be missing in a hand-written file);
- plain text: one image id (sha256) or stored path per line; blank lines and ``#`` comments.

What the audit puts in it:

- ``groups``: every duplicate cluster joins the patient groups of its members, transitively and
  for *all* rows of those patients (otherwise a patient's other films could still land in another
  fold than the copy). The merged group is named ``audit:<first member group>``. When some rows
  have no patient id, every row gets a group (its patient id, else ``image:<sha256>``): grouped CV
  needs a group on every row, and this keeps copies together even without patient ids.
- ``exclude``: every row of a cluster whose members carry two or more labels. Which label is right
  cannot be decided automatically, so all copies are dropped; re-label by hand to keep them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cxr.errors import CxrError

if TYPE_CHECKING:  # the audit's machinery is only needed to build a file, not to read one
    from cxr.audit.duplicates import Cluster

FORMAT = "cxr-exclusions/1"


@dataclass(frozen=True)
class Exclusions:
    """Images to drop (by sha256 or stored path) and patient-group overrides (by sha256)."""

    exclude: frozenset[str] = frozenset()
    groups: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "exclude": sorted(self.exclude),
            "groups": dict(sorted(self.groups.items())),
        }

    @classmethod
    def from_json(cls, document: Mapping) -> Exclusions:
        """The inverse of ``to_json``; ValueError/TypeError/AttributeError for another shape."""
        if document.get("format", FORMAT) != FORMAT:
            raise ValueError(f"unknown format {document['format']!r}, expected {FORMAT}")
        return cls(
            frozenset(str(v) for v in document.get("exclude", [])),
            {str(k): str(v) for k, v in document.get("groups", {}).items()},
        )

    def write(self, path: Path) -> None:
        try:
            Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n")
        except OSError as exc:
            raise CxrError(f"{path}: cannot write exclusion file ({exc.strerror})") from None

    @classmethod
    def read(cls, path: Path) -> Exclusions:
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise CxrError(f"{path}: cannot read exclusion file ({reason})") from None
        if not text.lstrip().startswith("{"):
            lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
            return cls(frozenset(line for line in lines if line))
        try:
            return cls.from_json(json.loads(text))
        except (ValueError, AttributeError, TypeError) as exc:
            raise CxrError(
                f'{path}: not an exclusion file; expected {{"exclude": [...], "groups": {{...}}}} '
                f"or one id per line ({exc})"
            ) from None

    def dropped(self, ids: np.ndarray, paths: np.ndarray) -> np.ndarray:
        """Boolean mask of the rows this file excludes (matched by id or by stored path)."""
        listed = list(self.exclude)
        return np.isin(ids, listed) | np.isin(paths, listed)

    def regroup(self, ids: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """The rows' groups with this file's overrides applied."""
        return np.asarray([self.groups.get(i, g) for i, g in zip(ids, groups, strict=True)], object)


def build(clusters: list[Cluster], ids: np.ndarray, patients: np.ndarray) -> Exclusions:
    """The audit's file: merged groups for every duplicate cluster, label conflicts dropped."""
    from cxr.audit.duplicates import UnionFind

    keys = np.asarray([p if p else f"image:{i}" for i, p in zip(ids, patients, strict=True)])
    names = sorted(set(keys.tolist()))
    index = {k: n for n, k in enumerate(names)}
    uf = UnionFind(len(names))
    for cluster in clusters:
        first = index[keys[cluster.rows[0]]]
        for row in cluster.rows[1:]:
            uf.union(first, index[keys[row]])
    root_name = {}
    for n, name in enumerate(names):  # names are sorted, so a root's first member names it
        root_name.setdefault(uf.find(n), name)
    members: dict[int, int] = {}
    for n in range(len(names)):
        members[uf.find(n)] = members.get(uf.find(n), 0) + 1
    every_row = not bool(np.all(patients != ""))
    groups = {}
    for row, key in enumerate(keys):
        root = uf.find(index[key])
        if members[root] > 1:
            groups[str(ids[row])] = f"audit:{root_name[root]}"
        elif every_row:
            groups[str(ids[row])] = str(key)
    exclude = frozenset(str(ids[r]) for c in clusters if "label" in c.conflicts for r in c.rows)
    return Exclusions(exclude, dict(sorted(groups.items())))
