"""Discover a data set: its layout read (`cxr.extract.layouts`), every file fingerprinted.

User errors that make the whole run pointless (a missing folder, a manifest without its
columns, a layout that would make the wrong task) raise CxrError before any model is loaded;
a single bad file only becomes a reject with a reason. What the layout read and left out is
said in ``Discovery.reads`` and ``Discovery.notes``, and so are files much smaller than the
films beside them (a mask or an icon among films: read, and rejected if it is no film).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from cxr.errors import CxrError
from cxr.extract.dataset import Discovery, Entry, hash_entries, shown_name, with_header
from cxr.extract.hashing import HashCache
from cxr.extract.headers import COLUMNS as HEADER_COLUMNS
from cxr.extract.headers import HeaderCache
from cxr.extract.layouts import AUTO, ReadOptions, choose

SMALL = 20  # a file this many times smaller than its folder's median is named
NEIGHBOURS = 8  # films in a folder before its median means anything


def discover(
    data: Path | None,
    manifest: Path | None,
    hashes: HashCache | None = None,
    *,
    options: ReadOptions | None = None,
    layout: str = AUTO,
    headers: HeaderCache | None = None,
) -> Discovery:
    """List the data set as its ``layout`` reads it (recognised when "auto"), then hash every
    file; files that ``hashes`` knows unchanged are not read. With ``headers``, DICOM films of
    layouts that name no patients get their header's columns, the patient id and the
    institution pseudonymised."""
    for given in (data, manifest):
        if given is not None and shown_name(str(given))[1]:
            raise CxrError(f"{shown_name(str(given))[0]}: {shown_name(str(given))[1]}")
    options = options or ReadOptions()
    reader, root, inside = choose(data, manifest, layout)
    listing = reader.read(root, options)
    entries, unusable, sizes = hash_entries(listing.entries, hashes or HashCache())
    meta_columns, header_ids = listing.meta_columns, 0
    if listing.headers and headers is not None:
        named = [entry.patient_id for entry in entries]
        entries = [with_header(entry, headers) for entry in entries]
        header_ids = sum(bool(e.patient_id) and not n for e, n in zip(entries, named, strict=True))
        if any(set(HEADER_COLUMNS) & entry.meta.keys() for entry in entries):
            meta_columns = tuple(dict.fromkeys((*meta_columns, *HEADER_COLUMNS)))
    return Discovery(
        root,
        entries,
        [entry.reject(reason) for entry, reason in listing.rejects] + unusable,
        listing.manifest,
        meta_columns,
        listing.unlisted,
        layout=listing.layout,
        reads=listing.reads,
        notes=tuple(
            ([inside] if inside else [])
            + listing.notes
            + _patients_from_names(listing.entries, options)
            + _small(entries, sizes)
        ),
        header_ids=header_ids,
    )


def _patients_from_names(entries: list[Entry], options: ReadOptions) -> list[str]:
    """What ``--patient-from-name`` found, counted; CxrError when it finds no patient at all
    (a pattern that matches nothing would leave every film its own patient, silently)."""
    if not options.patient_from_name or not entries:
        return []
    found = [options.patient_of(e.path) for e in entries]
    matched = [p for p in found if p]
    pattern = f"`patient_from_name` {options.patient_from_name}"
    if not matched:
        raise CxrError(
            f"{pattern}: finds no patient in any file name (e.g. {Path(entries[0].path).name})"
        )
    note = (
        f"{pattern}: {len(set(matched)):,} patient(s) in {len(matched):,} of {len(found):,} films"
    )
    if len(found) > len(matched):
        note += " (the others: each its own patient)"
    if len(set(matched)) == 1 and len(matched) > 1:
        note += "; one patient for all of them: is the pattern too wide?"
    return [note]


def _small(entries: list[Entry], sizes: list[int]) -> list[str]:
    """A note naming files far smaller than the median of their folder's files."""
    folders: dict[Path, list[tuple[int, Entry]]] = defaultdict(list)
    for entry, size in zip(entries, sizes, strict=True):
        folders[entry.file.parent].append((size, entry))
    small = []
    for files in folders.values():
        if len(files) >= NEIGHBOURS:
            median = statistics.median(size for size, _ in files)
            small += [(size, median, e) for size, e in files if size * SMALL < median]
    if not small:
        return []
    size, median, first = small[0]
    return [
        f"{len(small)} file(s) are far smaller than the films beside them (first: {first.path}, "
        f"{size:,} bytes against a median of {median:,.0f}): masks or icons? Each is rejected "
        "if it proves not to be a film"
    ]
