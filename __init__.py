"""cxr: chest X-ray classification research by transfer learning.

Installed, the repository root is the package ``cxr`` (pyproject maps it with ``package-dir``):
``cxr.extract`` (stage 1, images -> embeddings, the only TensorFlow code), ``cxr.store`` (the
HDF5 feature store, the contract between the stages), ``cxr.classify`` (stage 2, embeddings ->
metrics), ``cxr.audit`` (duplicates and confounds), ``cxr.reproduce`` (the study) and
``cxr.cli`` (the `cxr` command). Importing ``cxr`` imports nothing else, so it stays instant.
"""

from importlib import metadata

try:
    __version__ = metadata.version("cxr-transfer")
except metadata.PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "unknown"
