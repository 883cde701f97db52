"""Rich tables of stage 1's commands: `cxr features`, `cxr manifest` and `cxr backbones`, each
drawn from the command's JSON document (what ``--json`` writes). Text from files and users
(paths, names, headers) is printed as text, never as Rich markup. No TensorFlow."""

from __future__ import annotations

from functools import partial

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from cxr.settings import flag


def render_features(document: dict, console: Console) -> None:
    table = Table(title="Feature stores")
    for column in ("backbone", "new", "cached", "rejected", "dim", "seconds", "store"):
        left = column in ("backbone", "store")
        table.add_column(column, justify="left" if left else "right", overflow="fold")
    for s in document["stores"]:
        cells = (
            s["backbone"],
            s["new"],
            s["cached"],
            s["rejected"],
            s["dim"],
            f"{s['seconds']:.1f}",
        )
        store = s["path"] + ("" if s["published"] else " (unchanged)")
        table.add_row(*(Text(str(c)) for c in (*cells, store)))
    console.print(table)


def render_manifest(document: dict, console: Console) -> None:
    ids = (
        f"pseudonymised with {document['key']}: keep it private, and keep it, since the same key "
        "gives the same ids"
        if document["pseudonymised"]
        else f"real ({flag('keep_ids')}: do not share)"
    )
    text = partial(console.print, highlight=False, soft_wrap=True, markup=False)  # names: text
    text(
        f"Wrote {document['out']}: {document['rows']} rows, {document['dicom']} DICOM headers "
        f"read, {document['with_patient_id']} with a patient id ({ids})."
    )
    filled = document["filled"]
    text(
        "Rows with a value, per column: "
        + ", ".join(f"{c} {filled.get(c, 0)}" for c in document["columns"])
    )
    if document["dropped"]:
        text(
            f"Dropped (not on the allow-list of shareable columns; {flag('keep_ids')} keeps them): "
            + ", ".join(document["dropped"])
        )
    for path, reason in document["unreadable"].items():
        console.print(
            f"[yellow]unreadable header:[/] {escape(path)}: {escape(reason)}", highlight=False
        )


def render_backbones(document: dict, console: Console) -> None:
    table = Table(title="Backbones")
    for col in ("name", "input", "dim", "keras constructor"):
        table.add_column(col)
    table.add_column("ImageNet weight file", overflow="fold")  # offline users copy this name
    for spec in document["backbones"]:
        cells = (spec["name"], spec["input_size"], spec["dim"], spec["constructor"])
        table.add_row(*(Text(str(c)) for c in (*cells, spec["weights_file"])))
    console.print(table)
