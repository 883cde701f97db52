"""The HDF5 feature store: the one contract between extraction and classification (no TF)."""

from cxr.store.reader import FeatureSet, describe, find_stores, load
from cxr.store.schema import StoreError

__all__ = ["FeatureSet", "StoreError", "describe", "find_stores", "load"]
