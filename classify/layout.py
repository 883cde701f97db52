"""The embedding map's picture: a seeded 2-D layout of a store's films (scikit-learn only).

Barnes-Hut t-SNE (perplexity 30, initialised by PCA) of the first 50 principal components of
the unit-length embeddings, so that near in the picture means near by cosine, the measure the
neighbour shares count (`cxr.classify.neighbours`, which finds them on the same unit vectors).
Below MIN_TSNE films, the first two principal components. The layout is a picture, never a
number: the shares are counted in the full embedding, not here.

Not UMAP: with TensorFlow installed, importing umap-learn imports TensorFlow (its parametric
UMAP), which `cxr evaluate` never loads, and numba compiles it for about half a minute in every
new process, longer than this t-SNE takes on the 2,500 films a map draws at most.
"""

from __future__ import annotations

from typing import TypedDict

import numpy as np

PCA_DIMS = 50
PERPLEXITY = 30.0
# scikit-learn's defaults are 1,000 iterations and a Barnes-Hut angle of 0.5; on the 2,109 shared
# films 350 and 0.8 draw the same clusters in half the time (about 8 s of CPU instead of 16-21).
ITERATIONS = 350  # the first 250 are the early exaggeration
ANGLE = 0.8
MIN_TSNE = 10  # films; fewer are laid out by PCA alone


class Layout(TypedDict, total=False):
    """How a map was laid out, as the JSON records it beside the neighbour shares."""

    method: str  # t-SNE or PCA
    detail: str  # in words, with its settings
    points: int
    seed: int
    figure: str  # the PNG, once drawn


def unit_vectors(X: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (zero rows left at zero): their inner products are cosines."""
    Z = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(Z, axis=1, keepdims=True)
    return np.ascontiguousarray(Z / np.where(norms > 0, norms, 1))


def layout(X: np.ndarray, seed: int) -> tuple[np.ndarray, Layout]:
    """Each row's 2-D position, and how they were found."""
    from sklearn.decomposition import PCA

    Z = unit_vectors(X)
    n = len(Z)
    if n < 3:
        return np.zeros((n, 2)), Layout(method="none", detail="too few films", points=n, seed=seed)
    dims = min(PCA_DIMS, n - 1, Z.shape[1])
    projected = PCA(dims, random_state=seed).fit_transform(Z)
    if n < MIN_TSNE or dims < 2:
        coords = np.zeros((n, 2))
        coords[:, :dims] = projected[:, :2]
        detail = "the first two principal components of the unit-length embeddings"
        return coords, Layout(method="PCA", detail=detail, points=n, seed=seed)
    from sklearn.manifold import TSNE

    perplexity = min(PERPLEXITY, (n - 1) / 3)
    tsne = TSNE(
        2,
        perplexity=perplexity,
        init="pca",
        learning_rate="auto",
        max_iter=ITERATIONS,
        angle=ANGLE,
        random_state=seed,
    )
    coords = tsne.fit_transform(projected)
    detail = (
        f"t-SNE (scikit-learn, perplexity {perplexity:g}, {ITERATIONS} iterations, angle "
        f"{ANGLE:g}, seed {seed}) of the first {dims} principal components of the unit-length "
        "embeddings"
    )
    return coords, Layout(method="t-SNE", detail=detail, points=n, seed=seed)
