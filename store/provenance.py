"""Versions recorded in every store, model and report, so a number can be traced to its software."""

from __future__ import annotations

import importlib
import platform
from importlib import metadata

TOOL = "cxr-transfer"


def tool_version() -> str:
    try:
        return metadata.version(TOOL)
    except metadata.PackageNotFoundError:
        return "unknown"


def library_versions(*modules: str) -> dict[str, str]:
    """``__version__`` of each module (imported if needed), plus Python and this tool."""
    found = {"python": platform.python_version(), TOOL: tool_version()}
    for name in modules:
        try:
            found[name] = str(getattr(importlib.import_module(name), "__version__", "unknown"))
        except ImportError:
            found[name] = "not installed"
    return found
