"""Duplicate clusters: exact (same sha256), near by perceptual hash, near by embedding cosine.

Every detector yields pairs of row indices; union-find turns the pairs into clusters (so A~B and
B~C put A, B and C together even if A and C are not close). A cluster is a conflict when its
members carry more than one label (the same picture under two labels) or more than one patient
id (one patient filed twice: grouped CV would split the copies across folds).

Both near-duplicate searches are exact (the pairs of comparing everything with everything) and
run as FAISS range searches queried in blocks, so memory is bounded by the pairs found; why no
approximate index, and the measured times at 112k rows: docs/scale.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cxr.audit.phash import N_BITS

QUERY_BLOCK = 4096  # queries per range search: bounds the distances FAISS holds at once
HASH_BLOCK = 1 << 15  # crop-level codes searched at a time: 1 MB of 32-byte codes
PROJECTED_DIMS = 128  # principal axes of the cosine pre-filter
PCA_SAMPLE = 20_000  # rows the axes are computed from
RADIUS_SLACK = 1e-3  # float32 rounding of projected distances must not drop a pair


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
    one image (level 0) and any crop level of the other, both ways. So every image's whole-image
    hash is compared with every crop level of every image: N x N x LEVELS comparisons, exact.
    Two things make that affordable at 100k images:

    - Half the bits first. Two codes within ``threshold`` bits are within it on any subset of
      their bits, so FAISS's binary range search on the first 128 bits finds every match, and
      the candidates are then checked on all bits. The bits are shuffled first (a fixed
      permutation, which no Hamming distance sees): chest films agree on their lowest
      frequencies, so a half made of neighbouring DCT bits would let many films through.
    - The crop-level codes are searched a block at a time (``HASH_BLOCK`` codes, 1 MB), all
      queries against one block, so the block stays in the CPU cache; searched whole, every
      query streamed all 27 x N codes from memory.
    """
    import faiss

    if not 0 <= threshold < N_BITS:
        raise ValueError(f"hash threshold must be in 0..{N_BITS - 1}")
    if not len(hashes):  # no file could be hashed (moved, unreadable): no pair
        return []
    levels = hashes.shape[1]
    codes = _shuffled(hashes)
    half = codes.shape[1] // 2
    queries = np.ascontiguousarray(codes[::levels])  # every image's level 0
    found = []
    for start in range(0, len(codes), HASH_BLOCK):
        index = faiss.IndexBinaryFlat(8 * half)
        index.add(np.ascontiguousarray(codes[start : start + HASH_BLOCK, :half]))
        for a, hits, _ in _range_search(index, queries[:, :half], threshold + 1):
            b = start + hits
            whole = _popcount(queries[a] ^ codes[b])
            close = whole <= threshold
            found.append((a[close], b[close] // levels, whole[close]))
    return _closest(found)


def _shuffled(hashes: np.ndarray) -> np.ndarray:
    """(N x LEVELS, bytes) uint8 codes, bits in a fixed shuffled order; built in blocks, since
    unpacked bits take a byte each (0.8 GB for 112k images at once)."""
    raw = np.ascontiguousarray(hashes, dtype=np.uint64).view(np.uint8)
    raw = raw.reshape(hashes.shape[0] * hashes.shape[1], -1)
    order = np.random.default_rng(0).permutation(raw.shape[1] * 8)
    out = np.empty_like(raw)
    for start in range(0, len(raw), HASH_BLOCK):
        bits = np.unpackbits(raw[start : start + HASH_BLOCK], axis=1)
        out[start : start + HASH_BLOCK] = np.packbits(bits[:, order], axis=1)
    return out


def _popcount(xor: np.ndarray) -> np.ndarray:
    """Set bits per row of (n, bytes) uint8."""
    return np.bitwise_count(xor).sum(axis=1, dtype=np.int64)


def cosine_pairs(X: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """(i, j, cosine) for i < j with cosine similarity of the raw embeddings >= threshold.

    Exact without scoring every pair in full: on unit vectors, cosine >= t is distance^2 <=
    2 - 2t, and a projection on orthonormal axes never lengthens a difference, so every such
    pair is also that close on the first ``PROJECTED_DIMS`` principal axes. FAISS's range search
    finds those candidates, and each is then scored on the full vectors. On the shared set
    (MobileNetV2, t = 0.96) 6 candidates came for 1 pair.
    """
    import faiss

    Z = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(Z, axis=1, keepdims=True)
    Z = np.ascontiguousarray(Z / np.where(norms > 0, norms, 1))
    Y = _project(Z, PROJECTED_DIMS)
    index = faiss.IndexFlatL2(Y.shape[1])
    index.add(Y)
    radius = max(0.0, 2 - 2 * threshold) + RADIUS_SLACK
    pairs = [(a, b) for a, b, _ in _range_search(index, Y, radius)]
    a = np.concatenate([p[0] for p in pairs]) if pairs else np.empty(0, np.int64)
    b = np.concatenate([p[1] for p in pairs]) if pairs else np.empty(0, np.int64)
    keep = a < b
    a, b = a[keep], b[keep]
    sims = np.einsum("ij,ij->i", Z[a], Z[b])
    close = sims >= threshold
    order = np.lexsort((b[close], a[close]))
    return [
        (int(i), int(j), float(v))
        for i, j, v in zip(a[close][order], b[close][order], sims[close][order], strict=True)
    ]


def _project(Z: np.ndarray, dims: int) -> np.ndarray:
    """Z on its first ``dims`` principal axes (from a seeded sample of rows); Z if not wider."""
    if Z.shape[1] <= dims or len(Z) <= dims:
        return Z
    rng = np.random.default_rng(0)
    sample = Z[np.sort(rng.choice(len(Z), min(len(Z), PCA_SAMPLE), replace=False))]
    _, _, axes = np.linalg.svd(sample - sample.mean(axis=0), full_matrices=False)
    return np.ascontiguousarray(Z @ axes[:dims].T)


def _range_search(index, queries: np.ndarray, radius: float):
    """(query rows, hit ids, distances) per block of queries, distances < radius."""
    for start in range(0, len(queries), QUERY_BLOCK):
        block = np.ascontiguousarray(queries[start : start + QUERY_BLOCK])
        lims, distances, hits = index.range_search(block, radius)
        rows = start + np.repeat(np.arange(len(block)), np.diff(lims.astype(np.int64)))
        yield rows, hits.astype(np.int64), distances


def _closest(found: list[tuple[np.ndarray, np.ndarray, np.ndarray]]):
    """Unordered pairs of distinct rows with the smallest distance each, sorted by (i, j)."""
    if not found:
        return []
    a, b, d = (np.concatenate(parts) for parts in zip(*found, strict=True))
    keep = a != b
    i, j, d = np.minimum(a, b)[keep], np.maximum(a, b)[keep], d[keep].astype(np.int64)
    order = np.lexsort((d, j, i))
    i, j, d = i[order], j[order], d[order]
    first = np.ones(len(i), bool)
    first[1:] = (i[1:] != i[:-1]) | (j[1:] != j[:-1])
    return [(int(x), int(y), int(z)) for x, y, z in zip(i[first], j[first], d[first], strict=True)]


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
    for pair in (*exact, *by_hash, *by_cosine):
        uf.union(int(pair[0]), int(pair[1]))
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
