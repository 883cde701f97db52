"""Rich tables of `cxr runs`: the run list, and two runs compared. Everything from the tracking
store is printed as text, never as markup."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.text import Text

from cxr.classify.tables import gain_text, report_table
from cxr.tracking.runs import Comparison, Run

ID = 8  # characters of a run id shown (any unique prefix selects the run)


def render_runs(runs: Sequence[Run], uri: str, console: Console) -> None:
    if not runs:
        console.print(f"No tracked runs in {uri} (cxr evaluate --track logs one).", markup=False)
        return
    table = report_table(
        f"Runs in {uri}, newest first",
        "best: the run's best result by its metric (--metric), with its score [95% CI]",
    )
    table.add_column("run", no_wrap=True)
    table.add_column("started (UTC)", no_wrap=True)
    table.add_column("task (design)", overflow="fold")  # folded, never cut
    table.add_column("best", overflow="fold")
    table.add_column("score", no_wrap=True)
    table.add_column("settings", overflow="fold")
    for r in runs:
        task = f"{r['task']} ({r['design']})"
        row = [r["id"][:ID], r["started"], task, r["best"], r["score"], r["settings"]]
        table.add_row(*map(Text, row))
    console.print(table)


def render_comparison(found: Comparison, console: Console) -> None:
    replicates = found["replicates"]
    a, b = found["runs"]
    console.print(
        f"Run {a['id'][:ID]} ({a['started']}) vs {b['id'][:ID]} ({b['started']})",
        markup=False,
        highlight=False,
    )
    table = report_table("Parameters that differ")
    for col in ("parameter", a["id"][:ID], b["id"][:ID]):
        table.add_column(col, overflow="fold")
    for name, (left, right) in found["differ"].items():
        table.add_row(*map(Text, [name, str(left), str(right)]))
    if found["differ"]:
        console.print(table)
    else:
        console.print("No parameter differs.", markup=False)
    for p in found["paired"]:
        if p["why_not"]:
            console.print(f"Not paired: {p['why_not']}", markup=False, highlight=False)
            continue
        console.print(
            f"{p['result']}: {p['metric']} {b['id'][:ID]} minus {a['id'][:ID]} "
            f"{gain_text(p, replicates)} (paired bootstrap on {p['n_paired']} test rows)",
            markup=False,
            highlight=False,
        )
