"""A manifest: a CSV with a row per film, its columns named by role.

``path`` and ``label`` are required, ``patient_id`` and ``source`` optional, every other column
is kept as metadata. A table whose columns have other names (a hospital export, a collection's
own sheet) is read with ``--column ROLE=NAME`` (``--column label=diagnosis``), and patient ids
hidden in file names with ``--patient-from-name REGEX``: no script to write for a CSV that
exists. Cells are read through ``unescape_cell``, the inverse of the spreadsheet escaping that
`cxr manifest` writes, so paths and labels come back as they were; a file listed twice, a row
without a label and a path that leaves the data folder are rejects, named.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

from cxr.errors import CxrError
from cxr.extract.dataset import MANIFEST_NAME, Entry, outside_data
from cxr.extract.layouts.base import Layout, Listing, ReadOptions, counted, unlisted
from cxr.files import printable, read_text, unescape_cell
from cxr.settings import flag

OUTSIDE = (
    f"outside the data folder ({{how}}); pass {flag('allow_outside_data')} to read files the "
    "manifest names there"  # a reject's reason: stored, and reported as the CLI prints it
)


class Manifest(Layout):
    """``DATA/manifest.csv`` or ``--manifest CSV``: rows of path, label[, patient_id, source,
    ...], paths relative to the data folder."""

    name = "manifest"
    reads = "rows of the manifest"

    def __init__(self, file: Path | None = None):
        self.file = file

    @classmethod
    def recognise(cls, root: Path) -> bool:
        return (root / MANIFEST_NAME).is_file()

    def read(self, root: Path, options: ReadOptions) -> Listing:
        file = self.file or root / MANIFEST_NAME
        if not root.is_dir():
            raise CxrError(f"{root}: data folder does not exist")
        columns, rows = read_table(file, "manifest")
        names = {role: options.column(role) for role in ("path", "label", "patient", "source")}
        missing = [n for role, n in names.items() if role in ("path", "label") and n not in columns]
        if missing:
            raise CxrError(
                f"{file}: missing required column(s) {', '.join(missing)} (has: "
                f"{', '.join(columns) or 'none'}); name yours with `columns` path=NAME, "
                "`columns` label=NAME"
            )
        for role in ("patient", "source"):
            if role in dict(options.columns) and names[role] not in columns:
                raise CxrError(f"{file}: no column {names[role]} (`columns` {role}=...)")
        meta_columns = tuple(c for c in columns if c not in names.values())
        entries, rejects, seen, left = [], [], set(), Counter[str]()
        named = [Path(root, row[names["path"]].strip()) for row in rows]  # the rest: unlisted
        for row in rows:
            row = {c: v if c == names["path"] else printable(v) for c, v in row.items()}
            rel, label = row[names["path"]].strip(), row[names["label"]].strip()
            if label and not options.label(label, (), label):
                left[label] += 1
                continue
            item = Entry(
                path=rel,
                file=Path(rel) if Path(rel).is_absolute() else root / rel,
                label=options.label(label, (), label),
                patient_id=row.get(names["patient"], "").strip() or options.patient_of(rel),
                source=row.get(names["source"], "").strip(),
                meta={c: row[c] for c in meta_columns},
            )
            if rel in seen:
                rejects.append((item, "listed twice in the manifest"))
            elif not item.label:
                rejects.append((item, "no label in the manifest"))
            elif "\0" in rel:
                rejects.append((item, "the manifest's path holds a NUL character"))
            elif outside_data(rel) and not options.allow_outside:
                rejects.append((item, OUTSIDE.format(how=outside_data(rel))))
            else:
                seen.add(rel)
                entries.append(item)
        return Listing(
            self.name,
            f"rows of {file.name}"
            + (", patients from file names" if options.patient_from_name else ""),
            root,
            entries,
            rejects,
            meta_columns,
            manifest=file,
            notes=[f"left out (`label_map`): {counted(left)} row(s)"] if left else [],
            unlisted=unlisted([root], named, root),
        )


def read_table(file: Path, what: str) -> tuple[tuple[str, ...], list[dict[str, str]]]:
    """A CSV's columns and rows (cells unescaped); a ``;`` or tab separated export (a European
    spreadsheet's) is read as such. CxrError naming the file when it cannot be read."""
    if not file.is_file():
        raise CxrError(f"{file}: {what} does not exist")
    text = read_text(file, what)
    first = text.partition("\n")[0]
    delimiter = max(",;\t", key=first.count) if "," not in first else ","
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
        columns = tuple(unescape_cell(c).strip() for c in reader.fieldnames or ())
        reader.fieldnames = list(columns)
        rows = [{c: unescape_cell(r.get(c) or "") for c in columns} for r in reader]
    except csv.Error as exc:
        raise CxrError(f"{file}: cannot read the {what} ({exc})") from None
    if not rows:
        raise CxrError(f"{file}: the {what} lists no images")
    return columns, rows
