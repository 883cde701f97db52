"""Extraction throughput: the full `cxr features` pipeline against the backbone's raw forward rate.

Both are measured side by side in one run on the same images and the same model build:
- raw: forward passes on images already decoded, resized and held in memory (the ceiling);
- pipeline: discover + hash + decode + resize + forward + commit shards + publish, from disk.
The target is pipeline/raw >= 0.9. Uses ../shared/data/cxr and real weights when present, else
synthetic images and random weights (speed does not depend on the weight values).

    python benchmarks/bench_extract.py [--backbone mobilenet_v2] [--images 512] [--batch-size 32]
                                        [--weights mobilenet_v2=PATH]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from common import sample_images
from rich.console import Console

from cxr.extract.dataset import discover
from cxr.extract.images import decode, resize
from cxr.extract.registry import get_spec
from cxr.extract.runner import extract_features
from cxr.extract.weights import parse_weights, resolve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--weights",
        action="append",
        default=[],
        help="NAME=PATH as for `cxr features` (make bench passes ../shared/weights); else random",
    )
    args = parser.parse_args()
    mine = [w for w in args.weights if w.partition("=")[0] == args.backbone]
    weights = mine or ["random"]  # speed does not depend on the weight values
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        data = sample_images(workdir, args.images)
        spec = get_spec(args.backbone)
        from cxr.extract.model import Embedder

        resolved = resolve(spec, parse_weights(weights, [spec.name], 0)[spec.name])
        entries = discover(data, None).entries
        images = np.stack(
            [resize(decode(e.file.read_bytes(), e.file.name), spec.input_size) for e in entries]
        )
        start = time.perf_counter()
        embed = Embedder(spec, resolved, args.batch_size)
        embed(images[: args.batch_size])  # the first call traces the graph
        build = time.perf_counter() - start  # a fixed cost the pipeline pays once per run
        start = time.perf_counter()
        for i in range(0, len(images), args.batch_size):
            embed(images[i : i + args.batch_size])
        raw = len(images) / (time.perf_counter() - start)

        start = time.perf_counter()
        extract_features(
            data=data,
            manifest=None,
            backbones=[spec.name],
            weights=weights,
            features_dir=workdir / "features",
            batch_size=args.batch_size,
        )
        elapsed = time.perf_counter() - start
    pipeline, steady = len(images) / elapsed, len(images) / max(elapsed - build, 1e-9)
    console.print(
        f"extract {spec.name} ({weights[0].split('=')[0]}), {len(images)} images, "
        f"batch {args.batch_size}, {os.cpu_count()} CPUs: raw forward {raw:.1f} img/s; "
        f"pipeline {pipeline:.1f} img/s end to end (ratio {pipeline / raw:.2f}), "
        f"{steady:.1f} img/s without the {build:.1f} s model build (ratio {steady / raw:.2f}); "
        "target >= 0.90"
    )


if __name__ == "__main__":
    main()
