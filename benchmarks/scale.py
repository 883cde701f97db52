"""`make bench-scale`: the tool at NIH ChestX-ray14's size, on a synthetic store.

112,120 rows x 1,280 dims (MobileNetV2's width), 30,805 patient ids, with planted
near-duplicates: pairs whose embeddings are close (cosine 0.97-0.995) and pairs whose
perceptual hashes match within 20 bits at some crop level, across patient ids. Measured, each
phase as its own process (peak RSS from the kernel's accounting of that process):

- publish: a run's shards (4,096 rows each, as `cxr features` commits them) published as one store;
- load: the store read back (what `cxr evaluate` starts with); `cxr info` (attributes only);
- audit: `cxr audit` over the store, every hash already cached (as after a first audit): wall
  time, peak memory, and the recall of the planted pairs;
- evaluate: `cxr evaluate --head logreg` (10 patient-grouped folds, bootstrap CIs);
- with ``--data``: `cxr features` in one process against `--scheduler` with two worker processes
  on this machine, and each worker's peak memory per backbone.

    python benchmarks/scale.py [--rows 112120] [--dim 1280] [--patients 30805] [--planted 500]
                               [--quick] [--no-evaluate] [--out benchmarks/scale.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import sample_images

HERE = Path(__file__).resolve()
CXR = [sys.executable, "-c", "import sys; from cxr.cli import app; sys.argv[0] = 'cxr'; app()"]
CLASSES = ("covid", "bacterial", "viral", "normal")
SHARD_ROWS = 4096
BITS = 255


def sha(i: int) -> str:
    return f"{i:064x}"


def vectors(rng: np.random.Generator, n: int, dim: int, labels: np.ndarray) -> np.ndarray:
    """Non-negative, low-rank plus noise, with a class signal (ReLU'd and pooled, as CNN
    features are): distinct rows stay below cosine ~0.9."""
    basis = np.random.default_rng(7).normal(size=(32, dim)).astype(np.float32)
    shift = np.random.default_rng(8).normal(size=(len(CLASSES), dim)).astype(np.float32)
    latent = rng.normal(size=(n, 32)).astype(np.float32)
    X = latent @ basis + 2.0 * rng.normal(size=(n, dim)).astype(np.float32) + 0.8 * shift[labels]
    return np.maximum(X, 0)


def plan(args) -> dict:
    """Which rows are planted copies of which: (original, copy) per method."""
    rng = np.random.default_rng(1)
    rows = rng.permutation(args.rows)[: 4 * args.planted].reshape(2, 2, args.planted)
    return {
        "cosine": [(int(a), int(b)) for a, b in zip(*rows[0], strict=True)],
        "phash": [(int(a), int(b)) for a, b in zip(*rows[1], strict=True)],
    }


def publish(args) -> None:
    """Phase 1 (own process): shards committed as a run would, then one publish."""
    from cxr.extract.dataset import Discovery, Entry
    from cxr.extract.regions import Region
    from cxr.extract.writer import StoreWriter

    work = Path(args.work)
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    pairs = plan(args)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, len(CLASSES), size=args.rows)
    patients = rng.permutation(np.arange(args.rows) % args.patients)
    entries = [
        Entry(
            path=f"{CLASSES[labels[i]]}/{i:06d}.png",
            file=data / f"{i:06d}.png",
            label=CLASSES[labels[i]],
            patient_id=f"p{patients[i]:05d}",
            source="synthetic",
            sha256=sha(i),
        )
        for i in range(args.rows)
    ]
    copies = dict(pairs["cosine"])  # original -> copy
    copy_of = {b: a for a, b in copies.items()}
    attrs = {
        "backbone": "mobilenet_v2",
        "constructor": "synthetic",
        "dim": args.dim,
        "input_size": 224,
        "preprocessing": "synthetic",
        "pooling": "global average",
        "resize": "squash",
        "weights": "random",
        "weights_file": "",
        "weights_sha256": "",
        "weights_seed": 0,
        "weights_path": "",
        "runtime": "tensorflow",
        "precision": "f32",
        "runtime_max_abs_diff": 0.0,
        "versions": "{}",
        **Region().attrs(),  # whole films
    }
    # The planted originals first, so that a copy can be made wherever its original falls.
    originals = {a: vectors(rng, 1, args.dim, labels[[a]])[0] for a in copies}
    with StoreWriter(work / "features", attrs) as writer:
        for start in range(0, args.rows, SHARD_ROWS):
            index = np.arange(start, min(args.rows, start + SHARD_ROWS))
            X = vectors(rng, len(index), args.dim, labels[index])
            for k, i in enumerate(index.tolist()):
                if i in originals:
                    X[k] = originals[i]
                elif i in copy_of:  # the original plus a little noise: cosine 0.97-0.995
                    base = originals[copy_of[i]]
                    scale = rng.uniform(0.1, 0.25) * np.linalg.norm(base) / np.sqrt(args.dim)
                    X[k] = base + scale * rng.normal(size=args.dim).astype(np.float32)
            writer.commit([sha(int(i)) for i in index], X, [])
        started = time.perf_counter()
        writer.publish(Discovery(data, entries, [], None, ()))
    print(json.dumps({"publish_seconds": time.perf_counter() - started}))


def hashes(args) -> None:
    """The audit's hash cache, as a first audit would leave it, with the planted matches."""
    from cxr.audit.cache import cache_path, write_cache
    from cxr.audit.phash import LEVELS, WORDS

    rng = np.random.default_rng(2)
    H = rng.integers(0, 2**63, size=(args.rows, LEVELS, WORDS), dtype=np.uint64)
    H[..., -1] &= np.uint64(2**63 - 1)  # 255 bits: the top one is padding
    for a, b in plan(args)["phash"]:  # b's crop level l is a's whole image, a few bits off
        copy = H[a, 0].copy()
        for bit in rng.choice(BITS, size=int(rng.integers(0, 21)), replace=False):
            copy[bit // 64] ^= np.uint64(1) << np.uint64(int(bit) % 64)
        H[b, int(rng.integers(1, LEVELS))] = copy
    write_cache(cache_path(Path(args.work) / "features"), {sha(i): H[i] for i in range(args.rows)})


def load_store(args) -> None:
    from cxr.store import load

    started = time.perf_counter()
    fs = load(Path(args.work) / "features", "mobilenet_v2")
    print(json.dumps({"load_seconds": time.perf_counter() - started, "rows": len(fs)}))


def phase(args, name: str) -> tuple[float, float, str]:
    """This script again, one phase in its own process; its peak RSS from wait4."""
    command = [sys.executable, str(HERE), "--phase", name, *_sizes(args)]
    return run_measured(command)


def run_measured(command: list[str]) -> tuple[float, float, str]:
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        out.seek(0), err.seek(0)
        if process.returncode != 0:
            raise SystemExit(f"{' '.join(command[:6])} failed:\n{err.read()[-3000:]}")
        return wall, usage.ru_maxrss / 1024, out.read()


def _sizes(args) -> list[str]:
    return [
        f"--rows={args.rows}",
        f"--dim={args.dim}",
        f"--patients={args.patients}",
        f"--planted={args.planted}",
        f"--work={args.work}",
    ]


def on_dask(data: Path, weights: list[str], repeats: int, work: Path) -> dict:
    """`cxr features` over ``data`` in one process against `--scheduler` with two worker
    processes on this machine (a LocalCluster started here and reached by its address, as a
    remote one would be), cold each time, interleaved; then each worker's peak memory (for
    xception on 64 of the images: its memory only)."""
    from distributed import Client, LocalCluster

    from cxr.cluster import worker_env

    images = sum(1 for p in data.glob("*/*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    out: dict = {"images": images}
    sample = sample_images(work / "sample", 64)  # xception: its worker memory only
    for backbone, images_dir in (("mobilenet_v2", data), ("xception", sample)):
        flags = [f for w in weights if w.startswith(f"{backbone}=") for f in ("--weights", w)]
        base = [*CXR, "features", str(images_dir), "-b", backbone, *flags]
        local, spread, peaks = [], [], []
        for r in range(repeats if backbone == "mobilenet_v2" else 1):
            with (
                LocalCluster(
                    n_workers=2,
                    threads_per_worker=1,
                    dashboard_address=None,
                    host="127.0.0.1",
                    env=worker_env(2),
                ) as cluster,
                Client(cluster) as client,
            ):
                if backbone == "mobilenet_v2":
                    local.append(run_measured([*base, "--features", str(work / f"l{r}")])[0])
                dist = [*base, "--features", str(work / f"{backbone}{r}")]
                spread.append(run_measured([*dist, "--scheduler", cluster.scheduler_address])[0])
                peaks += client.run(_peak_mb).values()
        entry = {"worker_peak_mb": round(max(peaks))}
        if local:
            entry |= {
                "local_img_s": round(images / min(local), 1),
                "local2_img_s": round(images / min(spread), 1),
                "ratio": round(min(local) / min(spread), 2),
            }
        out[backbone] = entry
        print(f"  {backbone}: {entry}")
    return out


def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def recall(report: dict, pairs: list[tuple[int, int]]) -> float:
    """Planted pairs whose two rows ended in one cluster."""
    cluster_of = {}
    for n, cluster in enumerate(report["clusters"]):
        for member in cluster["members"]:
            cluster_of[member["id"]] = n
    found = sum(
        sha(a) in cluster_of and cluster_of.get(sha(a)) == cluster_of.get(sha(b)) for a, b in pairs
    )
    return found / len(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=112_120)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--patients", type=int, default=30_805)
    parser.add_argument("--planted", type=int, default=500)
    parser.add_argument("--quick", action="store_true", help="toy sizes: proves it runs")
    parser.add_argument("--no-evaluate", dest="evaluate", action="store_false")
    parser.add_argument(
        "--data", type=Path, help="images for the local vs local:2 extraction (skipped without)"
    )
    parser.add_argument("--weights", action="append", default=[], help="NAME=PATH (offline)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE.parent / "scale.json")
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        {"publish": publish, "hashes": hashes, "load": load_store}[args.phase](args)
        return
    if args.quick:
        args.rows, args.dim, args.patients, args.planted = 3000, 256, 900, 20
    size = args.rows * args.dim * 4 / 2**20
    results = {
        "command": "make bench-scale" + (" (quick)" if args.quick else ""),
        "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "sizes": {
            "rows": args.rows,
            "dim": args.dim,
            "patients": args.patients,
            "planted_pairs_per_method": args.planted,
            "embeddings_mb": round(size),
        },
    }
    with tempfile.TemporaryDirectory() as tmp:
        args.work = tmp
        features = str(Path(tmp) / "features")
        print(f"synthetic store: {args.rows} x {args.dim} ({size:.0f} MB of float32) ...")
        wall, peak, out = phase(args, "publish")
        results["publish"] = {
            "seconds": round(json.loads(out.splitlines()[-1])["publish_seconds"], 1),
            "peak_mb": round(peak),
        }
        print(f"  publish: {results['publish']}")
        wall, peak, _ = phase(args, "load")
        results["load"] = {"seconds": round(wall, 1), "peak_mb": round(peak)}
        wall, peak, _ = run_measured([*CXR, "info", "--features", features])
        results["info"] = {"seconds": round(wall, 2), "peak_mb": round(peak)}
        print(f"  load: {results['load']}; info: {results['info']}")
        phase(args, "hashes")
        report_path = Path(tmp) / "audit.json"
        audit = [*CXR, "audit", "--features", features, "--json", str(report_path), "--quiet"]
        wall, peak, _ = run_measured(audit)
        report = json.loads(report_path.read_text())
        pairs = plan(args)
        results["audit"] = {
            "seconds": round(wall, 1),
            "peak_mb": round(peak),
            "recall_cosine": recall(report, pairs["cosine"]),
            "recall_phash": recall(report, pairs["phash"]),
            "clusters": report["counts"]["clusters"],
            "pairs": report["counts"]["pairs"],
        }
        print(f"  audit: {results['audit']}")
        if args.evaluate:
            evaluate = [*CXR, "evaluate", "--features", features, "--head", "logreg", "--quiet"]
            wall, peak, _ = run_measured(evaluate)
            results["evaluate_logreg"] = {"seconds": round(wall, 1), "peak_mb": round(peak)}
            print(f"  evaluate --head logreg: {results['evaluate_logreg']}")
        if args.data is not None and args.data.is_dir() and not args.quick:
            print(f"cxr features {args.data}: one process vs --scheduler with 2 workers ...")
            results["extraction_on_dask"] = on_dask(
                args.data, args.weights, args.repeats, Path(tmp) / "dask"
            )
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
