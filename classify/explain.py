"""`cxr explain`: where on the film a head found its evidence, as maps and as a number.

A head sees a film through its pooled embedding z = mean over the cells of the backbone's last
feature map A (h x w x C). The weight of each channel for a class's score is the score's
gradient at z, computed here from the head's fitted arrays (NumPy; stage 1 only runs the
backbone, `cxr.extract.explain`):

- ``cam`` (logistic regression): the score is linear in z, so the map A @ g has the score as
  its mean plus a constant: an exact class-activation map;
- ``grad-cam`` (the MLP): the gradient at this film's z, through the ReLU layers; a local,
  first-order account (Selvaraju et al. 2017);
- ``occlusion`` (trees, kNN, the SVM): each patch of a grid blacked out in turn, the drop in
  the class's probability (Zeiler & Fergus 2014).

The number: the share of a film's positive evidence that lies outside the central box (the
box `--region centre-masked` blacks out: the lungs, roughly), per film and, with its mean and
a 95% bootstrap CI, per class and per source. A head that reads the lungs keeps most of its
evidence inside; one that reads markers, text and borders (DeGrave et al. 2021) does not.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from cxr.classify.metrics import bootstrap_weights
from cxr.errors import CxrError

GRADIENT_METHODS = {"logreg": "cam", "mlp": "grad-cam"}  # every other head: occlusion
OCCLUSION_GRID = 7
REPLICATES = 1000


def method_of(head: str) -> str:
    return GRADIENT_METHODS.get(head, "occlusion")


def score_gradient(pipeline: Any, z: np.ndarray, k: int) -> np.ndarray:
    """d(class k's score)/dz at the embedding ``z`` (C,), through the head's Pipeline: the
    StandardScaler, the optional PCA step, then a logistic regression (its logit) or an MLP
    (its output before the softmax or the logistic)."""
    steps = dict(pipeline.named_steps)
    if "inputs" in steps:
        raise CxrError("explain maps embeddings only: this head was fitted with covariates")
    scaler, reduce, clf = steps["scale"], steps.get("reduce"), steps["clf"]
    jacobian = np.diag(1.0 / scaler.scale_) if scaler.scale_ is not None else np.eye(len(z))
    x = (z - scaler.mean_) / scaler.scale_
    pca = getattr(reduce, "pca_", None)
    if pca is not None:  # x' = (x - mean) @ components.T
        jacobian = pca.components_ @ jacobian
        x = (x - pca.mean_) @ pca.components_.T
    name = type(clf).__name__
    if name == "LogisticRegression":
        coef = clf.coef_
        weights = (coef[0] if k == 1 else -coef[0]) if coef.shape[0] == 1 else coef[k]
        return weights @ jacobian
    if name == "MLPClassifier":
        return _mlp_gradient(clf, x, k) @ jacobian
    raise CxrError(f"{name} has no gradient to map; explain occludes patches for it")


def _mlp_gradient(clf: Any, x: np.ndarray, k: int) -> np.ndarray:
    """Backpropagation of the output unit's pre-activation through ReLU hidden layers."""
    if clf.activation != "relu":
        raise CxrError(f"the MLP's {clf.activation} activation is not mapped (relu only)")
    gates, h = [], x
    for W, b in zip(clf.coefs_[:-1], clf.intercepts_[:-1], strict=True):
        pre = h @ W + b
        gates.append(pre > 0)
        h = np.maximum(pre, 0)
    last = clf.coefs_[-1]
    grad = last[:, 0] * (1 if k == 1 else -1) if last.shape[1] == 1 else last[:, k]
    for W, gate in zip(clf.coefs_[-2::-1], gates[::-1], strict=True):
        grad = W @ (grad * gate)
    return grad


def evidence(maps: np.ndarray, gradient: np.ndarray) -> np.ndarray:
    """(h, w) map of one film: each cell's channels weighted by the score's gradient."""
    return maps @ gradient


def occlusion_evidence(
    pipeline: Any, occluded: np.ndarray, proba: np.ndarray, k: int
) -> np.ndarray:
    """(g, g) drop in class k's probability when each patch is blacked out."""
    g = occluded.shape[0]
    flat = occluded.reshape(g * g, -1)
    dropped = np.zeros((len(flat), len(proba)))
    dropped[:, pipeline.classes_] = pipeline.predict_proba(flat)
    return (proba[k] - dropped[:, k]).reshape(g, g)


def box_fraction(h: int, w: int, box: float) -> np.ndarray:
    """(h, w): the share of each cell of an h x w grid over the film inside its central box
    (spanning ``box`` of each side), exactly: a cell straddling the edge counts in part."""

    def along(n: int) -> np.ndarray:
        lo, hi = (1 - box) / 2, (1 + box) / 2
        edges = np.linspace(0, 1, n + 1)
        overlap = np.clip(np.minimum(edges[1:], hi) - np.maximum(edges[:-1], lo), 0, None)
        return overlap * n

    return np.outer(along(h), along(w))


def share_outside(evidence_map: np.ndarray, inside: np.ndarray) -> float | None:
    """The share of the positive evidence outside the box (None: no positive evidence)."""
    positive = np.maximum(evidence_map, 0)
    total = float(positive.sum())
    if total <= 0:
        return None
    return float((positive * (1 - inside)).sum() / total)


class Group(TypedDict):
    n: int
    mean: float | None
    ci95: list[float | None]


def summarize(
    shares: Sequence[float | None], keys: Sequence[str], units: Sequence[str], seed: int = 0
) -> dict[str, Group]:
    """Per key (a class, a source): the films' mean share and its 95% bootstrap interval over
    ``units`` (patients when known, else films)."""
    out: dict[str, Group] = {}
    values = np.asarray([np.nan if s is None else s for s in shares], dtype=float)
    keys_, units_ = np.asarray(keys, dtype=object), np.asarray(units, dtype=object)
    for key in sorted(set(keys_.tolist())):
        mine = (keys_ == key) & np.isfinite(values)
        n = int(mine.sum())
        if not n:
            out[key] = Group(n=0, mean=None, ci95=[None, None])
            continue
        v = values[mine]
        if len(set(units_[mine].tolist())) < 2:  # one patient: no interval to speak of
            out[key] = Group(n=n, mean=float(v.mean()), ci95=[None, None])
            continue
        draws = np.concatenate(
            [w @ v / w.sum(axis=1) for w in bootstrap_weights(units_[mine], REPLICATES, seed)]
        )
        lo, hi = np.percentile(draws, [2.5, 97.5])
        out[key] = Group(n=n, mean=float(v.mean()), ci95=[float(lo), float(hi)])
    return out


class Film(TypedDict):
    path: str
    label: str
    source: str
    predicted: str
    probabilities: dict[str, float]
    target: str  # the class whose evidence is mapped
    share_outside: float | None
    overlay: str  # with --out


class ExplainReport(TypedDict):
    model: str
    backbone: str
    head: str
    method: str  # cam | grad-cam | occlusion
    box: float
    uniform_outside: float  # the share outside the box of evidence spread evenly: 1 - box²
    films: list[Film]
    by_class: dict[str, Group]  # the films' true class
    by_source: dict[str, Group]
    rejected: list[dict[str, str]]
    plots: list[str]
    disclaimer: str


def explain_films(
    bundle: Mapping[str, Any],
    maps: Any,
    known: Mapping[str, Mapping[str, str]],
    *,
    box: float,
    target: str | None = None,
    seed: int = 0,
) -> tuple[ExplainReport, list[np.ndarray]]:
    """The report for the films stage 1 mapped (``maps``: `cxr.extract.explain.FeatureMaps`),
    and each film's evidence map; ``known``: absolute path -> label, source, patient for the
    films of the store (others are unlabelled); ``target``: the class to map (default: each
    film's predicted class)."""
    from cxr.classify.provenance import DISCLAIMER

    pipeline, classes = bundle["pipeline"], list(bundle["classes"])
    if target is not None and target not in classes:
        raise CxrError(f"`class` {target}: the model's classes are {', '.join(classes)}")
    method = method_of(str(bundle.get("head", "")))
    proba = np.zeros((len(maps.paths), len(classes)))
    if len(maps.paths):
        proba[:, pipeline.classes_] = pipeline.predict_proba(maps.embeddings)
    films, evidence_maps = [], []
    for i, path in enumerate(maps.paths):
        k = classes.index(target) if target else int(np.argmax(proba[i]))
        if method == "occlusion":
            found = occlusion_evidence(pipeline, maps.occluded[i], proba[i], k)
        else:
            found = evidence(maps.maps[i], score_gradient(pipeline, maps.embeddings[i], k))
        h, w = found.shape
        inside = box_fraction(h, w, box)
        row = known.get(os.path.abspath(path), {})
        films.append(
            Film(
                path=path,
                label=row.get("label", ""),
                source=row.get("source", ""),
                predicted=classes[int(np.argmax(proba[i]))],
                probabilities=dict(zip(classes, map(float, proba[i]), strict=True)),
                target=classes[k],
                share_outside=share_outside(found, inside),
                overlay="",
            )
        )
        evidence_maps.append(found)
    units = [known.get(os.path.abspath(f["path"]), {}).get("patient") or f["path"] for f in films]
    shares = [f["share_outside"] for f in films]
    report = ExplainReport(
        model=str(bundle.get("model", "")),
        backbone=str(bundle["backbone"]),
        head=str(bundle.get("head", "")),
        method=method,
        box=box,
        uniform_outside=1 - box * box,
        films=films,
        by_class=summarize(shares, [f["label"] or "(unlabelled)" for f in films], units, seed),
        by_source=summarize(shares, [f["source"] or "(unknown)" for f in films], units, seed),
        rejected=[{"path": r.path, "reason": r.reason} for r in maps.rejected],
        plots=[],
        disclaimer=DISCLAIMER,
    )
    return report, evidence_maps


@dataclass(frozen=True)
class Explained:
    """An explanation and what its figures are drawn from (aligned with ``report["films"]``)."""

    report: ExplainReport
    images: np.ndarray  # (n, s, s) uint8: each film as the backbone saw it
    maps: list[np.ndarray]  # each film's evidence map (h, w)


def explain(
    bundle: Mapping[str, Any],
    mapper: Callable[..., Any],
    *,
    model_path: Path,
    features_dir: Path,
    images: Sequence[Path] = (),
    sample: int = 0,
    weights: Sequence[str] = (),
    box: float = 0.6,
    target: str | None = None,
    seed: int = 0,
) -> Explained:
    """Evidence maps of ``images``, or of ``sample`` films per class of the model's store, for
    the model ``bundle``; ``mapper`` is stage 1's `cxr.extract.explain.feature_maps`."""
    from cxr.classify.model import embed_as_trained
    from cxr.classify.tasks import TaskSpec, select
    from cxr.store import load
    from cxr.store.schema import store_name, store_path

    if not 0.05 <= box <= 0.95:
        raise CxrError(f"`box` {box:g}: the central box's share of a side, 0.05..0.95")
    if not images and sample < 1:
        raise CxrError("name images to explain, or `sample` N films per class of the store")
    store = store_path(features_dir, store_name(bundle["fingerprint"]))
    known: dict[str, dict[str, str]] = {}
    chosen = [Path(p) for p in images]
    if store.is_file():  # the films of the model's task, under its labels (merged, binary)
        fs = load(store, embeddings=False)
        task = TaskSpec.from_dict(bundle.get("task") or {})
        data = select(fs, replace(task, exclude=None))
        root = Path(str(fs.attrs.get("data_root", "")))
        sources = data.column("source")
        labels = np.asarray(data.classes, dtype=object)[data.y]
        for path, label, source, patient in zip(
            data.paths, labels, sources, data.groups, strict=True
        ):
            known[os.path.abspath(root / path)] = {
                "label": label,
                "source": source,
                "patient": patient,
            }
        if sample:
            rng = np.random.default_rng(seed)
            for k in range(len(data.classes)):
                rows = np.flatnonzero(data.y == k)
                picked = rng.choice(rows, size=min(sample, len(rows)), replace=False)
                chosen += [root / data.paths[i] for i in sorted(picked)]
    elif sample:
        raise CxrError(f"{store}: no store to sample films from; name the images instead")
    occlusion = OCCLUSION_GRID if method_of(str(bundle.get("head", ""))) == "occlusion" else 0
    maps = embed_as_trained(model_path, bundle, chosen, mapper, weights, occlusion=occlusion)
    if not maps.paths:
        first = maps.rejected[0]
        raise CxrError(f"none of the images could be read: {first.path}: {first.reason}")
    report, evidence_maps = explain_films(bundle, maps, known, box=box, target=target, seed=seed)
    return Explained(report, maps.images, evidence_maps)
