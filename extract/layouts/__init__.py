"""Readers for the layouts data sets are shipped in, one class per layout under one base.

``choose`` picks the reader: the one named (``--layout NAME``), else the first that recognises
the folder: a manifest (``DATA/manifest.csv``, or ``--manifest``), then the public collections
(Cohen's metadata.csv, COVIDx's label files, the COVID-19 Radiography Database, Kermany's
chest_xray), then class folders, which refuse what looks like a trap. A folder that only
wraps one other (an archive's top folder) is looked into, up to two levels.

Adding a layout: a `Layout` subclass in a module of its own, and its class in ``LAYOUTS``
(and in ``RECOGNISED`` if it can be recognised by its files).
"""

from __future__ import annotations

from pathlib import Path

from cxr.errors import CxrError
from cxr.extract.layouts.base import JUNK, Layout, Listing, ReadOptions, visible
from cxr.extract.layouts.cohen import Cohen
from cxr.extract.layouts.covidx import Covidx
from cxr.extract.layouts.folders import ClassFolders, SplitFolders
from cxr.extract.layouts.kermany import Kermany
from cxr.extract.layouts.radiography import Radiography
from cxr.extract.layouts.table import Manifest
from cxr.extract.settings import AUTO

__all__ = ["LAYOUTS", "Layout", "Listing", "ReadOptions", "choose"]

LAYOUTS: dict[str, type[Layout]] = {
    c.name: c for c in (ClassFolders, SplitFolders, Manifest, Radiography, Kermany, Covidx, Cohen)
}
RECOGNISED: tuple[type[Layout], ...] = (Manifest, Cohen, Covidx, Radiography, Kermany)
NAMES = (AUTO, *LAYOUTS)
WRAPPERS = 2  # levels of single-folder wrappers looked into


def choose(
    data: Path | None, manifest: Path | None, name: str = AUTO, *, for_manifest: bool = False
) -> tuple[Layout, Path, str]:
    """(the reader, the folder it reads, a note when that is a folder inside ``data``). With
    ``for_manifest`` (`cxr manifest`, which writes ``DATA/manifest.csv``), that file is not the
    data set, and one class folder is a start (its labels are edited next), not a mistake."""
    if name not in NAMES:
        raise CxrError(f"`layout` {name}: choose from {', '.join(NAMES)}")
    if manifest is not None:
        if name not in (AUTO, Manifest.name):
            raise CxrError(f"`manifest` is read by `layout` manifest, not `layout` {name}")
        return Manifest(manifest), data if data is not None else manifest.parent, ""
    if data is None:
        raise CxrError("give a data folder (class folders, a collection) or `manifest` CSV")
    if name == ClassFolders.name:
        return ClassFolders(forced=True), data, ""
    wanted = (LAYOUTS[name],) if name != AUTO else RECOGNISED
    if for_manifest and name == AUTO:
        wanted = tuple(c for c in wanted if c is not Manifest)
    for folder in _wrapped(data, tables=not for_manifest):
        found = next((c for c in wanted if c.recognise(folder)), None)
        if found is not None:
            inside = f"read {folder}, the folder inside {data}" if folder != data else ""
            return found(), folder, inside
    if name == AUTO:
        return ClassFolders(one_class=for_manifest), data, ""
    return LAYOUTS[name](), data, ""


def _wrapped(data: Path, tables: bool) -> list[Path]:
    """``data``, then the folder it alone holds (archive junk aside), and so on."""
    chain = [data]
    for _ in range(WRAPPERS):
        last = chain[-1]
        if not last.is_dir() or (tables and Manifest.recognise(last)):
            break
        inner = [c for c in visible(last) if c.name.casefold() not in JUNK]
        if len(inner) != 1 or not inner[0].is_dir():
            break
        chain.append(inner[0])
    return chain
