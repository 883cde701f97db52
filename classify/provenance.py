"""What produced a result: library versions and the store's attributes, as JSON-ready values."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from cxr.store.provenance import library_versions as _versions

DISCLAIMER = "Research results, not a diagnostic device: do not use for clinical decisions."


def library_versions() -> dict[str, str]:
    """What stage 2 results depend on (stage 1's versions are in the store's attributes)."""
    return _versions("numpy", "scipy", "sklearn", "joblib", "h5py")


def jsonable(value):
    """Plain Python values for json.dumps: numpy scalars/arrays, tuples, NaN -> None."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
