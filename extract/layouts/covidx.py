"""COVIDx CXR (Wang, Lin & Wong, COVID-Net; Kaggle, andyczhao).

As shipped::

    train/  test/  [val/]                  the films
    train.txt  test.txt  [val.txt]         (or train_COVIDx9A.txt, test_COVIDx_CXR-3A.txt, ...)

Each line of a label file is ``patient_id filename class [source]`` (older versions have no
source). Read: the film ``<split>/<filename>``, its patient, its label (positive -> covid,
negative -> non-covid; COVID-19 -> covid, normal, pneumonia as they are; ``--label-map``
changes them), its source (cohen, fig1, actmed, sirm, rsna, ricord, bimcv, ...) and the split
the label file names, as a ``split`` column. Two label files for one split (the A and B files
of one version) are refused: keep the one you mean beside the folders. COVIDx pools many
sources, unevenly across classes: the source is the shortcut to test (``--leave-out
source``), and its official split shares patients between train and test.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from cxr.errors import CxrError
from cxr.extract.dataset import Entry, shown_name
from cxr.extract.layouts.base import (
    Layout,
    Listing,
    ReadOptions,
    counted,
    junk_note,
    unlisted,
    visible,
)
from cxr.extract.layouts.folders import SPLITS, split_name
from cxr.files import open_regular, read_text

LABELS = (
    ("positive", "covid"),
    ("negative", "non-covid"),
    ("covid-19", "covid"),
    ("covid", "covid"),
    ("normal", "normal"),
    ("pneumonia", "pneumonia"),
)
KNOWN = {key for key, _ in LABELS}


class Covidx(Layout):
    name = "covidx"
    reads = "labels, patients and sources from the label files, split from which file"

    @classmethod
    def recognise(cls, root: Path) -> bool:
        return bool(_label_files(root)) and any(d.is_dir() and split_name(d) for d in visible(root))

    def read(self, root: Path, options: ReadOptions) -> Listing:
        files = _label_files(root)
        by_split: dict[str, list[Path]] = {}
        for file in files:
            by_split.setdefault(_split_of(file), []).append(file)
        for split, named in by_split.items():
            if len(named) > 1:
                raise CxrError(
                    f"{root}: {' and '.join(f.name for f in named)} both label the {split} films;"
                    " keep the one you mean beside the folders (the A files have three classes,"
                    " the B files positive/negative)"
                )
        entries: list[Entry] = []
        rejects: list[tuple[Entry, str]] = []
        seen: set[str] = set()
        unlabelled: Counter = Counter()
        for split, (file,) in sorted(by_split.items()):
            folder = next(
                (d for d in visible(root) if d.is_dir() and d.name.casefold() == split), root
            )
            for number, line in enumerate(read_text(file, "label file").splitlines(), 1):
                if not line.strip():
                    continue
                parsed = _parse(line)
                if parsed is None:
                    raise CxrError(
                        f"{file}:{number}: not 'patient_id filename class [source]' ({line[:80]!r})"
                    )
                patient, name, finding, source = parsed
                label = options.label(finding, LABELS)
                if not label:
                    unlabelled[finding] += 1
                    continue
                film = folder / name
                path, problem = shown_name(film.relative_to(root).as_posix())
                item = Entry(
                    path=path,
                    file=film,
                    label=label,
                    patient_id=options.patient_of(name) or patient,
                    source=source,
                    meta={"split": split},
                )
                if problem:
                    rejects.append((item, problem))
                elif path in seen:
                    rejects.append((item, f"listed twice in {file.name}"))
                else:
                    seen.add(path)
                    entries.append(item)
        notes = junk_note(root)
        if unlabelled:
            notes.append(f"left out (`label_map`): {counted(unlabelled)} film(s)")
        folders = [d for d in visible(root) if d.is_dir() and split_name(d)]
        return Listing(
            self.name,
            self.reads,
            root,
            entries,
            rejects,
            ("split",),
            notes=notes,
            unlisted=unlisted(folders, [e.file for e in entries], root),
        )


def _label_files(root: Path) -> list[Path]:
    """``train*.txt``, ``test*.txt``, ``val*.txt`` beside the split folders."""
    if not root.is_dir():
        return []
    return [
        f
        for f in visible(root)
        if f.is_file() and f.suffix.lower() == ".txt" and _split_of(f) and _first_line_parses(f)
    ]


def _split_of(file: Path) -> str:
    """The split a label file's name starts with (``train_COVIDx9A.txt``: train)."""
    stem = file.stem.casefold()
    return next((s for s in sorted(SPLITS, key=len, reverse=True) if stem.startswith(s)), "")


def _first_line_parses(file: Path) -> bool:
    try:
        with open_regular(file) as fh:  # a FIFO named train.txt cannot block the look
            first = fh.read(4096).decode("utf-8", "replace").partition("\n")[0]
    except OSError:
        return False
    return _parse(first) is not None


def _parse(line: str) -> tuple[str, str, str, str] | None:
    """(patient, file name, class, source) of a label line; a file name may hold spaces, so
    the class is found from the end: ``pid name with spaces.png positive source``."""
    words = line.split()
    if len(words) >= 4 and words[-2].casefold() in KNOWN:
        return words[0], " ".join(words[1:-2]), words[-2], words[-1]
    if len(words) >= 3 and words[-1].casefold() in KNOWN:
        return words[0], " ".join(words[1:-1]), words[-1], ""
    return None
