"""Rich tables of `cxr info`: the stores of a features folder, drawn from its JSON document
(what ``--json`` writes: each store's `describe`, the damaged ones, unpublished batches)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text


def render_stores(document: dict, console: Console, features_dir: Path) -> None:
    stores = document["stores"]
    for item in document["damaged"]:
        console.print(
            f"[yellow]damaged:[/] {escape(item['error'])}", highlight=False, soft_wrap=True
        )
    for backbone, shards in document["unpublished"].items():
        console.print(
            f"[yellow]{escape(backbone)}: {shards} committed batch(es) of an interrupted run, no "
            "store published yet; run `cxr features` again to resume.[/]",
            highlight=False,
            soft_wrap=True,
        )
    if not stores:
        if not document["damaged"] and not document["unpublished"]:
            console.print(
                f"No stores in {features_dir}. Run `cxr features DATA` first.", markup=False
            )
        return
    table = Table(title=escape(f"Feature stores in {features_dir}"))
    for col in ("backbone", "rows", "dim", "weights", "runtime", "classes", "rejected"):
        table.add_column(col)
    for s in stores:
        classes = ", ".join(f"{k} {v}" for k, v in s["classes"].items())
        runtime = s["runtime"]
        if s["runtime_max_abs_diff"]:
            runtime += f" (probe {s['runtime_max_abs_diff']:.1g})"
        cells = (s["backbone"], s["rows"], s["dim"], s["weights"], runtime, classes, s["rejected"])
        table.add_row(*(Text(str(c)) for c in cells))
    console.print(table)
    for s in stores:
        if s["pending_shards"]:
            console.print(
                f"[yellow]{escape(s['path'])}: {s['pending_shards']} batch(es) of an interrupted "
                "run are not visible yet; run `cxr features` again to resume.[/]"
            )
