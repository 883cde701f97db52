"""Versions recorded in every store, model and report, so a number can be traced to its software."""

from __future__ import annotations

import platform
from importlib import metadata

TOOL = "cxr-transfer"


def tool_version() -> str:
    try:
        return metadata.version(TOOL)
    except metadata.PackageNotFoundError:
        return "unknown"


# Import name -> the distributions that may provide it (the first one installed wins).
DISTRIBUTIONS = {
    "sklearn": ("scikit-learn",),
    "PIL": ("pillow",),
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-intel", "tf-nightly"),
}


def library_versions(*modules: str) -> dict[str, str]:
    """Installed version of each library, plus Python and this tool.

    Read from the installed distributions' metadata, never by importing them: recording that a
    store was made with TensorFlow 2.21 must not cost TensorFlow's import (seconds).
    """
    found = {"python": platform.python_version(), TOOL: tool_version()}
    for name in modules:
        found[name] = "not installed"
        for distribution in DISTRIBUTIONS.get(name, (name,)):
            try:
                found[name] = metadata.version(distribution)
                break
            except metadata.PackageNotFoundError:
                continue
    return found
