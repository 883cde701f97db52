"""Versions recorded in every store, model and report, so a number can be traced to its software."""

from __future__ import annotations

import hashlib
import platform
import re
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path

TOOL = "cxr-transfer"
# The exact versions `make install` installs (`make lock` compiles it), beside the package's
# modules in a clone; an installed wheel has none.
LOCK = Path(__file__).resolve().parents[1] / "requirements.lock"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


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
    found = {"python": platform.python_version(), TOOL: tool_version(), "lock": lock_state()}
    for name in modules:
        found[name] = "not installed"
        for distribution in DISTRIBUTIONS.get(name, (name,)):
            try:
                found[name] = metadata.version(distribution)
                break
            except metadata.PackageNotFoundError:
                continue
    return found


@lru_cache(maxsize=1)
def lock_state(path: Path = LOCK) -> str:
    """The lock's digest, and whether this environment is what it pins: a number made in a
    changed environment (another numpy, say) says so, and one made without the lock (``pip
    install cxr-transfer``) says that."""
    try:
        text = path.read_bytes()
    except OSError:
        return "none (not installed from a lock)"
    digest = "sha256:" + hashlib.sha256(text).hexdigest()[:16]
    differ = [
        f"{name} {installed}"
        for name, pinned, installed in _installed_pins(text.decode(errors="replace"))
        if installed != pinned
    ]
    if not differ:
        return digest
    more = f" and {len(differ) - 3} more" if len(differ) > 3 else ""
    return f"{digest}, but installed: {', '.join(differ[:3])}{more}"


def _installed_pins(text: str) -> list[tuple[str, str, str]]:
    """(name, pinned version, installed version) of every pin that applies here (its marker
    evaluated for this Python and platform)."""
    from packaging.markers import InvalidMarker, Marker

    installed = _installed()
    found = []
    for line in text.splitlines():
        pin = _PIN.match(line.strip())
        if pin is None:
            continue
        name, pinned, marker = pin.groups()
        try:
            if marker and not Marker(marker).evaluate():
                continue
        except InvalidMarker:
            continue
        found.append((name, pinned, installed.get(_normal(name), "missing")))
    return found


def _installed() -> dict[str, str]:
    """Every installed distribution's version, from the ``NAME-VERSION.dist-info`` folder
    names on sys.path (one listing per folder: reading each one's metadata costs 0.25 s)."""
    found: dict[str, str] = {}
    for folder in map(Path, sys.path):
        try:
            names = [p.name for p in folder.iterdir() if p.name.endswith(".dist-info")]
        except OSError:
            continue
        for name in names:
            project, _, version = name[: -len(".dist-info")].rpartition("-")
            found.setdefault(_normal(project), version)
    return found


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
