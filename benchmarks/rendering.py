"""The benchmarks' results as rows (the terminal table) and as Markdown (the performance and
scale pages' sections).

Pure functions of ``benchmarks/results.json`` and ``benchmarks/scale.json``: `make docs` (and
`make bench`, `make bench-scale` after measuring) renders the pages' sections from the committed
files, and CI fails if a page says anything else.
"""

from __future__ import annotations


def verdict(result: dict) -> str:
    if result.get("passed") is None:
        return "reported" if result.get("target") == "(reported)" else "not measured"
    return "pass" if result["passed"] else "FAIL"


def rows(report: dict) -> list[tuple[str, str, str, str]]:
    """(what, target, measured, verdict) per benchmark, in the order they ran."""
    return [(r["name"], r["target"], r["measured"], verdict(r)) for r in report["results"]]


def performance(report: dict) -> str:
    """The performance page's table, with the machine and the notes of its rows."""
    machine = report["machine"]
    load = f", load average {machine['load']} at the start" if "load" in machine else ""
    lines = [
        f"Measured by `{report['command']}` on {report['generated']}: {machine['platform']}, "
        f"{machine['cpus']} CPUs, Python {machine['python']}, TensorFlow "
        f"{machine['tensorflow']}, scikit-learn {machine['sklearn']}{load}. Every ratio is taken "
        "side by side in one run, the two sides interleaved, best of "
        f"{report['repeats']} repeats; this machine is shared and noisy, so single figures "
        "move by 20-40% between runs and only ratios count.",
        "",
        "| benchmark | target | measured | |",
        "|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows(report)]
    notes = [r for r in report["results"] if r.get("note")]
    if notes:
        lines.append("")
        lines += [f"- {r['name']}: {r['note']}" for r in notes]
    return "\n".join(lines)


AUDIT_GOAL_SECONDS = 300


def scale(report: dict) -> str:
    """The scale page's section: the 100k simulation, and extraction on Dask if measured."""
    size, machine = report["sizes"], report["machine"]
    audit = report["audit"]
    met = (
        audit["seconds"] < AUDIT_GOAL_SECONDS
        and audit["recall_cosine"] == 1.0
        and audit["recall_phash"] == 1.0
    )
    lines = [
        f"Measured by `{report['command']}` on {report['generated']}: {machine['platform']}, "
        f"{machine['cpus']} CPUs. A synthetic store of NIH ChestX-ray14's size: "
        f"{size['rows']:,} rows x {size['dim']:,} dims ({size['embeddings_mb']:,} MB of "
        f"float32), {size['patients']:,} patient ids, {size['planted_pairs_per_method']} planted "
        "near-duplicate pairs by embedding and as many by perceptual hash (at a crop level, up "
        "to 20 bits off). Each step is its own process; memory is its peak RSS.",
        "",
        "| step | wall time | peak memory | |",
        "|---|---:|---:|---|",
        f"| publish: a run's shards into one store | {report['publish']['seconds']} s | "
        f"{report['publish']['peak_mb']:,} MB | |",
        f"| load the store (what `evaluate` starts with) | {report['load']['seconds']} s | "
        f"{report['load']['peak_mb']:,} MB | |",
        f"| `cxr info` | {report['info']['seconds']} s | {report['info']['peak_mb']:,} MB | |",
        f"| `cxr audit`, hashes cached | {audit['seconds']} s | {audit['peak_mb']:,} MB | "
        f"recall {audit['recall_cosine']:.2f} (embedding), {audit['recall_phash']:.2f} (hash); "
        f"target < {AUDIT_GOAL_SECONDS // 60} min and 1.00: {'pass' if met else 'FAIL'} |",
    ]
    if "evaluate_logreg" in report:
        ev = report["evaluate_logreg"]
        lines.append(
            f"| `cxr evaluate --head logreg` (10 grouped folds) | {ev['seconds']} s | "
            f"{ev['peak_mb']:,} MB | |"
        )
    dask = report.get("extraction_on_dask")
    if dask:
        lines += [
            "",
            f"`cxr features` on the {dask['images']:,} shared images, cold, one process against "
            "`--scheduler` with two worker processes on the same 2-core machine (best of the "
            "runs, interleaved):",
            "",
            "| backbone | one process | 2 Dask workers | workers / process "
            "| peak memory per worker |",
            "|---|---:|---:|---:|---:|",
        ]
        for name in ("mobilenet_v2", "xception"):
            row = dask.get(name)
            if row is None:
                continue
            if "local_img_s" in row:
                lines.append(
                    f"| {name} | {row['local_img_s']} img/s | {row['local2_img_s']} img/s | "
                    f"{row['ratio']}x | {row['worker_peak_mb']:,} MB |"
                )
            else:
                memory = f"{row['worker_peak_mb']:,} MB"
                lines.append(f"| {name} (64 images: memory only) | | | | {memory} |")
    return "\n".join(lines)
