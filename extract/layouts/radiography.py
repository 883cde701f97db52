"""The COVID-19 Radiography Database (Chowdhury, Rahman et al.; Kaggle, tawsifurrahman).

As shipped (version 4 and later)::

    COVID-19_Radiography_Dataset/
      COVID/images/COVID-1.png ...        COVID/masks/COVID-1.png ...
      Lung_Opacity/  Normal/  Viral Pneumonia/   (images/ and masks/ each)
      COVID.metadata.xlsx  Lung_Opacity.metadata.xlsx  Normal.metadata.xlsx  ...

Films are read from ``images/`` only (earlier versions: the class folder itself); the lung
mask of the same name in ``masks/`` (256 px where the films are 299: scaled, see
`cxr.extract.regions`) serves ``--region lungs-only`` and ``lungs-masked`` with no folder to
name. Labels: COVID -> covid, Normal -> normal, Viral Pneumonia -> viral, Lung_Opacity ->
lung_opacity (``--label-map`` changes them). The sheets' ``FILE NAME`` and ``URL`` columns
give each film's ``source`` (the site or repository its film came from: sirm.org,
github.com/ieee8023/..., kaggle.com/...); their names differ in case from the files
(``NORMAL-1`` for ``Normal-1.png``), so they are matched without regard to case. The database
ships no patient ids: folds then group by film, and the report says so.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

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
from cxr.extract.layouts.sheets import read_sheet

LABELS = (
    ("lung_opacity", "lung_opacity"),
    ("lung opacity", "lung_opacity"),
    ("viral", "viral"),
    ("covid", "covid"),
    ("normal", "normal"),
)
# Repositories are named by owner/name, not by the host they share.
HOSTS_BY_PATH = ("github.com", "kaggle.com", "figshare.com")


class Radiography(Layout):
    name = "covid-radiography"
    reads = (
        "films from images/, labels from class folders, lung masks from masks/, sources from "
        "the metadata sheets"
    )

    @classmethod
    def recognise(cls, root: Path) -> bool:
        folders = [d for d in visible(root) if d.is_dir()] if root.is_dir() else []
        with_images = [d for d in folders if subfolder(d, "images") and subfolder(d, "masks")]
        sheets = [f for f in root.glob("*.metadata.xlsx")] if root.is_dir() else []
        return bool(with_images) or (bool(sheets) and bool(folders))

    def read(self, root: Path, options: ReadOptions) -> Listing:
        pairs, notes, unlabelled = [], junk_note(root), Counter[str]()
        sources, unsourced = self._sources(root, notes), 0
        for folder in (d for d in visible(root) if d.is_dir()):
            films = subfolder(folder, "images") or folder
            files = image_files(films, recursive=films is not folder)
            label = options.label(folder.name, LABELS, folder.name.casefold().replace(" ", "_"))
            if not label:  # --label-map NAME= leaves a class out
                unlabelled[folder.name] += len(files)
                continue
            masks = subfolder(folder, "masks")
            for file in files:
                source = sources.get((folder.name.casefold(), file.stem.casefold()), "")
                unsourced += not source
                mask = masks / file.name if masks is not None else None
                pairs.append(
                    entry(
                        root,
                        file,
                        label,
                        source=source,
                        mask=mask if mask is not None and mask.exists() else None,
                    )
                )
        if unlabelled:
            notes.append(f"left out (`label_map`): {counted(unlabelled)} film(s)")
        if unsourced and sources:
            notes.append(f"{unsourced} film(s) have no row in the metadata sheets: no source")
        notes.append(
            "no patient ids (the database ships none): folds group by film, so one patient's "
            "films may fall on both sides"
        )
        if not pairs:
            raise CxrError(f"{root}: no films in the class folders' images/")
        entries, rejects = split_entries(pairs)
        return Listing(self.name, self.reads, root, entries, rejects, notes=notes)

    @staticmethod
    def _sources(root: Path, notes: list[str]) -> dict[tuple[str, str], str]:
        """(class folder, file stem) -> source, from every ``<class>.metadata.xlsx`` (or
        ``.csv``); a sheet that cannot be read costs its sources, named once."""
        found: dict[tuple[str, str], str] = {}
        for sheet in sorted([*root.glob("*.metadata.xlsx"), *root.glob("*.metadata.csv")]):
            folder = sheet.name.rsplit(".metadata.", 1)[0].casefold()
            try:
                rows = read_sheet(sheet)
            except CxrError as exc:
                notes.append(f"{exc}: its films have no source")
                continue
            for row in rows:
                name = Path(row.get("FILE NAME", "")).stem.casefold()
                if name:
                    found[(folder, name)] = source_of(row.get("URL", ""))
        return found


def source_of(url: str) -> str:
    """A short name for where a film came from: its site (``sirm.org``), or the repository on
    a host of many (``github.com/ieee8023/covid-chestxray-dataset``)."""
    parts = urlsplit(url.strip() if "//" in url else f"//{url.strip()}")
    host = (parts.hostname or "").removeprefix("www.")
    if host not in HOSTS_BY_PATH:
        return host
    path = [p for p in parts.path.split("/") if p and p not in ("c", "datasets")]
    return "/".join([host, *path[:2]])
