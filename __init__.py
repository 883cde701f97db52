"""cxr: chest X-ray classification research by transfer learning.

Installed, the repository root is the package ``cxr`` (pyproject maps it with ``package-dir``):
``cxr.extract`` (stage 1, images -> embeddings, the only TensorFlow code), ``cxr.store`` (the
HDF5 feature store, the contract between the stages), ``cxr.classify`` (stage 2, embeddings ->
metrics), ``cxr.audit`` (duplicates and confounds), ``cxr.reproduce`` (the study) and
``cxr.cli`` (the `cxr` command). Importing ``cxr`` imports nothing else, so it stays instant.

The Python interface (``cxr.load_store``, ``cxr.extract_features``, ``cxr.evaluate``, ``cxr.audit``,
``cxr.train``, ``cxr.predict``) lives in ``cxr.api`` and is loaded on first use.
"""

_API = (
    "load_store",
    "extract_features",
    "evaluate",
    "audit",
    "train",
    "predict",
    "Evaluation",
    "Audit",
)
__all__ = ["__version__", *_API]


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})


def __getattr__(name: str):
    """``cxr.evaluate`` and friends, and ``__version__`` (importlib.metadata costs a start-up
    that `cxr --help` does not need), imported when first used (PEP 562)."""
    if name == "__version__":
        from importlib import metadata

        try:
            version = metadata.version("cxr-transfer")
        except metadata.PackageNotFoundError:  # a checkout that was never installed
            version = "unknown"
        globals()["__version__"] = version
        return version
    if name in _API:
        from cxr import api

        return getattr(api, name)
    raise AttributeError(f"module 'cxr' has no attribute {name!r}")
