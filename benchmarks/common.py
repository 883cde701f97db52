"""What the benchmarks share: where ../shared is, and a sample of its images (or stand-ins).

Benchmarks run as scripts (``python benchmarks/bench_x.py``) against the installed ``cxr``
package; this module sits beside them, so it is importable without touching ``sys.path``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

SHARED = Path(__file__).resolve().parents[2] / "shared"
CXR_DATA = SHARED / "data" / "cxr"


def sample_images(workdir: Path, count: int) -> Path:
    """``count`` real chest X-rays spread over the shared set's classes, else noise PNGs."""
    data = workdir / "data"
    if CXR_DATA.is_dir():
        files = sorted(p for p in CXR_DATA.glob("*/*") if p.is_file() and p.name != "manifest.csv")
        step = max(1, len(files) // count)
        for path in files[::step][:count]:
            (data / path.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, data / path.parent.name / path.name)
        return data
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = data / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, size=(1024, 1024), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.png")
    return data
