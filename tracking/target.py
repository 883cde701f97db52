"""Where runs are tracked: the tracking URI and experiment, checked once (no MLflow import).

The URI comes from ``--tracking-uri``, then ``$MLFLOW_TRACKING_URI``, then ``uri`` in the
``[tracking]`` table of the ``--config`` file, then a local SQLite file beside the features
folder (``sqlite:///<parent>/mlruns.db``, artifacts in ``<parent>/mlartifacts``), MLflow's own
default backend.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cxr.errors import CxrError
from cxr.files import read_toml

TABLE = "tracking"  # the config file's table (the other tables are heads)
KEYS = {"enabled": bool, "uri": str, "experiment": str}
EXPERIMENT = "cxr"
DATABASE = "mlruns.db"
ARTIFACTS = "mlartifacts"
NEEDS_MLFLOW = "tracking needs MLflow: pip install 'cxr-transfer[tracking]'"


@dataclass(frozen=True)
class Target:
    """A tracking store: its URI, the experiment runs go to, and (for a local SQLite file) the
    folder its artifacts go to."""

    uri: str
    experiment: str = EXPERIMENT
    artifacts: str | None = None  # a file URI for local stores; a server keeps its own

    @property
    def is_local(self) -> bool:
        return self.uri.startswith(("sqlite:", "file:")) or "://" not in self.uri

    def unwritable(self) -> str:
        """Why a local store cannot take a run ("" if it can, or if it is a server), found
        without MLflow: it retries a SQLite file it cannot open for about two minutes."""
        checks = []
        if self.is_local:
            checks.append((_local_path(self.uri), self.uri.startswith("sqlite:")))
        if self.artifacts and self.artifacts.startswith("file:"):
            checks.append((_local_path(self.artifacts), False))
        for path, is_file in checks:
            if path is not None and (problem := _unwritable(path, is_file)):
                return problem
        return ""


def _unwritable(path: Path, is_file: bool) -> str:
    """Why ``path`` (a file, or a folder) cannot be written or made ("" if it can)."""
    if path.exists():
        if is_file != path.is_file():
            return f"{path} is not a {'file' if is_file else 'folder'}"
        folder = path.parent if is_file else path
        writable = os.access(path, os.W_OK) and os.access(folder, os.W_OK)
        return "" if writable else f"{path} cannot be written"
    existing = next(p for p in path.parents if p.exists())
    if not existing.is_dir():
        return f"{existing} is not a folder"
    return "" if os.access(existing, os.W_OK) else f"{existing} cannot be written"


def settings(config: Path | None) -> dict[str, Any]:
    """The ``[tracking]`` table of a config file, its keys and types checked (CxrError naming
    the file otherwise); {} without a file or a table."""
    if config is None:
        return {}
    table = read_toml(Path(config), "TOML configuration").get(TABLE, {})
    if not isinstance(table, dict):
        raise CxrError(f"{config}: [{TABLE}] must be a table (enabled, uri, experiment)")
    for key, value in table.items():
        kind = KEYS.get(key)
        if kind is None:
            raise CxrError(f"{config}: [{TABLE}] has no setting {key!r}; valid: {', '.join(KEYS)}")
        if not isinstance(value, kind) or (isinstance(value, str) and not value.strip()):
            raise CxrError(f"{config}: [{TABLE}] {key} must be a {kind.__name__}, not {value!r}")
    return table


def resolve(uri: str | None, features: Path, config: Path | None = None) -> Target:
    """The tracking store a command uses (see the module docstring for the order)."""
    table = settings(config)
    chosen = uri or os.environ.get("MLFLOW_TRACKING_URI") or table.get("uri")
    experiment = table.get("experiment", EXPERIMENT)
    if chosen:
        if chosen.startswith("sqlite:///"):
            folder = Path(chosen.removeprefix("sqlite:///")).parent
            return Target(chosen, experiment, (folder / ARTIFACTS).resolve().as_uri())
        return Target(chosen, experiment)
    parent = Path(features).resolve().parent
    return Target(f"sqlite:///{parent / DATABASE}", experiment, (parent / ARTIFACTS).as_uri())


def enabled(track: bool, uri: str | None, config: Path | None) -> bool:
    """--track, --tracking-uri, or ``enabled = true`` in the config's [tracking] table."""
    return track or uri is not None or bool(settings(config).get("enabled", False))


def require_mlflow() -> None:
    """Tracking asked for without MLflow installed: one line naming the fix before any work, not
    a warning after the whole evaluation (``find_spec`` finds MLflow without importing it)."""
    if importlib.util.find_spec("mlflow") is None:
        raise CxrError(NEEDS_MLFLOW)


def _local_path(uri: str) -> Path | None:
    """The file or folder of a local store's URI (``sqlite:///x.db``, ``file:///x``, a path)."""
    from urllib.parse import unquote, urlparse

    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///"))
    if uri.startswith("file:"):
        return Path(unquote(urlparse(uri).path))
    return Path(uri) if "://" not in uri and ":" not in uri[:2] else None
