"""int8: NNCF's post-training quantisation of the converted model, calibrated and cached.

The quantised model is cached beside its f32 source, in a folder named by a digest of
everything that decides it: the source model's sha256, the NNCF and OpenVINO versions, the
calibration sample's digest and the preset. Like the f32 cache it is published atomically with
the sha256 of its files, checked on every use; a folder that does not verify is never loaded:
the run warns once and quantises again. NNCF is imported only here, and only to quantise.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from importlib import metadata
from pathlib import Path

import numpy as np

from cxr.extract.calibration import Calibration
from cxr.extract.ov_cache import CACHE_FORMAT, cached, publish, read_meta

PRESET = "performance"  # symmetric weights and activations: NNCF's default for CNNs


def quantised_dir(source: Path, calibration: Calibration) -> tuple[Path, dict]:
    """The folder of the int8 model of the f32 model in ``source``, and the key it is named by."""
    meta = read_meta(source) or {}
    key = {
        "source": meta.get("files", {}),
        "nncf": metadata.version("nncf"),
        "openvino": metadata.version("openvino"),
        **calibration.attrs(),
        "preset": PRESET,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return source.with_name(f"{source.name}-int8-{digest[:16]}"), key


def quantised(
    model,
    source: Path,
    calibration: Calibration,
    batches: Callable[[], list[np.ndarray]],
    warn: Callable[[str], None],
) -> tuple:
    """``(int8 ov.Model, its cache folder)``: cached when it verifies, else quantised from
    ``model`` (the f32 model cached in ``source``) on ``batches()`` (preprocessed inputs)."""
    folder, key = quantised_dir(source, calibration)
    found = cached(folder)
    if found is not None and found[1].get("key") == key:
        return found[0], folder
    if folder.exists():
        warn(f"{folder}: the cached int8 model does not match its sha256; quantising it again")
        shutil.rmtree(folder, ignore_errors=True)
    import nncf

    logging.getLogger("nncf").setLevel(logging.ERROR)
    inputs = batches()
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):  # its progress bars
        int8 = nncf.quantize(
            model,
            nncf.Dataset(inputs),
            preset=nncf.QuantizationPreset.PERFORMANCE,
            subset_size=len(inputs),
        )
    publish(int8, folder, {"format": CACHE_FORMAT, "key": key})
    return int8, folder
