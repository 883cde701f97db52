"""Patient covariates beside (or instead of) the embeddings: `--covariates age,sex,view`.

The source study proposes to add "parameters of the medical history of the patient". Manifest
columns are appended to the embeddings as numbers: a column whose every known value is a number
stays a number (missing: NaN); any other column becomes a category code (missing: NaN). All
fitting happens in the head's Pipeline, inside each training fold: numeric columns are imputed
with the fold's median, categories with the fold's most frequent value and one-hot encoded
(a category the fold never saw is all zeros), and the head's StandardScaler then scales every
column. Turning text into codes is not fitted to anything (it is label-blind and every row gets
its own value's code), so nothing crosses a fold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from cxr.classify.tasks import TaskData
from cxr.errors import CxrError

# Columns that identify an image or a patient: as covariates they would let a head recognise
# the row instead of learning anything.
REFUSED = ("id", "path", "patient_id", "orig_patient_id", "orig_sha1", "orig_url")


@dataclass(frozen=True)
class Covariates:
    """Where the covariates sit in X, and how a fold turns them into features."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    n_embedding: int  # leading embedding columns (0: covariates only)

    @property
    def names(self) -> tuple[str, ...]:
        return (*self.numeric, *self.categorical)

    @property
    def label(self) -> str:
        return ", ".join(self.names)

    def transformer(self):
        """Embeddings pass through; numeric columns imputed; categories imputed and one-hot."""
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import OneHotEncoder

        start = self.n_embedding
        numeric = list(range(start, start + len(self.numeric)))
        categorical = list(range(numeric[-1] + 1 if numeric else start, start + len(self.names)))
        parts = []
        if self.n_embedding:
            parts.append(("embeddings", "passthrough", list(range(self.n_embedding))))
        if numeric:
            parts.append(
                ("numeric", SimpleImputer(strategy="median", keep_empty_features=True), numeric)
            )
        if categorical:
            encode = make_pipeline(
                SimpleImputer(strategy="most_frequent", keep_empty_features=True),
                OneHotEncoder(handle_unknown="ignore", sparse_output=False),
            )
            parts.append(("categorical", encode, categorical))
        return ColumnTransformer(parts)


def with_covariates(
    data: TaskData, names: Sequence[str], target: str, *, embeddings: bool = True
) -> tuple[TaskData, Covariates]:
    """The task with X = [embeddings | covariates] (or the covariates alone)."""
    for name in names:
        if name == target or name == "label":
            raise CxrError(f"`covariates` {name}: that is what the heads predict")
        if name in REFUSED:
            raise CxrError(
                f"`covariates` {name}: identifies an image or patient; a head would recognise "
                "rows instead of learning"
            )
        data.column(name, "`covariates`")
    as_numbers = {n: _numbers(data.column(n)) for n in names}
    numbers = {n: values for n, values in as_numbers.items() if values is not None}
    numeric = tuple(numbers)
    categorical = tuple(n for n in names if n not in numbers)
    columns = [*numbers.values(), *(_codes(data.column(n)) for n in categorical)]
    C = np.column_stack(columns).astype(np.float32)
    X = np.hstack([data.X, C]) if embeddings else C
    layout = Covariates(numeric, categorical, data.X.shape[1] if embeddings else 0)
    return replace(data, X=X), layout


def _numbers(values: np.ndarray) -> np.ndarray | None:
    """The column as floats (NaN where empty), or None when some value is not a number."""
    try:
        out = np.array([float(v) if v != "" else np.nan for v in values.tolist()])
    except ValueError:
        return None
    return out if np.isfinite(out).any() else None


def _codes(values: np.ndarray) -> np.ndarray:
    text = np.asarray(values).astype(str)
    known = np.unique(text[text != ""])
    codes = np.searchsorted(known, text).astype(float)
    codes[text == ""] = np.nan
    return codes
