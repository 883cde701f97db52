"""The metrics table: every metric the reports show is one ``register(Metric(...))`` here.

The CV summary, the JSON, the terminal tables and the plots all read the table, and the CLI lists
its names as ``--metric``'s choices; so this module is plain data, and `cxr evaluate --help` pays
for no numpy. The built-in metrics' functions import their numpy kernels (`cxr.classify.outcomes`)
when first computed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from cxr.classify.outcomes import Outcomes


@dataclass(frozen=True)
class Metric:
    """One row of the metrics table.

    ``fn`` maps Outcomes to ``(...)`` for an overall metric or ``(..., k)`` for a per-class one;
    ``name`` is the JSON key, ``label`` what people read in tables and plots (``{op}`` in it is
    replaced by the operating point). ``summary``: a column of the terminal's summary table
    (every metric is in the JSON); ``higher_is_better`` orders results when comparing them.
    """

    name: str
    label: str
    fn: Callable[[Outcomes], np.ndarray]
    per_class: bool = False
    summary: bool = True
    higher_is_better: bool = True

    def title(self, operating_point: float) -> str:
        return self.label.format(op=f"{100 * operating_point:g}%")


METRICS: list[Metric] = []


def register(metric: Metric) -> Metric:
    """Add a metric to every report; names are unique per scope (overall / per class)."""
    if metric.name == "per_class" or any(
        m.name == metric.name and m.per_class == metric.per_class for m in METRICS
    ):
        raise ValueError(f"a metric named {metric.name!r} is already registered")
    METRICS.append(metric)
    return metric


def overall_metrics() -> list[Metric]:
    return [m for m in METRICS if not m.per_class]


def per_class_metrics() -> list[Metric]:
    return [m for m in METRICS if m.per_class]


def metric_title(name: str, operating_point: float, *, per_class: bool = False) -> str:
    """A metric's JSON key as people say it (``sens_at_spec`` -> ``sens. @ 95% spec.``); a key
    the table does not know is shown as it is."""
    found = (m for m in METRICS if m.name == name and m.per_class == per_class)
    metric = next(found, None)
    return name if metric is None else metric.title(operating_point)


def overall_metric(name: str) -> Metric:
    """An overall metric by name (ValueError naming the choices)."""
    for m in overall_metrics():
        if m.name == name:
            return m
    choices = ", ".join(m.name for m in overall_metrics())
    raise ValueError(f"unknown metric {name!r}; choose from {choices}")


def _k() -> ModuleType:
    """The numpy kernels, imported when a built-in metric is first computed."""
    from cxr.classify import outcomes

    return outcomes


for _entry in (
    Metric("accuracy", "accuracy", lambda o: _k().accuracy(o.cm)),
    Metric("balanced_accuracy", "bal. accuracy", lambda o: _k().balanced_accuracy(o.cm)),
    Metric("macro_f1", "macro-F1", lambda o: _k().macro_f1(o.cm)),
    Metric("roc_auc", "ROC AUC", lambda o: _k().macro_roc_auc(o.auc)),
    Metric("brier", "Brier score", lambda o: o.brier, summary=False, higher_is_better=False),
    Metric("ece", "ECE", lambda o: o.ece, summary=False, higher_is_better=False),
    Metric("sensitivity", "sensitivity", lambda o: _k().sensitivity(o.cm), per_class=True),
    Metric("specificity", "specificity", lambda o: _k().specificity(o.cm), per_class=True),
    Metric("precision", "precision (PPV)", lambda o: _k().precision(o.cm), per_class=True),
    Metric("f1", "F1", lambda o: _k().f1(o.cm), per_class=True),
    Metric("roc_auc", "ROC AUC", lambda o: o.auc, per_class=True),
    Metric("sens_at_spec", "sens. @ {op} spec.", lambda o: o.sens_at_spec, per_class=True),
    Metric("spec_at_sens", "spec. @ {op} sens.", lambda o: o.spec_at_sens, per_class=True),
):
    register(_entry)
