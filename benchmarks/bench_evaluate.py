"""Evaluation overhead: `cxr evaluate` against bare scikit-learn doing the same cross-validation.

Side by side in one run, same store, same folds, same head parameters:
- bare: h5py read + ``cross_val_predict(Pipeline(StandardScaler, head), cv=StratifiedGroupKFold)``
  + accuracy and ROC AUC;
- ours: ``classify.evaluate.evaluate`` (store load, task checks, folds, all metrics, 1000-replicate
  patient bootstrap).
The target is ours/bare <= 1.15. Uses ``features/<backbone>.h5`` when present, else a synthetic
store of the same shape as the shared chest X-ray set.

    python benchmarks/bench_evaluate.py [--features features] [--backbone mobilenet_v2] [--head mlp]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
from threadpoolctl import threadpool_limits

from cxr.classify.evaluate import evaluate
from cxr.classify.heads import build_head
from cxr.classify.tasks import TaskSpec
from cxr.store.schema import ROW_COLUMNS, StoreContent, Table, store_path, write_atomic


def synthetic_store(directory: Path, backbone: str, n: int = 2109, dim: int = 1280) -> None:
    rng = np.random.default_rng(0)
    labels = rng.choice(["covid", "bacterial", "viral", "normal"], size=n)
    patients = [f"p{i // 2}" for i in range(n)]
    X = rng.normal(size=(n, dim)).astype(np.float32) + (labels == "covid")[:, None]
    rows = [
        {"id": f"{i:064x}", "path": f"{lab}/{i}.png", "label": lab, "patient_id": pid}
        for i, (lab, pid) in enumerate(zip(labels, patients, strict=True))
    ]
    attrs = {
        "backbone": backbone,
        "dim": dim,
        "input_size": 224,
        "resize": "squash",
        "weights": "random",
        "weights_file": "",
        "weights_sha256": "",
        "weights_seed": 0,
    }
    write_atomic(
        store_path(directory, backbone),
        StoreContent(attrs, Table.from_records(rows, ROW_COLUMNS), Table({}), X),
    )


def bare(path: Path, head: str, folds: int, seed: int) -> float:
    from sklearn.metrics import accuracy_score, roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict

    start = time.perf_counter()
    with h5py.File(path, "r") as f:
        X = f["X"][()]
        labels = f["rows/label"].asstr()[()]
        groups = f["rows/patient_id"].asstr()[()]
    _, y = np.unique(labels, return_inverse=True)
    cv = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    proba = cross_val_predict(
        build_head(head, random_state=seed), X, y, groups=groups, cv=cv, method="predict_proba"
    )
    accuracy_score(y, proba.argmax(1))
    roc_auc_score(y, proba, multi_class="ovr")
    return time.perf_counter() - start


def ours(directory: Path, backbone: str, head: str, folds: int, seed: int) -> float:
    start = time.perf_counter()
    evaluate(directory, [backbone], [head], TaskSpec(), folds=folds, seed=seed, jobs=1)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=Path, default=Path("features"))
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--head", default="mlp")
    parser.add_argument("--folds", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory, origin = args.features, "store"
        if not store_path(directory, args.backbone).is_file():
            directory, origin = Path(tmp), "synthetic"
            synthetic_store(directory, args.backbone)
        path = store_path(directory, args.backbone)
        ours(directory, args.backbone, args.head, args.folds, 0)  # warm imports and caches
        t_bare = bare(path, args.head, args.folds, 0)
        with threadpool_limits(1):  # what cxr does in each fold, for a like-for-like ratio
            t_bare1 = bare(path, args.head, args.folds, 0)
        t_ours = ours(directory, args.backbone, args.head, args.folds, 0)
    print(
        f"evaluate {args.backbone} ({origin}) head {args.head}, {args.folds} grouped folds, "
        f"{os.cpu_count()} CPUs, jobs=1: bare scikit-learn {t_bare:.2f} s "
        f"(1 BLAS thread: {t_bare1:.2f} s), cxr evaluate {t_ours:.2f} s; "
        f"ratio {t_ours / t_bare:.2f} (vs 1 thread: {t_ours / t_bare1:.2f}; target <= 1.15)"
    )


if __name__ == "__main__":
    main()
