"""Does the embedding group films by where they came from? Each film's nearest neighbours.

For each film, its K nearest neighbours by cosine among the films of OTHER patients (a
patient's own films would make any embedding look consistent): the share that come from the
film's own source (or whichever column is checked) and the share that carry its own label.
Then the same within the film's class, its neighbours searched among the other patients'
films of that class only: "a COVID-19 film's neighbours come from its own source N% of the
time", which the label cannot explain. Each share is a mean over films, with a 95% interval
from the patient bootstrap of the metrics (`cxr.classify.metrics.bootstrap_weights`, stratified
by class) and its chance level beside it: the share a neighbour drawn at random from the films
searched would give (the film's value's share among the other patients' films there).

At most SAMPLE films are asked (every film below that), drawn per label x value cell in
proportion to its size, seeded; their neighbours are searched among all the task's films
(exact inner products of unit vectors, faiss). The embedding map draws the same films
(`cxr.classify.layout`), so the picture and the number speak of one sample.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict

import numpy as np

from cxr.classify.layout import Layout, unit_vectors
from cxr.classify.metrics import bootstrap_weights

CACHE_VERSION = 1  # bump when a change here changes a neighbourhood (the fit cache keeps them)
K = 10  # neighbours per film
SAMPLE = 2500  # films asked (and drawn in the map), at most
CROWD = 64  # a patient's films beyond this are searched past one patient at a time
MEASURES = ("same_label", "same_value", "same_value_in_class")


class Share(TypedDict):
    """One share of neighbours: the mean over films, its 95% interval, and chance beside it."""

    share: float | None
    ci95: list[float | None]
    chance: float | None  # the share if neighbours ignored what is counted


class Group(TypedDict, total=False):
    """The shares of one set of films: all of them, a class, or one value within a class."""

    films: int
    same_label: Share  # neighbours among every other patient's films that carry its label
    same_value: Share  # ... that carry its value of the column
    same_value_in_class: Share  # neighbours among other patients' films of its class, ditto
    by_value: dict[str, Group]  # in a class: each value's films (same_value_in_class only)


class Neighbourhood(TypedDict, total=False):
    """One store's neighbourhoods on the task's films, as the JSON holds them."""

    backbone: str  # the store's name
    column: str | None  # what "its own source" means: the strongest confound (None: none)
    k: int
    metric: str
    films: int  # asked
    rows: int  # searched
    sample: str  # the rule that drew the films asked
    seed: int
    unit: str  # what the bootstrap resamples: patient, or image
    replicates: int
    rows_sha256: str  # of the rows searched: a map drawn later must be of the same rows
    all: Group
    classes: dict[str, Group]
    map: Layout  # once drawn: how it was laid out, and the figure


@dataclass(frozen=True)
class Sample:
    """The films asked, kept for the embedding map (not in the JSON)."""

    name: str  # the store's name
    X: np.ndarray
    labels: np.ndarray  # class name per film
    values: np.ndarray | None  # the column's value per film (None: no column)


def draw(
    y: np.ndarray, values: np.ndarray | None, limit: int, seed: int, column: str = "value"
) -> tuple[np.ndarray, str]:
    """The rows to ask (sorted) and the rule in words: every row when there are at most
    ``limit``; otherwise each label x value cell's share of ``limit`` (largest remainders, at
    least one film per cell), drawn at random, seeded."""
    n = len(y)
    if n <= limit:
        return np.arange(n), f"every film ({n:,})"
    keys = np.asarray(y).astype(str).astype(object)
    if values is not None:
        keys = keys + "\0" + np.asarray(values, dtype=object).astype(str)
    _, inverse, sizes = np.unique(keys, return_inverse=True, return_counts=True)
    quota = np.ones(len(sizes), dtype=int)
    wanted = sizes / n * max(limit - len(sizes), 0)
    quota += np.floor(wanted).astype(int)
    rest = limit - quota.sum()
    if rest > 0:
        quota[np.argsort(-(wanted - np.floor(wanted)), kind="stable")[:rest]] += 1
    quota = np.minimum(quota, sizes)
    rng = np.random.default_rng(seed)
    chosen = [
        rng.choice(np.flatnonzero(inverse == cell), size=int(size), replace=False)
        for cell, size in enumerate(quota)
    ]
    cell = "label" if values is None else f"label x {column}"
    rule = (
        f"{int(quota.sum()):,} of {n:,} films, drawn at random within each {cell} cell in "
        f"proportion to its size (at least one each), seed {seed}"
    )
    return np.sort(np.concatenate(chosen)), rule


def nearest(
    base: np.ndarray, base_units: np.ndarray, queries: np.ndarray, query_units: np.ndarray, k: int
) -> np.ndarray:
    """For each query, the indices of its ``k`` nearest base rows by inner product among the
    rows of other units (patients), nearest first; -1 where fewer are left. Exact (faiss's flat
    index): a query's own films can take at most their number of the places searched, so most
    queries are searched together, k + that many deep; a patient with more than CROWD films is
    searched past by a selector instead, so that one large patient never deepens every search."""
    import faiss

    found = np.full((len(queries), k), -1, dtype=np.int64)
    if not len(queries) or not len(base):
        return found
    sizes = np.bincount(base_units, minlength=int(max(base_units.max(), query_units.max())) + 1)
    own = sizes[query_units]
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(np.ascontiguousarray(base))
    few = np.flatnonzero(own <= CROWD)
    if len(few):
        depth = int(min(len(base), k + own[few].max()))
        _, hits = index.search(np.ascontiguousarray(queries[few]), depth)
        other = (hits >= 0) & (base_units[np.maximum(hits, 0)] != query_units[few, None])
        rank = np.cumsum(other, axis=1)
        rows, places = np.nonzero(other & (rank <= k))
        found[few[rows], rank[rows, places] - 1] = hits[rows, places]
    for unit in np.unique(query_units[own > CROWD]):
        mine = np.flatnonzero(query_units == unit)
        batch = faiss.IDSelectorBatch(np.flatnonzero(base_units == unit).astype(np.int64))
        others = faiss.IDSelectorNot(batch)  # both kept alive while faiss reads them
        params = faiss.SearchParameters()
        params.sel = others
        _, hits = index.search(
            np.ascontiguousarray(queries[mine]), min(k, len(base)), params=params
        )
        found[mine, : hits.shape[1]] = hits
    return found


def _shares(neighbours: np.ndarray, codes: np.ndarray, own: np.ndarray) -> np.ndarray:
    """Per query, the share of its neighbours (-1: none) whose code is its own; NaN without a
    neighbour or without an own code (-1)."""
    present = neighbours >= 0
    equal = present & (codes[np.maximum(neighbours, 0)] == own[:, None])
    count = present.sum(axis=1)
    share = np.divide(equal.sum(axis=1), count, out=np.full(len(own), np.nan), where=count > 0)
    return np.where(own >= 0, share, np.nan)


def _count(rows: Sequence[np.ndarray], asked: Sequence[np.ndarray]) -> np.ndarray:
    """How many rows carry each asked combination of codes."""
    keys, counts = np.unique(np.stack(rows, axis=1), axis=0, return_counts=True)
    table = dict(zip(map(tuple, keys.tolist()), counts.tolist(), strict=True))
    return np.asarray([table.get(tuple(k), 0) for k in np.stack(asked, axis=1).tolist()])


def _chance(
    match: np.ndarray, within: np.ndarray, units: np.ndarray, asked: np.ndarray
) -> np.ndarray:
    """Per asked row, the share of the rows with its ``within`` code (its class, or any) and not
    of its unit that carry its ``match`` code: what a neighbour drawn at random would match."""
    m, w, u = match[asked], within[asked], units[asked]
    same = _count([within, match], [w, m]) - _count([units, within, match], [u, w, m])
    searched = _count([within], [w]) - _count([units, within], [u, w])
    share = np.divide(same, searched, out=np.full(len(asked), np.nan), where=searched > 0)
    return np.where(m >= 0, share, np.nan)


def neighbourhood(
    name: str,
    X: np.ndarray,
    y: np.ndarray,
    classes: Sequence[str],
    units: np.ndarray,
    column: str | None,
    values: np.ndarray | None,
    *,
    unit: str,
    seed: int,
    replicates: int,
    rows_sha256: str,
    k: int = K,
    limit: int = SAMPLE,
) -> tuple[Neighbourhood, Sample]:
    """The neighbourhood shares of a store's films (``units``: each row's patient, or the row
    itself; ``values``: the column's values, "" where unknown), and the sample they asked."""
    y = np.asarray(y)
    asked, rule = draw(y, values, limit, seed, column or "value")
    _, unit_codes = np.unique(np.asarray(units).astype(str), return_inverse=True)
    if values is None:
        value_codes = np.full(len(y), -1)
    else:
        present = np.asarray(values, dtype=object) != ""
        names, codes = np.unique(np.asarray(values, dtype=object).astype(str), return_inverse=True)
        value_codes = np.where(present, codes, -1)
    Z = unit_vectors(X)
    around = nearest(Z, unit_codes, Z[asked], unit_codes[asked], k)
    in_class = np.full_like(around, -1)
    for c in range(len(classes)):
        rows, mine = np.flatnonzero(y == c), np.flatnonzero(y[asked] == c)
        found = nearest(Z[rows], unit_codes[rows], Z[asked[mine]], unit_codes[asked[mine]], k)
        in_class[mine] = np.where(found >= 0, rows[np.maximum(found, 0)], -1)
    del Z
    own_y, own_v = y[asked], value_codes[asked]
    everything = np.zeros(len(y), dtype=np.int64)
    shares = np.stack(
        [
            _shares(around, y, own_y),
            _shares(around, value_codes, own_v),
            _shares(in_class, value_codes, own_v),
        ],
        axis=1,
    )
    chance = np.stack(
        [
            _chance(y, everything, unit_codes, asked),
            _chance(value_codes, everything, unit_codes, asked),
            _chance(value_codes, y, unit_codes, asked),
        ],
        axis=1,
    )
    groups: list[tuple[str, ...]] = [("all",)]
    masks = [np.ones(len(asked), dtype=bool)]
    for c, cls in enumerate(classes):
        groups.append(("class", cls))
        masks.append(own_y == c)
        if values is not None:
            for v in np.unique(own_v[(own_y == c) & (own_v >= 0)]):
                groups.append(("value", cls, str(names[v])))
                masks.append((own_y == c) & (own_v == v))
    summary = _summarise(
        shares, chance, np.stack(masks, axis=1), units[asked], own_y, replicates, seed
    )
    stats = dict(zip(groups, summary, strict=True))
    measures = MEASURES if values is not None else MEASURES[:1]
    classes_out: dict[str, Group] = {}
    for cls in classes:
        group = _group(stats[("class", cls)], measures)
        if values is not None:
            group["by_value"] = {
                key[2]: _group(stats[key], ("same_value_in_class",))
                for key in stats
                if key[0] == "value" and key[1] == cls
            }
        classes_out[cls] = group
    report = Neighbourhood(
        backbone=name,
        column=column,
        k=k,
        metric="cosine",
        films=len(asked),
        rows=len(y),
        sample=rule,
        seed=seed,
        unit=unit,
        replicates=replicates,
        rows_sha256=rows_sha256,
        all=_group(stats[("all",)], measures),
        classes=classes_out,
    )
    return report, films(name, X, y, classes, values, asked)


def sample(
    name: str,
    X: np.ndarray,
    y: np.ndarray,
    classes: Sequence[str],
    column: str | None,
    values: np.ndarray | None,
    *,
    seed: int,
    limit: int = SAMPLE,
) -> Sample:
    """The films `neighbourhood` asks, drawn alone: when its report comes from the cache, the
    map still needs them (the draw is seeded, so they are the same films)."""
    asked, _ = draw(np.asarray(y), values, limit, seed, column or "value")
    return films(name, X, y, classes, values, asked)


def films(
    name: str,
    X: np.ndarray,
    y: np.ndarray,
    classes: Sequence[str],
    values: np.ndarray | None,
    asked: np.ndarray,
) -> Sample:
    """The asked rows as a map draws them."""
    labels = np.asarray(classes, dtype=object)[np.asarray(y)[asked]]
    kept = None if values is None else np.asarray(values, dtype=object)[asked]
    return Sample(name, np.asarray(X)[asked], labels, kept)


def _group(stat: tuple[int, list[Share]], measures: Sequence[str]) -> Group:
    films, shares = stat
    group = Group(films=films)
    for name in measures:
        group[name] = shares[MEASURES.index(name)]  # type: ignore[literal-required]
    return group


def _summarise(
    shares: np.ndarray,
    chance: np.ndarray,
    masks: np.ndarray,
    units: np.ndarray,
    y: np.ndarray,
    replicates: int,
    seed: int,
) -> list[tuple[int, list[Share]]]:
    """Per group (a column of ``masks``): its films and, per measure, the mean share over the
    films where it is defined, the 95% percentile interval of that mean over patient bootstrap
    replicates, and the mean chance."""
    boot: list[list[np.ndarray]] = [[] for _ in MEASURES]
    defined = [masks & np.isfinite(shares[:, [m]]) for m in range(len(MEASURES))]
    filled = np.nan_to_num(shares)
    for weights in bootstrap_weights(units, replicates, seed, y=y):
        for m, valid in enumerate(defined):
            numerator = weights @ (valid * filled[:, [m]])
            denominator = weights @ valid
            with np.errstate(invalid="ignore", divide="ignore"):
                boot[m].append(numerator / denominator)
    draws = [np.concatenate(b) for b in boot]
    out = []
    for g in range(masks.shape[1]):
        stats = []
        for m, valid in enumerate(defined):
            rows = valid[:, g]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # an empty group: None
                lo, hi = (
                    np.nanpercentile(draws[m][:, g], [2.5, 97.5]) if rows.any() else (np.nan,) * 2
                )
            stats.append(
                Share(
                    share=_rounded(shares[rows, m].mean() if rows.any() else np.nan),
                    ci95=[_rounded(lo), _rounded(hi)],
                    chance=_rounded(chance[rows, m].mean() if rows.any() else np.nan),
                )
            )
        out.append((int(masks[:, g].sum()), stats))
    return out


def percent(share: Share) -> str:
    """``93% [92%, 94%]``: a share and its interval, as every report shows it."""
    lo, hi = share["ci95"]
    shown = [("n/a" if v is None else f"{v:.0%}") for v in (share["share"], lo, hi)]
    return f"{shown[0]} [{shown[1]}, {shown[2]}]"


def chance(share: Share) -> str:
    return "n/a" if share["chance"] is None else f"{share['chance']:.0%}"


def _rounded(value: float) -> float | None:
    return round(float(value), 4) if np.isfinite(value) else None
