"""The OpenVINO model cache: folders of IR files published atomically, checked by sha256.

Every cached model (the converted f32 model, its int8 quantisations) is a folder under
``$KERAS_HOME/models/cxr-openvino/`` holding ``model.xml``, ``model.bin`` and ``meta.json``
(what decided the model, the sha256 of both files, the probe's figures). A folder is written
beside its final name (a fresh ``mkdtemp`` folder) and renamed into place, so a crash never
leaves half a model, and it is loaded only when both files match their recorded sha256.
``meta.json`` is sealed with this user's secret (`cxr.trust`): a Keras home on a shared drive
could otherwise hand the tool a model, or a probe figure, someone else made.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

from cxr.extract.hashing import sha256_file
from cxr.extract.registry import BackboneSpec
from cxr.extract.weights import ResolvedWeights
from cxr.trust import read_sealed_json, write_sealed_json

CACHE_FORMAT = 1
META_LIMIT = 1 << 20


def cache_root() -> Path:
    home = os.environ.get("KERAS_HOME", str(Path("~/.keras").expanduser()))
    return Path(home) / "models" / "cxr-openvino"


def cache_dir(spec: BackboneSpec, weights: ResolvedWeights) -> Path:
    """The cache folder of one converted model; named from package metadata, so looking it up
    imports nothing heavy (a run with nothing to compute imports no engine)."""
    identity = weights.sha256[:16] if weights.sha256 else f"random{weights.seed}"
    version = metadata.version("openvino")
    return cache_root() / f"{spec.name}-{identity}-{spec.input_size}-ov{version}"


def read_meta(folder: Path) -> dict | None:
    try:
        meta, _ = read_sealed_json(folder / "meta.json", "openvino:meta.json", META_LIMIT)
    except FileNotFoundError:
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == CACHE_FORMAT else None


def verified(folder: Path, meta: dict | None) -> bool:
    if meta is None:
        return False
    try:
        return all(sha256_file(folder / name) == sha for name, sha in meta["files"].items())
    except (OSError, KeyError, TypeError, AttributeError):
        return False


def write_json(path: Path, document: dict) -> None:
    """``meta.json``, sealed; without a usable secret nothing is written (and nothing cached
    is trusted)."""
    write_sealed_json(path, document, f"openvino:{path.name}")


def publish(model, folder: Path, meta: dict) -> None:
    """Save ``model`` (f32 weights) as ``folder``, atomically, with ``meta`` and the sha256 of
    both files in ``meta.json``; a folder another process published first is kept. The cache
    only saves time: where it cannot be written (a full disk, a read-only Keras home) the run
    goes on with the model in memory, converted again next time."""
    import openvino as ov

    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    except OSError:
        return
    try:
        ov.save_model(model, str(tmp / "model.xml"), compress_to_fp16=False)
        files = {name: sha256_file(tmp / name) for name in ("model.xml", "model.bin")}
        write_json(tmp / "meta.json", {**meta, "files": files, "probe": {}})
        os.rename(tmp, folder)
    except OSError:  # another process published the same model first (use theirs), or no space
        pass
    except RuntimeError:  # OpenVINO's own writer failed (on a full disk: "iostream error")
        pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already once renamed


def cached(folder: Path):
    """``(ov.Model, meta)`` of a cache folder whose files match their sha256, else None."""
    import openvino as ov

    meta = read_meta(folder)
    if not verified(folder, meta):
        return None
    try:
        return ov.Core().read_model(str(folder / "model.xml")), meta
    except RuntimeError:
        return None  # unreadable after all
