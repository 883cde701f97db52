"""Show an audit: Rich tables for people, JSON for machines (the same dict either way).

Paths, labels, patient ids, column names and values come from files: they are printed as text,
never as Rich markup (a label ``[/b]`` must not end the report).
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from cxr.classify.tables import render_neighbourhoods

WORST = 10  # clusters shown in the terminal; --json has all of them


def render(result: dict, console: Console) -> None:
    counts, settings = result["counts"], result["settings"]
    console.print(
        f"[bold]Audit of {escape(result['store'])}[/] ({result['rows']} rows, images in "
        f"{escape(result['data_root'])}; pHash <= {settings['hash_threshold']} bits, "
        f"cosine >= {settings['cosine_threshold']})",
        highlight=False,
    )
    summary = Table(title="Duplicates", show_header=False)
    pairs = counts["pairs"]
    by = counts["clusters_by_method"]
    for name, value in (
        (
            "pairs: exact / pHash / cosine",
            f"{pairs['exact']} / {pairs['phash']} / {pairs['cosine']}",
        ),
        ("clusters (rows in them)", f"{counts['clusters']} ({counts['rows_in_clusters']})"),
        ("clusters with exact / pHash / cosine", f"{by['exact']} / {by['phash']} / {by['cosine']}"),
        ("one picture, two labels", _flag(counts["label_conflicts"])),
        ("one picture, two patient ids", _flag(counts["patient_conflicts"])),
        ("rows without a hash", str(counts["rows"] - counts["hashed_rows"])),
    ):
        summary.add_row(name, value)
    console.print(summary)
    for number, cluster in enumerate(result["clusters"][:WORST], 1):
        evidence = ", ".join(cluster["methods"])
        if cluster["min_hash_distance"] is not None:
            evidence += f"; pHash {cluster['min_hash_distance']} bits"
        if cluster["max_cosine"] is not None:
            evidence += f"; cosine {cluster['max_cosine']}"
        conflict = (
            f" [red]conflict: {', '.join(cluster['conflicts'])}[/]" if cluster["conflicts"] else ""
        )
        title = f"Cluster {number}: {cluster['size']} images ({escape(evidence)}){conflict}"
        table = Table(title=title)
        for column in ("path", "label", "patient_id", "source"):
            table.add_column(column, overflow="fold")
        for m in cluster["members"]:
            table.add_row(*(Text(m[c]) for c in ("path", "label", "patient_id", "source")))
        console.print(table)
    if len(result["clusters"]) > WORST:
        console.print(f"... {len(result['clusters']) - WORST} more clusters in --json.")
    _render_probes(result["probes"], console)
    if result.get("neighbourhood"):
        render_neighbourhoods([result["neighbourhood"]], console)
    excl = result["exclusions"]
    console.print(
        f"Exclusion file: {len(excl['exclude'])} image(s) to drop (label conflicts), "
        f"{len(excl['groups'])} group override(s).",
        highlight=False,
    )
    for note in result["notes"]:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    timing = result["timing"]
    console.print(
        f"{timing['hashes_computed']} image(s) hashed ({timing['hash_seconds']} s); "
        f"total {timing['total_seconds']} s.",
        highlight=False,
    )


def _flag(n: int) -> str:
    return f"[red]{n}[/]" if n else "0"


def _render_probes(probes: dict, console: Console) -> None:
    if not probes:
        return
    table = Table(title="Confound probe: predict the column from the embeddings (logistic, CV)")
    for col in ("column", "values", "accuracy", "chance", "balanced acc.", "chance (1/k)"):
        table.add_column(col)
    for name, p in probes.items():
        if "same_as" in p:
            table.add_row(Text(name), Text(f"identical to {p['same_as']}"), "", "", "", "")
        elif "skipped" in p:
            table.add_row(Text(name), Text(p["skipped"]), "", "", "", "")
        else:
            table.add_row(
                Text(name),
                Text(", ".join(f"{k} {v}" for k, v in p["classes"].items())),
                f"{p['accuracy']:.3f}",
                f"{p['chance_accuracy']:.3f}",
                f"{p['balanced_accuracy']:.3f}",
                f"{p['chance_balanced_accuracy']:.3f}",
            )
    console.print(table)
