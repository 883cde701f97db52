"""The fit cache (`cxr.classify.fitcache`): byte-identical reports with and without it, a miss
whenever any key part changes, and hostile or broken entries ignored, never loaded as code."""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import cxr
from cxr.classify import evaluate, fitting
from cxr.classify.fitcache import FOLDER, CacheWarning, FitCache
from cxr.classify.predictions import OutOfFold
from cxr.cli import app
from cxr.store.schema import read_content, write_atomic
from cxr.trust import read_sealed, write_sealed

FAST = {"heads": ["logreg", "knn"], "folds": 3, "bootstrap": 50, "jobs": 1, "predictions": True}


def report(features: Path, **options) -> str:
    return json.dumps(cxr.evaluate(features, **{**FAST, **options}).report, sort_keys=True)


@pytest.fixture
def fits(monkeypatch):
    """Count the heads actually fitted (the cache's misses)."""
    counted: list[str] = []
    real = fitting._fit_fold

    def counting(source, head, *args, **kwargs):
        counted.append(head)
        return real(source, head, *args, **kwargs)

    monkeypatch.setattr(fitting, "_fit_fold", counting)
    return counted


def entries(features: Path) -> list[Path]:
    return sorted((features / FOLDER).glob("*.npz"))


def test_cached_uncached_and_cold_reports_are_byte_identical(make_synthetic_store, fits):
    features = make_synthetic_store().parent
    uncached = report(features, cache=False)
    assert not (features / FOLDER).exists()
    cold = report(features)
    assert len(entries(features)) == 2
    n = len(fits)
    warm = report(features)
    assert len(fits) == n  # nothing fitted again
    assert uncached == cold == warm


def test_a_rerun_reuses_the_scores_too(make_synthetic_store, monkeypatch):
    features = make_synthetic_store().parent
    first = report(features)
    calls: list[int] = []
    real = evaluate.summarize
    monkeypatch.setattr(evaluate, "summarize", lambda *a: calls.append(1) or real(*a))
    assert report(features) == first
    assert calls == []  # every result's bootstrap came from the cache
    assert report(features, bootstrap=60) != first
    assert len(calls) == 2


def test_broken_cached_results_are_ignored_with_a_warning(make_synthetic_store):
    """Scores, confounds, neighbourhoods and comparisons alike (every .json entry)."""
    features = make_synthetic_store().parent
    first = report(features, heads=["logreg"])
    kept = sorted((features / FOLDER).glob("*.json"))
    assert len(kept) >= 4
    for broken in ('{"key": "someone else", "value": {}}', "\xff\xfe not json"):
        for entry in kept:
            entry.write_bytes(broken.encode("latin-1"))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert report(features, heads=["logreg"]) == first
        ignored = [w for w in caught if "cached result ignored" in str(w.message)]
        assert len(ignored) == len(kept)


def test_the_cli_reuses_fits_and_no_cache_turns_it_off(make_synthetic_store, tmp_path, fits):
    features = make_synthetic_store().parent
    args = ["evaluate", "--features", str(features), "--head", "logreg", "--folds", "3"]
    args += ["--bootstrap", "50", "--jobs", "1"]
    outs = []
    for extra in ([], [], ["--no-cache"]):
        out = tmp_path / f"r{len(outs)}.json"
        result = CliRunner().invoke(app, [*args, *extra, "--json", str(out)])
        assert result.exit_code == 0, result.output
        outs.append(out.read_bytes())
    assert fits.count("logreg") == 2 * 3  # first run and --no-cache; the second reused
    assert outs[0] == outs[1] == outs[2]


@pytest.mark.parametrize(
    "change",
    [
        {"params": {"logreg": {"C": 0.5}}},
        {"seed": 1},
        {"folds": 4},
        {"binary": "covid"},
        {"search": True},
    ],
)
def test_any_changed_key_part_is_a_miss(make_synthetic_store, fits, change):
    features = make_synthetic_store().parent
    report(features, heads=["logreg"])
    n = len(fits)
    report(features, heads=["logreg"], **change)
    assert len(fits) > n
    before = len(fits)
    report(features, heads=["logreg"], **change)  # and then a hit
    assert len(fits) == before


def test_changed_store_rows_are_a_miss(make_synthetic_store, fits):
    path = make_synthetic_store()
    report(path.parent, heads=["logreg"])
    n = len(fits)
    make_synthetic_store(seed=1)  # same name, other rows and embeddings
    report(path.parent, heads=["logreg"])
    assert len(fits) > n


def test_one_changed_head_refits_only_that_head(make_synthetic_store, fits):
    features = make_synthetic_store().parent
    report(features)
    fits.clear()
    report(features, params={"knn": {"n_neighbors": 3}})
    assert set(fits) == {"knn"}


def _broken_entries(path: Path) -> dict:
    good = path.read_bytes()
    return {
        "truncated": lambda: path.write_bytes(good[: len(good) // 2]),
        "garbage": lambda: path.write_bytes(b"not a zip file at all"),
        "empty": lambda: path.write_bytes(b""),
    }


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "foreign", "symlink"])
def test_a_broken_or_foreign_entry_is_ignored_with_a_warning(
    make_synthetic_store, tmp_path, fits, damage
):
    features = make_synthetic_store().parent
    expected = report(features, heads=["logreg"])
    (entry,) = entries(features)
    if damage == "foreign":  # a valid entry of another key, renamed
        other = make_synthetic_store(seed=3, directory=tmp_path / "elsewhere").parent
        report(other, heads=["logreg"])
        (foreign,) = entries(other)
        entry.write_bytes(foreign.read_bytes())
    elif damage == "symlink":
        target = entry.with_suffix(".real")
        os.replace(entry, target)
        entry.symlink_to(target)
    else:
        _broken_entries(entry)[damage]()
    n = len(fits)
    with pytest.warns(CacheWarning, match="cached fit ignored"):
        again = report(features, heads=["logreg"])
    assert len(fits) > n  # fitted again
    assert again == expected


def test_a_planted_pickle_is_never_loaded(make_synthetic_store, tmp_path, fits):
    features = make_synthetic_store().parent
    expected = report(features, heads=["logreg"])
    (entry,) = entries(features)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    entry.write_bytes(pickle.dumps({"row": Exploit()}))
    with pytest.warns(CacheWarning):
        again = report(features, heads=["logreg"])
    assert not marker.exists()
    assert again == expected


def test_arrays_of_the_wrong_shape_are_ignored(make_synthetic_store, fits):
    features = make_synthetic_store().parent
    report(features, heads=["logreg"])
    (entry,) = entries(features)
    arrays = unsealed_arrays(entry)
    arrays["proba"] = arrays["proba"][:, :1].copy()
    seal_arrays(entry, arrays)  # this user's own seal: the checks behind it still hold
    with pytest.warns(CacheWarning, match="do not fit"):
        report(features, heads=["logreg"])


def unsealed_arrays(entry: Path) -> dict[str, np.ndarray]:
    """The arrays of an entry this user sealed."""
    payload = read_sealed(entry, f"fit:{entry.name}", 1 << 30)
    with np.load(io.BytesIO(payload)) as npz:
        return dict(npz)


def seal_arrays(entry: Path, arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_sealed(entry, buffer.getvalue(), f"fit:{entry.name}")


def test_the_size_bound_evicts_the_least_recently_used(tmp_path):
    cache = FitCache(tmp_path / FOLDER, max_bytes=10_000)
    rows = np.arange(200)
    oof = OutOfFold(rows, rows % 2, np.full((200, 2), 0.5), rows % 3, [], [])
    for i, key in enumerate("abcd"):
        cache.put(key, oof)
        os.utime(tmp_path / FOLDER / f"{key}.npz", (i, i))  # a, b, c, d in order of use
    kept = sorted(p.stem for p in (tmp_path / FOLDER).glob("*.npz"))
    assert kept and "d" in kept and "a" not in kept
    assert sum(p.stat().st_size for p in (tmp_path / FOLDER).glob("*.npz")) <= 10_000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.get("d", rows, rows % 2, 2, rows % 3) is not None
        assert cache.get("a", rows, rows % 2, 2, rows % 3) is None  # evicted: a plain miss


def test_deleting_the_folder_at_any_time_is_fine(make_synthetic_store, fits):
    features = make_synthetic_store().parent
    first = report(features, heads=["logreg"])
    shutil.rmtree(features / FOLDER)
    assert report(features, heads=["logreg"]) == first


def test_cache_must_be_a_bool():
    from cxr.classify.config import EvaluateConfig
    from cxr.errors import CxrError

    with pytest.raises(CxrError, match="cache"):
        EvaluateConfig(cache="no")  # type: ignore[arg-type]


@pytest.fixture
def analyses(monkeypatch):
    """Count the analyses a run computes (not read from the cache)."""
    counted: list[str] = []
    for name in ("confounds", "neighbourhood", "compare"):
        real = getattr(evaluate, name)

        def counting(*args, real=real, name=name, **kwargs):
            counted.append(name)
            return real(*args, **kwargs)

        monkeypatch.setattr(evaluate, name, counting)
    return counted


def site(record: dict) -> str:
    return "A" if record["label"] == "covid" or record["patient_id"].endswith("1") else "B"


def test_a_rerun_reads_the_analyses_and_changed_inputs_compute_them_again(
    make_synthetic_store, analyses
):
    """The confound checks, the neighbourhoods and the paired comparisons are computed once;
    other embeddings, another column or other predictions compute them again."""
    path = make_synthetic_store(meta={"site": site})
    first = report(path.parent)
    assert sorted(analyses) == ["compare", "confounds", "neighbourhood"]
    analyses.clear()
    assert report(path.parent) == first
    assert analyses == []
    content = read_content(path)  # the same rows, other embeddings: no fit, no result holds
    noise = np.random.default_rng(5).normal(size=content.X.shape).astype(np.float32)
    write_atomic(path, replace(content, X=content.X + 2 * noise))
    changed = report(path.parent)
    assert sorted(analyses) == ["compare", "neighbourhood"]  # confounds read rows, not X
    assert changed != first
    analyses.clear()
    make_synthetic_store(meta={"site": lambda r: "A" if site(r) == "B" else "B"})
    report(path.parent)  # the same embeddings and predictions, another column
    assert sorted(analyses) == ["confounds", "neighbourhood"]
    analyses.clear()
    report(path.parent, bootstrap=60)  # other replicates: other intervals everywhere
    assert sorted(analyses) == ["compare", "neighbourhood"]


def test_cached_analyses_change_no_byte_of_the_report(make_synthetic_store):
    path = make_synthetic_store(meta={"site": site})
    uncached = report(path.parent, cache=False)
    assert report(path.parent) == uncached == report(path.parent)


@pytest.mark.slow
def test_a_rerun_served_by_the_cache_starts_no_worker(make_synthetic_store):
    """Every fit and score cached: no worker process, and neither joblib nor faiss imported
    (the old code started two workers that imported scikit-learn for nothing)."""
    features = make_synthetic_store(meta={"site": site}).parent
    script = (
        "import sys, cxr\n"
        f"cxr.evaluate({str(features)!r}, heads=['logreg', 'knn'], folds=3, bootstrap=50, "
        "jobs=2)\n"
        "print(sorted(m for m in ('joblib', 'faiss', 'sklearn') if m in sys.modules))\n"
    )
    runs = [
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
        for _ in range(2)
    ]
    assert runs[0].stdout.split("\n")[0] == "['faiss', 'joblib']"  # cold: it fits (in workers)
    assert runs[1].stdout.split("\n")[0] == "[]"
