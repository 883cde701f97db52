"""The HDF5 feature store: the one contract between extraction and classification (no TF)."""

from store.errors import CxrError
from store.reader import FeatureSet, describe, find_stores, load
from store.schema import StoreError

__all__ = ["CxrError", "FeatureSet", "StoreError", "describe", "find_stores", "load"]
