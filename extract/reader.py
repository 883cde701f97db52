"""The decoding stream: files -> decoded, resized images, a window ahead of the forward pass.

Decoding runs in a small thread pool (PIL, pydicom and hashing release the GIL), so file I/O and
decode overlap with the model. Each file is read once, checked against the sha256 it was
discovered with, decoded once, and resized for every input size that still needs it.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice

import numpy as np

from cxr.extract.dataset import Entry
from cxr.extract.images import MAX_FILE_BYTES, Rejected, decode_pixels, resize
from cxr.extract.regions import Region
from cxr.extract.settings import EXACT
from cxr.files import UnusableFile, read_regular
from cxr.settings import flag

# Decoding costs a small share of a forward pass (one thread, shared films, MobileNetV2, two
# runs on a shared machine: 1.8-2.0 ms of CPU to read, check, decode and resize against 37-38 ms
# for TensorFlow's forward pass, 10.5-13 ms for OpenVINO f32, 6.8-8.2 ms for int8;
# benchmarks/bound.py): one decoder per four cores keeps ahead of the model, and leaves the
# cores to it. On 2 cores, 1 decoder measured 0.89 of the raw forward rate, 2 decoders
# 0.85-0.88. Alternating phases instead (a window decoded with every core, then its forward pass
# with every core) measured no faster, whole `cxr features` processes on 2 shared cores,
# interleaved (median ratios): 1.05x this design's time with TensorFlow (3 pairs, each slower),
# 1.06x and 1.00x with OpenVINO f32 (two rounds of 4 and 5 pairs).
DECODE_WORKERS = max(1, (os.cpu_count() or 1) // 4)

Decoded = dict[int, np.ndarray] | str  # input size -> (s, s[, 3]) uint8, or the reject reason
WHOLE = Region()


def decode_stream(
    entries: Iterable[Entry],
    sizes: Callable[[Entry], set[int]],
    policy: str,
    window: int,
    region: Region = WHOLE,
    gray: bool = False,
    decode: str = EXACT,
) -> Iterator[tuple[Entry, Decoded]]:
    """Decoded, resized images in input order, ``window`` files ahead; a str is a reject reason.
    ``region`` is applied to the decoded film, before it is resized. With ``gray`` a gray film
    stays (s, s) (`cxr.extract.preprocess` expands it), else every image is (s, s, 3).
    ``decode`` draft: a JPEG decoded at a reduced scale, never below the largest of its sizes."""
    entries = iter(entries)

    def submit(pool: ThreadPoolExecutor, entry: Entry):
        return pool.submit(_prepare, entry, sizes(entry), policy, region, gray, decode)

    with ThreadPoolExecutor(max_workers=DECODE_WORKERS) as pool:
        pending = deque(submit(pool, e) for e in islice(entries, window))
        while pending:
            entry, result = pending.popleft().result()
            following = next(entries, None)
            if following is not None:
                pending.append(submit(pool, following))
            yield entry, result


def _prepare(
    entry: Entry,
    sizes: set[int],
    policy: str,
    region: Region = WHOLE,
    gray: bool = False,
    decode: str = EXACT,
) -> tuple[Entry, Decoded]:
    try:
        data = read_regular(entry.file, MAX_FILE_BYTES)  # a FIFO swapped in cannot block it
    except UnusableFile as exc:
        return entry, str(exc)
    except OSError as exc:
        return entry, f"unreadable ({exc.strerror or exc})"
    if entry.sha256 and hashlib.sha256(data).hexdigest() != entry.sha256:
        return (
            entry,
            "file changed since it was hashed; run `cxr features` again "
            f"({flag('rehash')} if its size and time stayed the same)",  # a stored reason
        )
    try:
        draft = max(sizes, default=0) if decode != EXACT else 0
        pixels = region.apply(decode_pixels(data, entry.file.name, draft), entry)
        return entry, {size: resize(pixels, size, policy, rgb=not gray) for size in sizes}
    except Rejected as exc:
        return entry, str(exc)
    except Exception as exc:  # a decoder's own bug must cost one file, never the run
        return entry, f"cannot decode ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
