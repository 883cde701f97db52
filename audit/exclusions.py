"""What `cxr audit --exclude-out` puts in the exclusion file (its format: `cxr.store.exclusions`):

- ``groups``: every duplicate cluster joins the patient groups of its members, transitively and
  for *all* rows of those patients (otherwise a patient's other films could still land in another
  fold than the copy). The merged group is named ``audit:<first member group>``. When some rows
  have no patient id, every row gets a group (its patient id, else ``image:<sha256>``): grouped CV
  needs a group on every row, and this keeps copies together even without patient ids.
- ``exclude``: every row of a cluster whose members carry two or more labels. Which label is right
  cannot be decided automatically, so all copies are dropped; re-label by hand to keep them.
"""

from __future__ import annotations

import numpy as np

from cxr.audit.duplicates import Cluster, UnionFind
from cxr.store.exclusions import Exclusions


def build(clusters: list[Cluster], ids: np.ndarray, patients: np.ndarray) -> Exclusions:
    """The audit's file: merged groups for every duplicate cluster, label conflicts dropped."""
    keys = np.asarray([p if p else f"image:{i}" for i, p in zip(ids, patients, strict=True)])
    names = sorted(set(keys.tolist()))
    index = {k: n for n, k in enumerate(names)}
    uf = UnionFind(len(names))
    for cluster in clusters:
        first = index[keys[cluster.rows[0]]]
        for row in cluster.rows[1:]:
            uf.union(first, index[keys[row]])
    root_name: dict[int, str] = {}
    for n, name in enumerate(names):  # names are sorted, so a root's first member names it
        root_name.setdefault(uf.find(n), name)
    members: dict[int, int] = {}
    for n in range(len(names)):
        members[uf.find(n)] = members.get(uf.find(n), 0) + 1
    every_row = not bool(np.all(patients != ""))
    groups = {}
    for row, key in enumerate(keys):
        root = uf.find(index[key])
        if members[root] > 1:
            groups[str(ids[row])] = f"audit:{root_name[root]}"
        elif every_row:
            groups[str(ids[row])] = str(key)
    exclude = frozenset(str(ids[r]) for c in clusters if "label" in c.conflicts for r in c.rows)
    return Exclusions(exclude, dict(sorted(groups.items())))
