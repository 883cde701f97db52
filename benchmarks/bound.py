"""The machine's bound for extraction: CPU seconds per film of every stage, on one thread.

A pipeline over ``cores`` cores cannot embed films faster than ``cores / (sum of every stage's
CPU seconds per film)``: the bound. Each stage is timed here alone, single-threaded (TensorFlow
with one intra- and one inter-op thread, OpenVINO with ``INFERENCE_NUM_THREADS`` 1), by the
process's CPU clock, on the same films a run reads:

- read + check: the file's bytes read and their sha256 checked (the reader does both);
- decode + resize: PIL (or pydicom) to 8-bit pixels, resized to the input size (gray stays gray);
- preprocess: Keras' ``preprocess_input`` written into the batch row (`cxr.extract.preprocess`);
- forward: the frozen backbone on full batches (per runtime: TensorFlow f32, OpenVINO f32, int8);
- write: each batch committed as a shard, then the store published.

Discovery's own hashing (a cold run's first read of every file) comes before the timed span of
a run and is reported beside the bound, not in it. Runs as a process of its own (the thread
settings must come before the engines start):

    python benchmarks/bound.py --data DIR --weights mobilenet_v2=PATH --out stages.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

BATCH = 32
STAGES = ("read + check", "decode + resize", "preprocess", "forward", "write")


def _cpu(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def measure(
    data: Path,
    backbone: str,
    weights: list[str],
    runtimes: list[str],
    forward_films: int,
) -> dict:
    """{'films', 'discover', 'stages': {runtime: {stage: CPU s per film}}} for ``runtimes``
    (``tensorflow``, ``openvino``, ``openvino+int8``)."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    from cxr.extract.discovery import discover
    from cxr.extract.hashing import HashCache
    from cxr.extract.images import MAX_FILE_BYTES, decode_pixels, resize
    from cxr.extract.model import Embedder, preprocessing
    from cxr.extract.registry import get_spec
    from cxr.extract.runner import store_attrs
    from cxr.extract.weights import parse_weights, resolve
    from cxr.extract.writer import StoreWriter
    from cxr.files import read_regular

    spec = get_spec(backbone)
    resolved = resolve(spec, parse_weights(weights, [backbone], 0)[backbone])
    size = spec.input_size
    found: dict = {}
    discover_cpu = _cpu(lambda: found.update(d=discover(data, None, HashCache(None))))
    discovery = found["d"]
    entries = discovery.entries
    n = len(entries)
    blobs: list[bytes] = []

    def read_check() -> None:
        for e in entries:
            blob = read_regular(e.file, MAX_FILE_BYTES)
            assert hashlib.sha256(blob).hexdigest() == e.sha256
            blobs.append(blob)

    films: list[np.ndarray] = []
    read_seconds = _cpu(read_check)
    decode_seconds = _cpu(
        lambda: films.extend(
            resize(decode_pixels(b, e.file.name), size, "squash", rgb=False)
            for b, e in zip(blobs, entries, strict=True)
        )
    )
    fill = preprocessing(spec)
    rows = np.empty((BATCH, size, size, 3), np.float32)
    preprocess_seconds = _cpu(lambda: [fill.fill(rows[i % BATCH], f) for i, f in enumerate(films)])

    batches = [
        fill.batch(films[i : i + BATCH], BATCH) for i in range(0, min(n, forward_films), BATCH)
    ]
    counted = len(batches) * BATCH
    forward: dict[str, float] = {}
    X = np.zeros((n, spec.dim), np.float32)
    for runtime in runtimes:
        if runtime == "tensorflow":
            embed = Embedder(spec, resolved, BATCH)
            run = lambda b, e=embed: e.forward(e.load(b), BATCH)  # noqa: E731
        else:
            run = _openvino(spec, resolved, runtime, entries)
        run(batches[0])  # warm: the first inference allocates
        forward[runtime] = _cpu(lambda r=run: [r(b) for b in batches]) / counted

    with tempfile.TemporaryDirectory() as tmp:
        attrs = store_attrs(spec, resolved, "squash")

        def write() -> None:
            with StoreWriter(Path(tmp), attrs) as writer:
                for i in range(0, n, BATCH):
                    ids = [e.sha256 for e in entries[i : i + BATCH]]
                    writer.commit(ids, X[i : i + BATCH], [])
                writer.publish(discovery)

        write_seconds = _cpu(write)
    shared = {
        "read + check": read_seconds / n,
        "decode + resize": decode_seconds / n,
        "preprocess": preprocess_seconds / n,
        "write": write_seconds / n,
    }
    return {
        "films": n,
        "forward_films": counted,
        "discover": discover_cpu / n,
        "stages": {r: {**shared, "forward": forward[r]} for r in runtimes},
    }


def _openvino(spec, resolved, runtime: str, entries):
    """A one-thread compiled OpenVINO model (f32, or the int8 model the runs use: the same
    calibration sample, from the cache)."""
    import openvino as ov

    from cxr.extract.calibration import Calibration
    from cxr.extract.model import build_model, make_embedder
    from cxr.extract.ov_runtime import converted
    from cxr.extract.quantise import quantised
    from cxr.extract.runtimes import Runtime
    from cxr.extract.settings import CALIBRATION_SIZE

    model, folder = converted(spec, resolved, lambda: build_model(spec, resolved))
    if runtime.endswith("int8"):
        sample = Calibration.sample(entries, CALIBRATION_SIZE, 0)
        make_embedder(spec, resolved, BATCH, Runtime("openvino", "int8"), sample)  # cached
        model, folder = quantised(model, folder, sample, lambda: [], lambda text: None)
    size = spec.input_size
    model.reshape([BATCH, size, size, 3])
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1}
    compiled = ov.Core().compile_model(model, "CPU", config)
    return lambda batch: compiled(batch)[0]


def bound(stages: dict[str, float], cores: int) -> float:
    """Films per second that ``cores`` cores could reach with every stage's CPU per film."""
    return cores / sum(stages.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--weights", action="append", default=[])
    parser.add_argument("--runtime", action="append", default=[])
    parser.add_argument("--forward-films", type=int, default=256)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    found = measure(
        args.data,
        args.backbone,
        args.weights or ["random"],
        args.runtime or ["tensorflow"],
        args.forward_films,
    )
    found["cores"] = os.cpu_count() or 1
    args.out.write_text(json.dumps(found, indent=2) + "\n")


if __name__ == "__main__":
    main()
