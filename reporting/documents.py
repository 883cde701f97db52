"""The JSON documents a report is made of: read bounded, recognised by their content."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxr.errors import CxrError
from cxr.files import read_text

DOCUMENT_LIMIT = 256 << 20  # an evaluate JSON with --predictions on a large set stays below


@dataclass(frozen=True)
class Document:
    """One evaluate or audit document and the file it came from (figures resolve beside it)."""

    path: Path
    kind: str  # "evaluate" or "audit"
    data: dict[str, Any]


@dataclass(frozen=True)
class Documents:
    """The documents of one report, in the order given."""

    items: tuple[Document, ...] = field(default_factory=tuple)

    def of(self, kind: str) -> list[Document]:
        return [d for d in self.items if d.kind == kind]

    @property
    def evaluations(self) -> list[Document]:
        return self.of("evaluate")

    @property
    def audits(self) -> list[Document]:
        return self.of("audit")


# The keys, and their JSON types, that make a document one kind (checked before any rendering).
SHAPES: dict[str, dict[str, type]] = {
    "evaluate": {"results": list, "settings": dict, "provenance": dict},
    "audit": {"store": str, "counts": dict, "clusters": list, "probes": dict},
}


def kind_of(data: object) -> str | None:
    """``evaluate``, ``audit``, or None for anything else."""
    if not isinstance(data, dict):
        return None
    for kind, keys in SHAPES.items():
        if all(isinstance(data.get(k), t) for k, t in keys.items()):
            return kind
    return None


def read_document(path: Path) -> Document:
    """One document; CxrError naming the file and why it is not one (unreadable, not JSON,
    another kind of JSON)."""
    text = read_text(path, "JSON document", limit=DOCUMENT_LIMIT)
    try:
        data = json.loads(text)
        json.dumps(data, ensure_ascii=False).encode("utf-8")  # no lone surrogate anywhere
    except json.JSONDecodeError as exc:
        raise CxrError(f"{path}: not JSON (line {exc.lineno}: {exc.msg})") from None
    except UnicodeEncodeError as exc:
        text = exc.object[exc.start : exc.end].encode("utf-8", "backslashreplace").decode()
        raise CxrError(f"{path}: not a cxr document (it holds {text}, a lone surrogate)") from None
    except (ValueError, RecursionError) as exc:  # an integer of 5,000 digits, nesting
        raise CxrError(f"{path}: not JSON ({str(exc).split(';')[0]})") from None
    kind = kind_of(data)
    if kind is None:
        raise CxrError(
            f"{path}: not a cxr evaluate or audit document (written by --json of either)"
        )
    if kind == "evaluate" and not all(isinstance(r, dict) for r in data["results"]):
        raise CxrError(f"{path}: an evaluate document whose results are not objects")
    return Document(Path(path), kind, data)


def read_documents(paths: Sequence[Path]) -> Documents:
    """Every document; at least one evaluate or audit document."""
    if not paths:
        raise CxrError("no documents: give evaluate and/or audit JSON files")
    return Documents(tuple(read_document(Path(p)) for p in paths))
