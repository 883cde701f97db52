"""`cxr audit --plots DIR`: each duplicate group side by side, with what joined it, and the
store's embedding map.

The audit's numbers say that two files are the same picture; the pictures say whether that is
a copy, a crop, a re-encoding, or two films of one patient, and a reader trusts what they see.
Likewise the map shows what the neighbour shares count: films sitting beside their own source.
"""

from __future__ import annotations

import io
import re
import textwrap
from pathlib import Path

from cxr.audit.run import AuditReport, Shortcut
from cxr.classify.plots import embedding_map, safe_name
from cxr.classify.tasks import rows_digest
from cxr.errors import CxrError
from cxr.extract.images import thumbnail
from cxr.files import replace_file
from cxr.store import load

MAX_FIGURES = 200  # clusters drawn; --json lists every one
MAX_MEMBERS = 6  # pictures per cluster figure


def cluster_plots(report: AuditReport, root: Path, out_dir: Path) -> list[str]:
    """One PNG per duplicate cluster (the first MAX_FIGURES): its members' films, labels,
    patients and sources, and the distances that joined them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for number, cluster in enumerate(report["clusters"][:MAX_FIGURES], 1):
        members = cluster["members"][:MAX_MEMBERS]
        fig, axes = plt.subplots(1, len(members), figsize=(2.6 * len(members), 3.2), squeeze=False)
        for ax, member in zip(axes[0], members, strict=True):
            picture = thumbnail(root / member["path"])
            if picture is not None:
                ax.imshow(picture, cmap="gray", vmin=0, vmax=255)
            ax.set_title(
                f"{member['label']}  {member['patient_id'] or '(no id)'}\n{member['source']}\n"
                f"{Path(member['path']).name[:28]}",
                fontsize=7,
            )
            ax.axis("off")
        found = [", ".join(cluster["methods"])]
        if cluster["min_hash_distance"] is not None:
            found.append(f"pHash {cluster['min_hash_distance']} bits apart")
        if cluster["max_cosine"] is not None:
            found.append(f"embedding cosine {cluster['max_cosine']:.3f}")
        conflicts = f"; conflict: {', '.join(cluster['conflicts'])}" if cluster["conflicts"] else ""
        more = (
            f" (first {MAX_MEMBERS} of {cluster['size']})" if cluster["size"] > MAX_MEMBERS else ""
        )
        title = f"cluster {number}: {cluster['size']} images{more}; {'; '.join(found)}{conflicts}"
        fig.suptitle(textwrap.fill(title, 45 * len(members)), fontsize=9)
        fig.tight_layout()
        path = out_dir / f"cluster-{number:03d}-{_slug(', '.join(cluster['methods']))}.png"
        image = io.BytesIO()
        fig.savefig(image, format="png", dpi=110)
        plt.close(fig)
        replace_file(path, image.getbuffer())  # never through a link planted at the name
        written.append(str(path))
    return written


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def map_plot(report: AuditReport, out_dir: Path) -> list[str]:
    """The store's embedding map of the films its neighbour shares asked (`Shortcut`): the
    store is read again, and refused if its rows changed since the audit."""
    entry = report.get("neighbourhood")
    if not entry:
        return []
    fs = load(report["store"])
    if rows_digest(fs.ids, fs.labels) != entry["rows_sha256"]:
        raise CxrError(f"{report['store']}: the store changed since the audit; run it again")
    column = entry.get("column")
    sample = Shortcut.of(fs, [column] if column else []).sample(fs, entry["seed"])
    stem = f"{safe_name(entry['backbone'])}-embedding-map"
    return [embedding_map(sample, entry, out_dir, stem, "every stored film")]
