"""Duplicate clusters: exact (same sha256), near by perceptual hash, near by embedding cosine.

Every detector yields pairs of row indices; union-find turns the pairs into clusters (so A~B and
B~C put A, B and C together even if A and C are not close). A cluster is a conflict when its
members carry more than one label (the same picture under two labels) or more than one patient
id (one patient filed twice: grouped CV would split the copies across folds).

Both near-duplicate searches compare all pairs in row blocks, O(N^2) time and O(block x N)
memory. The hash search compares 27 crop levels both ways: about 2 s for 2k rows on one core,
so several minutes for 20k; the cosine search about a second for 2k rows. For 50k+ rows use an
approximate nearest-neighbour index (e.g. FAISS/HNSW on the normalised embeddings, multi-index
hashing on the pHash bits) and verify its candidate pairs with the same thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cxr.audit.phash import N_BITS

BLOCK = 256  # rows per block of cosines: (BLOCK, N) float32
HASH_BLOCK = 1 << 22  # (rows x N x LEVELS) hash pairs per block: a 32 MB uint64 XOR buffer


@dataclass
class Cluster:
    """Rows that show one picture, with the evidence that joined them."""

    rows: list[int]
    methods: set[str] = field(default_factory=set)
    min_hash_distance: int | None = None
    max_cosine: float | None = None
    conflicts: list[str] = field(default_factory=list)  # "label" and/or "patient_id"


class UnionFind:
    def __init__(self, n: int):
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return int(root)

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


def exact_pairs(ids: np.ndarray) -> list[tuple[int, int]]:
    """Rows with the same content hash: each later copy paired with the first."""
    first: dict[str, int] = {}
    pairs = []
    for i, sha in enumerate(ids):
        if sha in first:
            pairs.append((first[sha], i))
        else:
            first[sha] = i
    return pairs


def hash_pairs(hashes: np.ndarray, threshold: int) -> list[tuple[int, int, int]]:
    """(i, j, distance) for i < j with hash distance <= threshold; rows of (N, LEVELS, WORDS).

    The distance is ``audit.phash.distance``: the smallest Hamming distance between the whole of
    one image (level 0) and any crop level of the other, both ways.
    """
    if not 0 <= threshold < N_BITS:
        raise ValueError(f"hash threshold must be in 0..{N_BITS - 1}")
    n, levels, _ = hashes.shape
    by_word = np.ascontiguousarray(hashes.transpose(2, 0, 1))  # (WORDS, N, LEVELS)
    whole = by_word[:, None, :, :1]  # (WORDS, 1, N, 1): every image's level 0
    rows = max(1, HASH_BLOCK // max(1, n * levels))
    out = []
    for start in range(0, n, rows):
        block = by_word[:, start : start + rows, None, :]  # (WORDS, b, 1, LEVELS)
        dist = np.minimum(
            _min_hamming(block[..., :1], by_word[:, None, :, :]),  # block's whole, all crops
            _min_hamming(block, whole),  # block's crops, all wholes
        )
        for a, j in zip(*np.nonzero(dist <= threshold), strict=True):
            i = start + int(a)
            if i < j:
                out.append((i, int(j), int(dist[a, j])))
    return out


def _min_hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Word-major hashes (WORDS, b, 1, La) and (WORDS, 1, N, Lb) -> (b, N) min over levels.

    Bit counts are summed word by word in uint8 (at most 255 bits), which is several times faster
    than summing (..., WORDS) uint64 counts.
    """
    shape = np.broadcast_shapes(a.shape[1:], b.shape[1:])
    xor = np.empty(shape, np.uint64)
    count = np.empty(shape, np.uint8)
    total = np.zeros(shape, np.uint8)
    for word in range(a.shape[0]):
        np.bitwise_xor(a[word], b[word], out=xor)
        total += np.bitwise_count(xor, out=count)
    return total.min(axis=-1)


def cosine_pairs(X: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """(i, j, cosine) for i < j with cosine similarity of the raw embeddings >= threshold."""
    Z = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(Z, axis=1, keepdims=True)
    Z = Z / np.where(norms > 0, norms, 1)
    out = []
    for start in range(0, len(Z), BLOCK):
        sim = Z[start : start + BLOCK] @ Z.T
        for a, j in zip(*np.nonzero(sim >= threshold), strict=True):
            i = start + int(a)
            if i < j:
                out.append((i, int(j), float(sim[a, j])))
    return out


def clusters(
    n: int,
    exact: list[tuple[int, int]],
    by_hash: list[tuple[int, int, int]],
    by_cosine: list[tuple[int, int, float]],
    labels: np.ndarray,
    patients: np.ndarray,
) -> list[Cluster]:
    """Union of all pairs -> clusters of 2+ rows; conflicts first, then larger, then first row."""
    uf = UnionFind(n)
    for i, j, *_ in (*exact, *by_hash, *by_cosine):
        uf.union(i, j)
    groups: dict[int, Cluster] = {}
    for i in range(n):
        groups.setdefault(uf.find(i), Cluster(rows=[])).rows.append(i)
    found = {root: c for root, c in groups.items() if len(c.rows) > 1}
    for i, _ in exact:
        found[uf.find(i)].methods.add("exact")
    for i, _, d in by_hash:
        c = found[uf.find(i)]
        c.methods.add("phash")
        c.min_hash_distance = d if c.min_hash_distance is None else min(c.min_hash_distance, d)
    for i, _, s in by_cosine:
        c = found[uf.find(i)]
        c.methods.add("cosine")
        c.max_cosine = s if c.max_cosine is None else max(c.max_cosine, s)
    for c in found.values():
        if len(set(labels[c.rows])) > 1:
            c.conflicts.append("label")
        known = {p for p in patients[c.rows] if p}
        if len(known) > 1:
            c.conflicts.append("patient_id")
    return sorted(found.values(), key=lambda c: (-len(c.conflicts), -len(c.rows), c.rows[0]))
