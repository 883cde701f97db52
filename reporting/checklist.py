"""TRIPOD+AI and CLAIM items as data: each answered from the documents, or left to the author.

TRIPOD+AI: Collins et al., BMJ 2024;385:e078378 (27 items). CLAIM: Mongan et al., Radiology:
Artificial Intelligence 2020 (42 items). Only items the tool's own records answer have a
function; the rest (background, ethics, funding, clinical use, ...) are the author's to write.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cxr.classify.records import CROSS_VALIDATION, Protocol, Validation
from cxr.reporting.documents import Documents
from cxr.reporting.html import interval

Answer = Callable[[Documents], "str | None"]


def _results(docs: Documents) -> list[dict[str, Any]]:
    return [r for d in docs.evaluations for r in d.data["results"]]


def _stores(docs: Documents) -> dict[str, dict[str, Any]]:
    return {
        b: s for d in docs.evaluations for b, s in d.data["provenance"].get("stores", {}).items()
    }


def _first(docs: Documents) -> dict[str, Any] | None:
    results = _results(docs)
    return results[0] if results else None


def data_sources(docs: Documents) -> str | None:
    stores = _stores(docs)
    roots = sorted(
        {
            f"{s.get('data_root', '')} (manifest {s.get('manifest') or 'none'})"
            for s in stores.values()
        }
    )
    probes = [
        f"{c}: {len(p.get('classes', {}))} values"
        for a in docs.audits
        for c, p in a.data["probes"].items()
        if p.get("classes")
    ]
    return "; ".join([*roots, *probes]) or None


def counts(docs: Documents) -> str | None:
    r = _first(docs)
    if r is None:
        return None
    classes = ", ".join(f"{k} {v}" for k, v in r.get("class_counts", {}).items())
    return f"{r.get('n')} images of {r.get('n_patients')} patients ({classes})"


def preparation(docs: Documents) -> str | None:
    parts = [
        f"{b}: {s.get('preprocessing')}, resize {s.get('resize')} to {s.get('input_size')}, "
        f"region {s.get('region')}"
        for b, s in _stores(docs).items()
    ]
    parts += [
        f"audit: {a.data['counts'].get('clusters')} duplicate cluster(s) found" for a in docs.audits
    ]
    return "; ".join(parts) or None


def outcome(docs: Documents) -> str | None:
    r = _first(docs)
    if r is None:
        return None
    task = r.get("task", {})
    classes = ", ".join(map(str, r.get("classes", [])))
    return f"{task.get('target', 'label')}: {task.get('name', '')} (classes {classes})"


def predictors(docs: Documents) -> str | None:
    inputs = sorted(
        {f"{r.get('backbone')} {r.get('inputs', 'embeddings')}" for r in _results(docs)}
    )
    return "; ".join(inputs) or None


def sample_size(docs: Documents) -> str | None:
    curves = [c for d in docs.evaluations for c in d.data.get("learning_curves", [])]
    size = counts(docs)
    if curves:
        within = ", ".join(
            f"{c.get('backbone')} + {c.get('head')}: {c.get('within_margin_from') or 'not reached'}"
            for c in curves
        )
        return f"{size}; learning curves, within the margin of all data from: {within}"
    return f"{size}; no learning curve (--train-sizes)" if size else None


def partitions(docs: Documents) -> str | None:
    r = _first(docs)
    if r is None:
        return None
    cv, kind = Protocol.of(r), Validation.of(r).kind
    folds = f"{cv.folds} folds x {cv.repeats} repeat(s), seed {cv.seed}"
    return f"{cv.scheme or None}, {folds}; validation {kind}"


def disjoint(docs: Documents) -> str | None:
    r = _first(docs)
    if r is None:
        return None
    cv = Protocol.of(r)
    level = cv.unit if cv.grouped else "image"
    return f"partitions disjoint at the {level} level; bootstrap unit {r.get('bootstrap_unit')}"


def model(docs: Documents) -> str | None:
    stores, results = _stores(docs), _results(docs)
    backbones = dict.fromkeys(str(r.get("backbone")) for r in results)
    frozen = [f"{b} ({stores.get(b, {}).get('constructor', '')})" for b in backbones]
    heads = ", ".join(dict.fromkeys(str(r.get("head")) for r in results))
    return f"frozen backbones {', '.join(frozen)}; heads {heads}" if results else None


def training(docs: Documents) -> str | None:
    r = _first(docs)
    if r is None:
        return None
    search = (
        "hyperparameters searched in inner folds" if r.get("search") else "fixed hyperparameters"
    )
    return f"{search}; e.g. {r.get('head')}: {r.get('params')}"


def initialisation(docs: Documents) -> str | None:
    weights = [
        f"{b}: {s.get('weights')} {s.get('weights_file', '')} sha256 {s.get('weights_sha256', '')}"
        for b, s in _stores(docs).items()
    ]
    return "; ".join(weights) or None


def software(docs: Documents) -> str | None:
    versions = {
        k: v for d in docs.evaluations for k, v in d.data["provenance"].get("versions", {}).items()
    }
    return ", ".join(f"{k} {v}" for k, v in versions.items()) or None


def selection(docs: Documents) -> str | None:
    d = next(iter(docs.evaluations), None)
    if d is None:
        return None
    metric = d.data["settings"].get("metric")
    return f"best of {len(d.data['results'])} result(s) by {metric}; the rest paired against it"


def measures(docs: Documents) -> str | None:
    names = list(dict.fromkeys(k for r in _results(docs) for k in r.get("metrics", {})))
    return ", ".join(names) or None


def uncertainty(docs: Documents) -> str | None:
    d, r = next(iter(docs.evaluations), None), _first(docs)
    if d is None or r is None:
        return None
    b = d.data["provenance"].get("bootstrap", {})
    unit = r.get("bootstrap_unit")
    return (
        f"95% CIs from {b.get('replicates')} bootstrap replicates over {unit} units "
        f"(percentiles {b.get('percentiles')}); paired bootstrap p-values"
    )


def robustness(docs: Documents) -> str | None:
    parts = [
        f"{len(d.data.get('confounds', []))} confound column(s) tested" for d in docs.evaluations
    ]
    parts += [
        f"probe {c}: balanced accuracy {p.get('balanced_accuracy')}"
        for a in docs.audits
        for c, p in a.data["probes"].items()
        if p.get("balanced_accuracy") is not None
    ]
    parts += (
        [f"{sum('region_gain' in r for r in _results(docs))} region comparison(s)"]
        if any("region_gain" in r for r in _results(docs))
        else []
    )
    return "; ".join(parts) or None


def external(docs: Documents) -> str | None:
    held = [
        f"{r.get('backbone')} + {r.get('head')}: {r['validation']}"
        for r in _results(docs)
        if Validation.of(r).kind != CROSS_VALIDATION
    ]
    return "; ".join(held) or None


def best(docs: Documents) -> str | None:
    for r in _results(docs):
        if r.get("comparison", {}).get("is_best"):
            metric = r["comparison"].get("metric", "")
            stat = r.get("metrics", {}).get(metric, {})
            name = f"{r.get('backbone')} + {r.get('head')}"
            return f"{name}: {metric} {interval(stat)} (pooled [95% CI])"
    return None


def failures(docs: Documents) -> str | None:
    r = _first(docs)
    if r is None or "confusion_matrix" not in r:
        return None
    galleries = sum("-wrong-" in str(p) for d in docs.evaluations for p in d.data.get("plots", []))
    return (
        "confusion matrices (Figures) and per-class tables; "
        f"{galleries} gallery(ies) of the most confidently wrong films"
    )


def imbalance(docs: Documents) -> str | None:
    r = _first(docs)
    return (
        f"class counts {r.get('class_counts')}; balanced accuracy and per-class metrics reported"
        if r
        else None
    )


def output(docs: Documents) -> str | None:
    d = next(iter(docs.evaluations), None)
    return (
        f"class probabilities; operating point {d.data['settings'].get('operating_point')} "
        "for the fixed-specificity metrics"
        if d
        else None
    )


def calibration(docs: Documents) -> str | None:
    return (
        "Brier score and expected calibration error with 95% CIs; reliability diagrams"
        if any("brier" in r.get("metrics", {}) for r in _results(docs))
        else None
    )


def performance(docs: Documents) -> str | None:
    parts = [p for p in (best(docs), calibration(docs)) if p]
    return "; ".join(parts) or None


@dataclass(frozen=True)
class Item:
    guideline: str
    number: str
    title: str
    answer: Answer | None  # None: only the author can answer it


TRIPOD_AI = (
    ("1", "Title", None), ("2", "Abstract", None), ("3", "Background", None),
    ("4", "Objectives", None), ("5", "Data sources", data_sources),
    ("6", "Participants", counts), ("7", "Data preparation", preparation),
    ("8", "Outcome", outcome), ("9", "Predictors", predictors),
    ("10", "Sample size", sample_size), ("11", "Missing data", None),
    ("12", "Analytical methods", partitions), ("13", "Class imbalance", imbalance),
    ("14", "Fairness", None), ("15", "Model output", output),
    ("16", "Training versus evaluation", disjoint), ("17", "Ethical approval", None),
    ("18", "Open science", software), ("19", "Patient and public involvement", None),
    ("20", "Participants (results)", counts), ("21", "Model development", training),
    ("22", "Model specification", model), ("23", "Model performance", performance),
    ("24", "Model updating", None), ("25", "Interpretation", None),
    ("26", "Limitations", None), ("27", "Usability in current care", None),
)  # fmt: skip

CLAIM = (
    ("1", "Title", None), ("2", "Abstract", None), ("3", "Background", None),
    ("4", "Objectives and hypotheses", None), ("5", "Study design", None),
    ("6", "Study goal", None), ("7", "Data sources", data_sources),
    ("8", "Eligibility criteria", outcome), ("9", "Data pre-processing", preparation),
    ("10", "Selection of data subsets", outcome), ("11", "De-identification", None),
    ("12", "Missing data", None), ("13", "Ground truth definition", None),
    ("14", "Rationale for the ground truth", None), ("15", "Source of annotations", None),
    ("16", "Annotators' qualifications", None), ("17", "Annotation tools", None),
    ("18", "Inter- and intra-rater variability", None), ("19", "Data partitions", partitions),
    ("20", "Level at which partitions are disjoint", disjoint),
    ("21", "Model description", model), ("22", "Software", software),
    ("23", "Initialisation of parameters", initialisation), ("24", "Training details", training),
    ("25", "Model selection", selection), ("26", "Ensembling", None),
    ("27", "Performance metrics", measures), ("28", "Uncertainty and significance", uncertainty),
    ("29", "Robustness or sensitivity analysis", robustness), ("30", "Explainability", None),
    ("31", "External validation", external), ("32", "Flow of participants", counts),
    ("33", "Demographic and clinical characteristics", None),
    ("34", "Performance of the final model", best), ("35", "Diagnostic accuracy estimates", best),
    ("36", "Failure analysis", failures), ("37", "Limitations", None),
    ("38", "Implications for practice", None), ("39", "Registration", None),
    ("40", "Protocol", None), ("41", "Availability of software", software),
    ("42", "Funding", None),
)  # fmt: skip

ITEMS: tuple[Item, ...] = (
    *(Item("TRIPOD+AI", *row) for row in TRIPOD_AI),
    *(Item("CLAIM", *row) for row in CLAIM),
)

TOOL = "from the tool"
AUTHOR = "author to complete"
ABSENT = "not in these documents"
STATUSES = (TOOL, AUTHOR, ABSENT)


@dataclass(frozen=True)
class Filled:
    item: Item
    status: str  # one of STATUSES
    text: str


def fill(docs: Documents) -> list[Filled]:
    """Every item with its answer from the documents, or why it has none."""
    filled = []
    for item in ITEMS:
        answer = item.answer(docs) if item.answer is not None else None
        status = TOOL if answer else AUTHOR if item.answer is None else ABSENT
        filled.append(Filled(item, status, answer or ""))
    return filled


def tally(filled: list[Filled]) -> dict[str, int]:
    """Items per status, in the order of STATUSES (statuses without items left out)."""
    counts = {s: sum(f.status == s for f in filled) for s in STATUSES}
    return {s: n for s, n in counts.items() if n}
