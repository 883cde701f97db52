"""Cohen et al., the COVID-19 image data collection (github.com/ieee8023/covid-chestxray-dataset).

As shipped::

    images/   volumes/   annotations/   metadata.csv   (patientid, offset, sex, age, finding,
                                                        view, modality, folder, filename, url, ...)

Read: each row's film ``<folder>/<filename>``, its patient (``patientid``), its label from
``finding`` by the rules below (``--label-map TEXT=LABEL`` rules come first; ``TEXT=`` leaves
such rows out), and ``finding``, ``view``, ``sex``, ``age`` and ``offset`` (days since the
first symptoms) as columns; the source is the site the film was published on (its ``url``:
radiopaedia.org, sirm.org, a journal). Only frontal X-ray films are read (views PA and AP,
supine or erect): lateral views, CT slices and volumes are left out, and counted.

Labels (first match, case aside): ``COVID-19`` -> covid; ``Bacterial`` or a bacterium
(Streptococcus, Klebsiella, Mycoplasma, E.Coli, Legionella, Chlamydophila, Staphylococcus,
Nocardia) -> bacterial; ``Viral`` or a virus (SARS, MERS, Varicella, Influenza, Herpes) ->
viral; ``No Finding`` -> normal. Any other finding (fungal, tuberculosis, lipoid, "todo") is
left out, counted by finding. The collection gathers figures from publications: a film's
journal, its crop and its annotations are the shortcut to test.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from cxr.errors import CxrError
from cxr.extract.dataset import Entry, outside_data, shown_name
from cxr.extract.layouts.base import (
    Layout,
    Listing,
    ReadOptions,
    counted,
    has_image_suffix,
    junk_note,
    unlisted,
)
from cxr.extract.layouts.radiography import source_of
from cxr.extract.layouts.table import read_table

METADATA = "metadata.csv"
BACTERIA: tuple[str, ...] = ("bacterial", "streptococcus", "klebsiella", "mycoplasma", "e.coli")
BACTERIA += ("legionella", "chlamydophila", "staphylococcus", "nocardia")
VIRUSES = ("viral", "sars", "mers", "varicella", "influenza", "herpes")
LABELS = (
    ("covid-19", "covid"),
    *((name, "bacterial") for name in BACTERIA),
    *((name, "viral") for name in VIRUSES),
    ("no finding", "normal"),
)
COLUMNS = ("finding", "view", "sex", "age", "offset")


class Cohen(Layout):
    name = "cohen"
    reads = "films, patients, labels (from finding) and views from metadata.csv"

    @classmethod
    def recognise(cls, root: Path) -> bool:
        table = root / METADATA
        if not table.is_file():
            return False
        try:
            columns = read_table(table, "metadata")[0]
        except CxrError:
            return False
        return {"patientid", "finding", "filename"} <= {c.casefold() for c in columns}

    def read(self, root: Path, options: ReadOptions) -> Listing:
        table = root / METADATA
        columns, rows = read_table(table, "metadata")
        name = {c.casefold(): c for c in columns}  # Patientid in early versions

        def cell(row: dict[str, str], key: str) -> str:
            return row.get(name.get(key, key), "").strip()

        entries, rejects, seen = [], [], set()
        left: Counter = Counter()
        named = []  # every row's file, read or left out: the rest of images/ is unlisted
        for row in rows:
            rel = f"{cell(row, 'folder') or 'images'}/{cell(row, 'filename')}"
            named.append(root / rel)
            modality, view = cell(row, "modality"), cell(row, "view")
            if modality and modality.casefold() != "x-ray":
                left[f"modality {modality}"] += 1
                continue
            if not view.upper().startswith(("PA", "AP")):
                left[f"view {view or '(none)'}"] += 1
                continue
            if not has_image_suffix(Path(rel)):
                left["not an image file"] += 1
                continue
            finding = cell(row, "finding")
            label = options.label(finding, LABELS)
            if not label:
                left[f"finding {finding or '(none)'}"] += 1
                continue
            path, problem = shown_name(rel)
            item = Entry(
                path=path,
                file=root / rel,
                label=label,
                patient_id=options.patient_of(rel) or cell(row, "patientid"),
                source=source_of(cell(row, "url")),
                meta={c: cell(row, c) for c in COLUMNS},
            )
            if problem:
                rejects.append((item, problem))
            elif outside_data(rel) or "\0" in rel:
                rejects.append((item, "metadata.csv names a file outside the data folder"))
            elif rel in seen:
                rejects.append((item, "listed twice in metadata.csv"))
            else:
                seen.add(rel)
                entries.append(item)
        notes = junk_note(root)
        if left:
            notes.append(
                f"left out {sum(left.values())} row(s) of metadata.csv: {counted(left, 8)} "
                "(frontal X-ray films of covid/bacterial/viral/normal only; `label_map` adds "
                "findings)"
            )
        return Listing(
            self.name,
            self.reads,
            root,
            entries,
            rejects,
            COLUMNS,
            manifest=table,
            notes=notes,
            unlisted=unlisted([root / "images"], named, root),
        )
