"""Start joblib's worker processes before the main process needs them.

A fresh ``cxr evaluate`` spends about a second importing scikit-learn in the main process, then
waits another second while each loky worker imports it again on its first task. Started as soon
as the first store shows a fit to do, the workers import while the main process loads and
checks: the two costs overlap instead of adding up (the pool is joblib's reusable one, so the
later ``Parallel`` calls find it running). A re-run that the fit cache serves starts none, and
imports no joblib: every worker would cost a core-second of imports for nothing.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cxr.interrupt import quiet_tracker

if TYPE_CHECKING:
    from joblib import Parallel


def _import(modules: Sequence[str]) -> None:
    for module in modules:
        importlib.import_module(module)


def pool(jobs: int, **options: Any) -> Parallel:
    """joblib's ``Parallel`` over ``jobs`` workers, loky's resource tracker started quiet first
    (`cxr.interrupt.quiet_tracker`: a command stopped mid-fit prints one line, no traceback);
    with one job joblib runs in this process and no tracker is started."""
    from joblib import Parallel, effective_n_jobs

    if effective_n_jobs(jobs) > 1:
        quiet_tracker()
    return Parallel(n_jobs=jobs, **options)


def start_workers(jobs: int, heads: Sequence[str] | None) -> threading.Thread | None:
    """Warm ``jobs`` workers in the background with the modules that fitting ``heads`` (None:
    every head) imports; the thread doing it, or None with one job (no pool)."""
    from joblib import delayed, effective_n_jobs

    from cxr.classify.heads import HEADS

    n = effective_n_jobs(jobs) if jobs != 0 else 0  # 0 is evaluate's to refuse, in its words
    if n < 2:
        return None
    modules = [
        "cxr.classify.fitting",
        *(HEADS[h].classifier_path.rsplit(".", 1)[0] for h in heads or HEADS),
    ]
    warm = pool(jobs)
    thread = threading.Thread(
        target=warm, args=((delayed(_import)(modules) for _ in range(n)),), daemon=True
    )
    thread.start()
    return thread
