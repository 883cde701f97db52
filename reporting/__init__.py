"""`cxr report`: one self-contained HTML page from evaluate and audit JSON documents.

The page is built only from the documents (and the PNGs they name), escaped throughout and
served with a Content-Security-Policy that forbids scripts and every request but ``data:``
images, so a crafted document can neither run code nor make the page call out. No TensorFlow,
scikit-learn or matplotlib: the figures are the PNGs the run wrote, embedded as they are.
"""

from cxr.reporting.documents import Documents, read_documents
from cxr.reporting.page import Written, render_report, write_report

__all__ = ["Documents", "Written", "read_documents", "render_report", "write_report"]
