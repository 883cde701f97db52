"""Out-of-fold predictions: what fitting a head on every split gives (`cxr.classify.fitting`),
what the fit cache keeps (`cxr.classify.fitcache`) and what scores, curves and comparisons read.
Its own module, so that the fitting and its cache each import it and not each other."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OutOfFold:
    """Out-of-fold predictions of one head, pooled over all repeats (each row once per repeat)."""

    row: np.ndarray  # index into the task's rows
    y: np.ndarray
    proba: np.ndarray  # (len(row), n_classes)
    fold: np.ndarray  # index of the split that tested the row (CV: repeat * folds + fold)
    best_params: list[dict]  # per fold, with --search
    warnings: list[str]  # distinct warnings raised while fitting, with the number of folds

    def only(self, folds: Sequence[int]) -> OutOfFold:
        """The predictions of some splits only (one held-out value, say)."""
        keep = np.isin(self.fold, list(folds))
        return OutOfFold(
            self.row[keep],
            self.y[keep],
            self.proba[keep],
            self.fold[keep],
            self.best_params,
            self.warnings,
        )
