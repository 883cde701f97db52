"""Class folders (``covid/``, ``normal/``, ...), and split folders of class folders.

Class folders are the layout of last resort, so they are where the traps are: folders named
like splits (``train/``, ``test/``) would become classes, and class folders that each hold
the same sub-folders (``images/``, ``masks/``) would embed masks as films. Both are refused
with the layout that reads them, never guessed; ``--layout folders`` reads the folders as
classes all the same.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from cxr.errors import CxrError
from cxr.extract.dataset import shown_name
from cxr.extract.layouts.base import (
    Layout,
    Listing,
    ReadOptions,
    counted,
    entry,
    image_files,
    junk_note,
    split_entries,
    visible,
)

SPLITS = {"train", "training", "test", "testing", "val", "valid", "validation", "dev", "holdout"}
MASKS = re.compile(r"(?i)^(.*[_ -])?(masks?|segmentations?|lung[_ -]?masks?)$")


def folders_of(root: Path) -> list[Path]:
    """The visible sub-folders of ``root`` (CxrError when it is not a folder)."""
    if not root.exists():
        raise CxrError(f"{root}: data folder does not exist")
    if not root.is_dir():
        raise CxrError(f"{root}: not a folder (expected one sub-folder per class, or `manifest`)")
    return [d for d in visible(root) if d.is_dir()]


def split_name(folder: Path) -> str:
    """The split a folder's name says (``train``, ...), "" when it says none."""
    name = folder.name.casefold()
    return name if name in SPLITS else ""


class ClassFolders(Layout):
    """One sub-folder per class; every file below it is a film of that class. Patient ids come
    from DICOM headers (pseudonymised) or ``--patient-from-name``."""

    name = "folders"
    reads = "labels from class folders"

    def __init__(self, forced: bool = False, one_class: bool = False):
        self.forced = forced  # --layout folders: the user says these folders are classes
        self.one_class = one_class or forced  # a single class folder is no mistake

    @classmethod
    def recognise(cls, root: Path) -> bool:
        return True

    def read(self, root: Path, options: ReadOptions) -> Listing:
        classes = folders_of(root)
        if not self.forced:
            refuse_traps(root, classes)
        if not self.one_class:
            refuse_one_class(root, classes)
        by_case: dict[str, str] = {}
        for folder in classes:
            other = by_case.setdefault(folder.name.casefold(), folder.name)
            if other != folder.name:
                raise CxrError(
                    f"{root}: class folders {other}/ and {folder.name}/ differ only in case and "
                    "would be two classes; merge them into one folder"
                )
        pairs, notes, left = [], junk_note(root), Counter[str]()
        for folder in classes:
            label = options.label(folder.name, (), shown_name(folder.name)[0])
            files = image_files(folder)
            if not label:
                left[folder.name] += len(files)
                continue
            pairs += [entry(root, f, label, patient_id=options.patient_of(f.name)) for f in files]
        if left:
            notes.append(f"left out (`label_map`): {counted(left)} film(s)")
        if not pairs:
            raise CxrError(
                f"{root}: no images found (expected one sub-folder per class, e.g. covid/, normal/)"
            )
        entries, rejects = split_entries(pairs)
        reads = self.reads + (", patients from file names" if options.patient_from_name else "")
        return Listing(self.name, reads, root, entries, rejects, notes=notes, headers=True)


class SplitFolders(Layout):
    """Split folders (``train/``, ``test/``, ...) of class folders: the class folder is the
    label, the split folder a ``split`` column (the folds still group by patient; the split is
    for ``--test-where split=test``)."""

    name = "split-folders"
    reads = "labels from class folders, split from the folders above them"

    def read(self, root: Path, options: ReadOptions) -> Listing:
        splits = folders_of(root)
        others = [d.name for d in splits if not split_name(d)]
        if others:
            raise CxrError(
                f"{root}: `layout` split-folders reads split folders (train/, test/, val/, ...), "
                f"but {', '.join(o + '/' for o in others)} is not one"
            )
        pairs = []
        for split in splits:
            for folder in folders_of(split):
                label = options.label(folder.name, (), folder.name)
                for file in image_files(folder) if label else []:
                    meta = {"split": split.name}
                    patient = options.patient_of(file.name)
                    pairs.append(entry(root, file, label, patient_id=patient, meta=meta))
        if not pairs:
            raise CxrError(f"{root}: no images in class folders under its split folders")
        entries, rejects = split_entries(pairs)
        return Listing(
            self.name,
            self.reads + (", patients from file names" if options.patient_from_name else ""),
            root,
            entries,
            rejects,
            meta_columns=("split",),
            notes=junk_note(root),
            headers=True,
        )


def refuse_one_class(root: Path, classes: list[Path]) -> None:
    """Stop before a folder of films, or a folder that wraps one, becomes a one-class task:
    name what is there and the table beside it, if any."""
    if len(classes) > 1:
        return
    tables = [f.name for f in visible(root) if f.is_file() and f.suffix.lower() in (".csv", ".txt")]
    beside = f"; the labels may be in {', '.join(tables)} beside it (`manifest`)" if tables else ""
    if classes:
        raise CxrError(
            f"{root}: holds one folder, {classes[0].name}/, which would be the only class: point "
            f"DATA at the folder that holds the class folders{beside} (`layout` folders reads "
            "it as one class all the same)"
        )
    films = [f for f in visible(root) if f.is_file() and not f.name.endswith((".csv", ".txt"))]
    if films:
        raise CxrError(
            f"{root}: holds {len(films)} file(s) but no class folders: give their labels in a "
            f"manifest (`manifest` CSV with path,label){beside}, or put them in one folder per "
            "class"
        )


def refuse_traps(root: Path, classes: list[Path]) -> None:
    """Stop before class folders become the wrong task: split names as classes, masks as
    films, or every class cut into the same parts (CxrError naming the layout that reads it)."""
    splits = [d.name for d in classes if split_name(d)]
    if splits:
        inner = [d for d in classes if split_name(d) and any(c.is_dir() for c in visible(d))]
        how = (
            "`layout` split-folders reads the class folders inside them as labels and the split "
            "as a column"
            if inner
            else "they hold films but no class folders: give the labels in a manifest "
            "(`manifest`, with a split column)"
        )
        raise CxrError(
            f"{root}: {', '.join(s + '/' for s in splits)} {'is a' if len(splits) == 1 else 'are'}"
            f" split folder{'s' if len(splits) > 1 else ''}, not classes: {how} (`layout` "
            "folders reads them as classes all the same)"
        )
    parts = {d.name: sorted(c.name for c in visible(d) if c.is_dir()) for d in classes}
    masks = sorted({p for names in [*parts.values(), list(parts)] for p in names if MASKS.match(p)})
    if masks:
        raise CxrError(
            f"{root}: {', '.join(m + '/' for m in masks)} among the class folders: masks, not films"
            " (the COVID-19 Radiography Database's layout is read by `layout` covid-radiography;"
            " otherwise give the films in a manifest, and the masks with `region` lungs-only:DIR)"
        )
    shared = {tuple(names) for names in parts.values()}
    if len(classes) > 1 and len(shared) == 1 and next(iter(shared)):
        names = ", ".join(p + "/" for p in next(iter(shared)))
        raise CxrError(
            f"{root}: every class folder holds the same sub-folders ({names}): parts of each "
            "class, not its films alone. Give the films in a manifest, or `layout` folders to "
            "read every file below each class folder as its film"
        )
