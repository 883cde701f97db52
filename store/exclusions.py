"""The exclusion/merge file: `cxr audit --exclude-out` writes it, `cxr evaluate --exclude` reads it.

A data contract between the audit and stage 2, owned here (format, writing, reading, applying) so
that stage 2 reads it without importing the audit; what the audit puts in it is built by
`cxr.audit.exclusions.build`. Two forms are read, told apart by content, not by file name:

- JSON, as written here::

      {"format": "cxr-exclusions/1", "exclude": [sha256 or path, ...], "groups": {sha256: group}}

  (``format`` and either key may be missing in a hand-written file);
- plain text: one image id (sha256) or stored path per line; blank lines and ``#`` comments.

``groups`` overrides the patient group of an image (the audit joins duplicate copies into one
group); ``exclude`` drops images, by id or stored path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cxr.errors import CxrError
from cxr.files import read_text, write_atomic

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
        write_atomic(
            Path(path), (json.dumps(self.to_json(), indent=1) + "\n").encode(), "exclusion file"
        )

    @classmethod
    def read(cls, path: Path) -> Exclusions:
        text = read_text(Path(path), "exclusion file")
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
