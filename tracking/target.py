"""Where runs are tracked: the tracking URI and experiment, checked once (no MLflow import).

The URI comes from ``--tracking-uri``, then ``$MLFLOW_TRACKING_URI``, then ``uri`` in the
``[tracking]`` table of the ``--config`` file, then a local SQLite file beside the features
folder (``sqlite:///<parent>/mlruns.db``, artifacts in ``<parent>/mlartifacts``), MLflow's own
default backend.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cxr.errors import CxrError
from cxr.files import read_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib

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


def settings(config: Path | None) -> dict[str, Any]:
    """The ``[tracking]`` table of a config file, its keys and types checked (CxrError naming
    the file otherwise); {} without a file or a table."""
    if config is None:
        return {}
    text = read_text(Path(config), "TOML configuration")
    try:
        table = tomllib.loads(text).get(TABLE, {})
    except tomllib.TOMLDecodeError as exc:
        raise CxrError(f"{config}: cannot read TOML ({exc})") from None
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
