"""`cxr evaluate --track`: one evaluation logged as one MLflow run (params, metrics with their CI
bounds, tags, and as artifacts exactly what the run made: the JSON, the predictions, the HTML
report, and the figures it recorded as written, under ``plots/``).

The figures are the run's own record (`cxr.reporting.figures`), each checked as the report
checks it; nothing is gathered by listing the --plots folder, which may hold a features folder,
a study key, a tracking store or other runs' figures.

Called after the report's files are written: a tracking store that is down or refuses costs one
warning, never the evaluation, and a run that breaks halfway is ended FAILED, not left RUNNING.
MLflow retries HTTP with backoff for minutes by default; the tool's own calls get short limits
(a user's own MLFLOW_HTTP_* settings win). A local store that cannot be written is found before
MLflow is called (it retries a SQLite file it cannot open for about two minutes).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cxr.classify.heads import setting_text
from cxr.classify.presentation import presentation_of
from cxr.classify.records import Validation
from cxr.classify.results import EvaluateReport, Outcome
from cxr.reporting.figures import recorded
from cxr.tracking import predictions
from cxr.tracking.target import Target

LIMITS = {  # MLflow's HTTP client: no retries, 5 s per request
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
}
_UNSAFE = re.compile(r"[^\w./ :-]")  # MLflow's allowed characters in keys


def key(text: str) -> str:
    """A key MLflow accepts: ``mobilenet_v2@centre-masked`` -> ``mobilenet_v2_centre-masked``."""
    return _UNSAFE.sub("_", text)


def connect(target: Target) -> Any:
    """An MlflowClient for the target, with short HTTP limits; MLflow is imported here."""
    for name, value in LIMITS.items():
        os.environ.setdefault(name, value)
    from mlflow.tracking import MlflowClient

    for name in ("alembic", "mlflow"):  # their INFO lines are not the user's business
        logging.getLogger(name).setLevel(logging.WARNING)

    return MlflowClient(tracking_uri=target.uri)


def experiment_id(client: Any, target: Target, create: bool) -> str | None:
    found = client.get_experiment_by_name(target.experiment)
    if found is not None:
        return str(found.experiment_id)
    if not create:
        return None
    return str(client.create_experiment(target.experiment, artifact_location=target.artifacts))


def params_of(report: EvaluateReport) -> dict[str, str]:
    """What was run: task, design, heads and every setting, seed, store digests, weights."""
    first = report["results"][0]
    prov = report["provenance"]
    found = {
        "task": first["task"]["name"],
        "design": presentation_of(first).describe(first),
        "metric": report["settings"]["metric"],
        "operating_point": str(report["settings"]["operating_point"]),
        "seed": str(prov["seed"]),
        "bootstrap": str(prov["bootstrap"]["replicates"]),
        "heads": ",".join(dict.fromkeys(r["head"] for r in report["results"])),
        "backbones": ",".join(prov["stores"]),
    }
    for r in report["results"]:
        for name, value in (r.get("params") or {}).items():
            found[key(f"{r['head']}.{name}")] = setting_text(value)
        searched = r.get("search") or {}
        if searched:
            found[key(f"{r['head']}.search")] = ",".join(searched["grid"])
    for store, attrs in prov["stores"].items():
        found[key(f"store.{store}.rows_sha256")] = str(attrs.get("rows_sha256", ""))
        found[key(f"store.{store}.weights_sha256")] = str(attrs.get("weights_sha256", ""))
    for library, version in prov["versions"].items():
        found[key(f"version.{library}")] = str(version)
    return {k: v[:6000] for k, v in found.items()}


def metrics_of(report: EvaluateReport) -> dict[str, float]:
    """Every overall metric of every result, with its 95% CI bounds (``..._ci_low``)."""
    found = {}
    for r in report["results"]:
        name = key(predictions.result_key(r).replace(" + ", ".").replace(" | held out: ", "@"))
        for metric, stat in r["metrics"].items():
            if metric == "per_class" or stat.get("pooled") is None:
                continue
            found[f"{name}.{metric}"] = float(stat["pooled"])
            for bound, value in zip(("ci_low", "ci_high"), stat["ci95"], strict=True):
                if value is not None:
                    found[f"{name}.{metric}_{bound}"] = float(value)
    return found


def tags_of(report: EvaluateReport, best: tuple[str, str], settings: str) -> dict[str, str]:
    first = report["results"][0]
    return {
        "cxr.task": first["task"]["name"],
        "cxr.design": Validation.of(first).kind,
        "cxr.backbones": ",".join(report["provenance"]["stores"]),
        "cxr.heads": ",".join(dict.fromkeys(r["head"] for r in report["results"])),
        "cxr.best": best[0],
        "cxr.score": best[1],
        "cxr.settings": settings,
        "mlflow.runName": f"{first['task']['name']}: {settings}"[:250],
    }


def report_page(report: EvaluateReport, plots: Path | None) -> str:
    """The run's HTML report (`cxr report` of its JSON), figures found in ``plots``."""
    from cxr.reporting import render_report
    from cxr.reporting.documents import Document, Documents

    page, _, _ = render_report(Documents((Document(_base(plots), "evaluate", dict(report)),)))
    return page


def log_run(
    report: EvaluateReport,
    outcomes: Sequence[Outcome],
    target: Target,
    *,
    best: tuple[str, str],
    settings: str,
    plots: Path | None = None,
) -> tuple[str | None, str | None]:
    """Log the run; (run id, None), or (None, a one-line warning) when the store cannot be
    reached or refuses. ``best`` (the best result, its score) and ``settings``: the report's
    words, for the tags."""
    client: Any = None
    run: Any = None
    problem = target.unwritable()
    if problem:
        return (
            None,
            f"tracking: run not logged to {target.uri} ({problem}); the report's files are written",
        )
    try:
        client = connect(target)
        experiment = experiment_id(client, target, create=True)
        run = client.create_run(experiment, tags=tags_of(report, best, settings))
        _log_contents(client, run, report, outcomes, plots)
        client.set_terminated(run.info.run_id, "FINISHED")
    except Exception as exc:  # tracking never costs the evaluation
        if run is not None:
            _end_failed(client, run.info.run_id)
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        return (
            None,
            f"tracking: run not logged to {target.uri} ({reason}); the report's files are written",
        )
    return run.info.run_id, None


def _log_contents(
    client: Any, run: Any, report: EvaluateReport, outcomes: Sequence[Outcome], plots: Path | None
) -> None:
    """A created run's params, metrics and artifacts (the JSON, predictions, plots, report)."""
    from mlflow.entities import Metric, Param, RunTag

    run_id, stamp = run.info.run_id, run.info.start_time
    client.log_batch(
        run_id,
        metrics=[Metric(k, v, stamp, 0) for k, v in metrics_of(report).items()],
        params=[Param(k, v) for k, v in params_of(report).items()],
        tags=[RunTag("cxr.version", str(report["provenance"]["versions"].get("cxr-transfer")))],
    )
    client.log_text(run_id, json.dumps(report, indent=2) + "\n", "evaluate.json")
    client.log_text(run_id, json.dumps(predictions.document(report, outcomes)), predictions.NAME)
    figures = [f for f in recorded(dict(report), _base(plots)) if f.data is not None]
    if figures:
        with tempfile.TemporaryDirectory() as folder:  # exactly the checked bytes, nothing else
            for figure in figures:
                (Path(folder) / figure.name).write_bytes(figure.data or b"")
            client.log_artifacts(run_id, folder, "plots")
    client.log_text(run_id, report_page(report, plots), "report.html")


def _base(plots: Path | None) -> Path:
    """Where the run's document stands for its figures: in the plots folder."""
    return (plots or Path.cwd()) / "evaluate.json"


def _end_failed(client: Any, run_id: str) -> None:
    """A run that broke halfway is marked FAILED, not left RUNNING in the store's listings; when
    the store cannot take even that, the one warning already says the run was not logged."""
    with contextlib.suppress(Exception):
        client.set_terminated(run_id, "FAILED")
