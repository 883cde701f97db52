"""`cxr runs`: past tracked runs, and two of them compared: the parameters that differ and,
where both used the same images, the paired difference of each shared result (the tool's own
paired bootstrap, on the logged out-of-fold predictions)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, TypedDict

from cxr.classify.compare import paired_difference
from cxr.classify.metric_table import overall_metric
from cxr.classify.metrics import Bootstrap
from cxr.errors import CxrError
from cxr.files import read_text
from cxr.tracking import predictions
from cxr.tracking.log import connect, experiment_id
from cxr.tracking.target import NEEDS_MLFLOW, Target


class Run(TypedDict):
    id: str
    started: str  # UTC, minutes
    status: str
    task: str
    design: str
    best: str
    score: str  # the best result's metric [95% CI]
    settings: str


class Paired(TypedDict):
    result: str
    metric: str
    difference: float | None  # second run minus first
    ci95: list[float | None]
    p: float | None
    n_paired: int
    why_not: str  # when it could not pair: the reason


class Comparison(TypedDict):
    runs: list[Run]
    differ: dict[str, list[str | None]]  # param -> [first run's value, second's]
    paired: list[Paired]
    replicates: int  # of the paired bootstrap


def _client(target: Target) -> Any:
    try:
        return connect(target)
    except ImportError:
        raise CxrError(NEEDS_MLFLOW) from None


def _run(info: Any) -> Run:
    import time

    tags = info.data.tags
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime(info.info.start_time / 1000))
    return Run(
        id=info.info.run_id,
        started=started,
        status=info.info.status,
        task=tags.get("cxr.task", ""),
        design=tags.get("cxr.design", ""),
        best=tags.get("cxr.best", ""),
        score=tags.get("cxr.score", ""),
        settings=tags.get("cxr.settings", ""),
    )


def _search(client: Any, target: Target, limit: int) -> list[Any]:
    try:
        experiment = experiment_id(client, target, create=False)
        if experiment is None:
            return []
        return list(
            client.search_runs(
                [experiment], order_by=["attributes.start_time DESC"], max_results=limit
            )
        )
    except CxrError:
        raise
    except Exception as exc:  # the store is the user's: one line, not a trace
        raise CxrError(
            f"{target.uri}: cannot list runs ({' '.join(str(exc).split())[:300]})"
        ) from None


def list_runs(target: Target, limit: int = 20) -> list[Run]:
    """The latest runs of the experiment, newest first."""
    return [_run(r) for r in _search(_client(target), target, limit)]


def compare_runs(target: Target, first: str | None, second: str | None) -> Comparison:
    """Two runs by id or id prefix (None, None: the two latest), compared."""
    client = _client(target)
    found = _search(client, target, 1000)
    if first is None or second is None:
        if len(found) < 2:
            raise CxrError(f"{target.uri}: fewer than two runs to compare")
        chosen = [found[1], found[0]]  # older first: the difference is newer minus older
    else:
        chosen = [_pick(found, first, target), _pick(found, second, target)]
    a, b = (r.data.params for r in chosen)
    differ = {
        k: [a.get(k), b.get(k)]
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k) and not k.startswith("version.")
    }
    return Comparison(
        runs=[_run(r) for r in chosen],
        differ=differ,
        paired=_paired(client, chosen, differ),
        replicates=int(chosen[0].data.params.get("bootstrap", "1000")),
    )


def _pick(found: list[Any], prefix: str, target: Target) -> Any:
    hits = [r for r in found if r.info.run_id.startswith(prefix)]
    if len(hits) != 1:
        what = "no run" if not hits else f"{len(hits)} runs"
        raise CxrError(
            f"{target.uri}: {what} with an id starting {prefix!r} (`cxr runs` lists them)"
        )
    return hits[0]


def _paired(client: Any, chosen: list[Any], differ: dict) -> list[Paired]:
    first = chosen[0].data.params
    if any(k in differ for k in ("task", "design", "seed")) or any(
        k.endswith(".rows_sha256") for k in differ
    ):
        why = "the runs used different images or splits (task, design, seed or store rows differ)"
        return [Paired(result="", metric="", difference=None, ci95=[None, None], p=None,
                       n_paired=0, why_not=why)]  # fmt: skip
    logged = [_predictions(client, run) for run in chosen]
    metric = overall_metric(first.get("metric", "balanced_accuracy"))
    replicates = int(first.get("bootstrap", "1000"))
    bootstrap = Bootstrap(replicates, int(first.get("seed", "0")))
    out = []
    for name, (item_a, scored_a) in logged[0].items():
        if name not in logged[1]:
            continue
        item_b, scored_b = logged[1][name]
        if item_a["classes"] != item_b["classes"]:
            continue
        diff, ci, p, n = paired_difference(scored_b, scored_a, metric, bootstrap)
        out.append(Paired(result=name, metric=metric.name, difference=diff, ci95=ci, p=p,
                          n_paired=n, why_not="" if n else "no test rows in common"))  # fmt: skip
    return out


def _predictions(client: Any, run: Any) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = client.download_artifacts(run.info.run_id, predictions.NAME, folder)
        except Exception as exc:  # an old or foreign run: say so, in one line
            raise CxrError(
                f"run {run.info.run_id}: no {predictions.NAME} artifact to pair on "
                f"({type(exc).__name__})"
            ) from None
        text = read_text(Path(path), "predictions artifact", limit=predictions.LIMIT)
    return predictions.read(text, f"run {run.info.run_id} {predictions.NAME}")
