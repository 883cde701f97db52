"""Kermany et al. (2018), "Chest X-Ray Images (Pneumonia)" (Mendeley; Kaggle, paultimothymooney).

As shipped::

    chest_xray/
      train/NORMAL/IM-0115-0001.jpeg  NORMAL2-IM-0427-0001.jpeg ...
      train/PNEUMONIA/person1000_bacteria_2931.jpeg  person1000_virus_1681.jpeg ...
      test/...  val/...
      chest_xray/...  __MACOSX/...    (the Kaggle archive's second copy, and macOS junk)

Read: labels normal, bacterial and viral (the paper's classes: PNEUMONIA films are bacterial or
viral by their names; ``--merge pneumonia=bacterial,viral`` at evaluation gives Kermany's two),
the patient from the name, and the split folder as a ``split`` column (``chest_xray/train``
given alone: train). Patients: ``person1000_bacteria`` and ``person1000_virus`` are two,
because Kermany numbered each kind apart (its split, made by patient, puts the two on different
sides); a normal film's ``IM-0115`` covers ``IM-0115-0001.jpeg`` and ``IM-0115-0001-0002.jpeg``
alike (where a name leaves it open, one patient: the stricter grouping). Anything else beside
the split folders (the nested copy, ``__MACOSX``) is ignored, and named. The films are
children's (1 to 5 years, one hospital in Guangzhou): beside adult COVID-19 films, age and
hospital are a shortcut.
"""

from __future__ import annotations

import itertools
import os
import re
from collections import Counter
from pathlib import Path

from cxr.errors import CxrError
from cxr.extract.layouts.base import (
    Layout,
    Listing,
    ReadOptions,
    counted,
    entry,
    image_files,
    junk_note,
    split_entries,
    subfolder,
    visible,
)
from cxr.extract.layouts.folders import split_name

CLASSES = ("NORMAL", "PNEUMONIA")
PATIENT = re.compile(r"^(person\d+_(?:bacteria|virus))_|^((?:NORMAL\d*-)?IM-\d+)-\d+", re.I)
LABELS = (("bacteria", "bacterial"), ("virus", "viral"), ("normal", "normal"))
NAMED = re.compile(r"^person\d+_(bacteria|virus)_\d+", re.IGNORECASE)
PEEK = 50  # files looked at to recognise the names


class Kermany(Layout):
    name = "kermany"
    reads = "labels from class folders and file names, patients from file names, split from folders"

    @classmethod
    def recognise(cls, root: Path) -> bool:
        """Split folders (or the root) holding NORMAL/ and PNEUMONIA/, whose films are named as
        Kermany named them (``person1000_bacteria_2931``): other sets share the folder names."""
        if not root.is_dir():
            return False
        candidates = [d for d in visible(root) if d.is_dir() and split_name(d)] or [root]
        return any(
            all(subfolder(d, c) for c in CLASSES) and _named_like_kermany(subfolder(d, CLASSES[1]))
            for d in candidates
        )

    def read(self, root: Path, options: ReadOptions) -> Listing:
        folders = [d for d in visible(root) if d.is_dir()]
        splits = [d for d in folders if split_name(d)] or [root]  # one split downloaded alone
        ignored = [d.name + "/" for d in folders if not split_name(d)] if splits != [root] else []
        pairs, nameless, unlabelled = [], 0, Counter[str]()
        for split in splits:
            for cls in CLASSES:
                folder = subfolder(split, cls)
                for file in image_files(folder) if folder is not None else []:
                    label = options.label(f"{cls} {file.stem}", LABELS, "pneumonia")
                    if label == "":
                        unlabelled[cls] += 1
                        continue
                    found = PATIENT.match(file.name)
                    patient = options.patient_of(file.name) or (
                        next(g for g in found.groups() if g) if found else ""
                    )
                    nameless += not patient
                    meta = {"split": split_name(split)}  # chest_xray/train given alone: train
                    pairs.append(
                        entry(
                            root,
                            file,
                            label,
                            patient_id=patient,
                            source="kermany",
                            meta=meta,
                        )
                    )
        if not pairs:
            raise CxrError(f"{root}: no films in NORMAL/ or PNEUMONIA/")
        notes = junk_note(root)
        if ignored:
            notes.append(
                f"ignored {', '.join(ignored)} beside the split folders (the Kaggle archive ships "
                "a second copy of the films as chest_xray/)"
            )
        if unlabelled:
            notes.append(f"left out (`label_map`): {counted(unlabelled)} film(s)")
        if nameless:
            notes.append(f"{nameless} film(s) have no patient in their names: each its own")
        entries, rejects = split_entries(pairs)
        return Listing(self.name, self.reads, root, entries, rejects, ("split",), notes=notes)


def _named_like_kermany(folder: Path | None) -> bool:
    if folder is None:
        return False
    with os.scandir(folder) as found:
        return any(NAMED.match(e.name) for e in itertools.islice(found, PEEK))
