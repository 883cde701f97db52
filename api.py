"""The Python interface, for notebooks and scripts: the CLI's commands as functions.

Each function takes the options of the command of the same name (keyword arguments, Python
values instead of CLI syntax) and returns a typed result with a short repr and DataFrame views.
The results wrap exactly the documents `--json` writes (``.report``), so a notebook and a
pipeline read the same keys. Like the CLI, this module is an edge that joins the two stages:
`predict` hands stage 1's embedder to stage 2. Imports are lazy, so ``import cxr`` stays instant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from cxr.audit.run import AuditReport
    from cxr.classify.evaluate import EvaluateReport, Result
    from cxr.classify.model import Predictions, TrainSummary
    from cxr.extract.progress import Summary
    from cxr.store import FeatureSet


def load_store(
    location: Path | str = "features",
    backbone: str | None = None,
    *,
    where: Mapping[str, Sequence[str]] | None = None,
) -> FeatureSet:
    """One store: ``X`` (rows x dims), ``to_frame()`` of its rows, ``column()``, ``numeric()``."""
    from cxr.store import load

    return load(location, backbone, where=where)


def extract_features(
    data: Path | str,
    backbones: Sequence[str] = ("mobilenet_v2",),
    *,
    weights: Sequence[str] = (),
    features: Path | str = "features",
    manifest: Path | str | None = None,
    **options: Any,
) -> list[Summary]:
    """`cxr features`: embed every image once per backbone (incremental). ``weights`` takes the
    CLI's syntax (``"imagenet"``, ``"mobilenet_v2=/path/w.h5"``); ``options``: batch_size,
    resize, seed, rehash, rebuild, runtime, precision, reporter, scheduler (a Dask address or
    ``"local:N"``; a script using local:N runs under ``if __name__ == "__main__":``), shard."""
    from cxr.extract.runner import extract_features as run

    return run(
        data=Path(data),
        manifest=Path(manifest) if manifest else None,
        backbones=list(backbones),
        weights=list(weights),
        features_dir=Path(features),
        **options,
    )


def evaluate(
    features: Path | str = "features",
    backbones: Sequence[str] = (),
    heads: Sequence[str] = (),
    *,
    classes: Sequence[str] = (),
    merge: Mapping[str, Sequence[str]] | None = None,
    binary: str | None = None,
    where: Sequence[str] = (),
    exclude: Path | str | None = None,
    target: str = "label",
    params: Mapping[str, Mapping[str, Any]] | None = None,
    predictions: bool = True,
    **options: Any,
) -> Evaluation:
    """`cxr evaluate`: every (backbone, head) validated on one task.

    ``merge={"pneumonia": ["bacterial", "viral"]}``, ``where=["dataset=kermany"]`` (the CLI's
    syntax), ``params={"mlp": {"alpha": 1e-3}}`` (a list is a grid for ``search=True``).
    ``options`` are those of `cxr.classify.evaluate.evaluate`: folds, repeats, seed, jobs,
    group_by, leave_out, test_where, search, n_boot (or bootstrap), metric, operating_point,
    plots, train_sizes (``[25, 50, "all"]`` or ``"25,50,all"``), curve_draws, curve_margin,
    covariates (``["view"]`` or ``"view,age"``), covariates_only, progress, scheduler.
    Out-of-fold predictions are kept by default (``Evaluation.predictions()``).
    """
    from cxr.classify.evaluate import evaluate as run
    from cxr.classify.heads import validate_params
    from cxr.classify.tasks import TaskSpec

    task = TaskSpec.from_options(
        ",".join(classes),
        [f"{new}={','.join(olds)}" for new, olds in (merge or {}).items()],
        binary,
        list(where),
        Path(exclude) if exclude else None,
        target,
    )
    checked = {head: validate_params(head, dict(values)) for head, values in (params or {}).items()}
    if "bootstrap" in options:  # the CLI's name for it
        options["n_boot"] = options.pop("bootstrap")
    report = run(
        Path(features), backbones, heads, task, checked, predictions=predictions, **options
    )
    return Evaluation(report)


def audit(features: Path | str = "features", backbone: str | None = None, **options: Any) -> Audit:
    """`cxr audit`: duplicates, label/patient conflicts and confound probes of one store.
    ``options``: data, hash_threshold, cosine_threshold, probes, seed, progress, scheduler."""
    from cxr.audit.run import audit as run

    return Audit(run(Path(features), backbone, **options))


def train(
    features: Path | str = "features",
    backbone: str | None = None,
    head: str = "mlp",
    **options: Any,
) -> TrainSummary:
    """`cxr train`; ``options``: task (a TaskSpec), params, seed, out, force."""
    from cxr.classify.model import train as run

    return run(Path(features), backbone, head, **options)


def predict(
    model: Path | str, images: Sequence[Path | str], weights: Sequence[str] = ()
) -> Predictions:
    """`cxr predict`: class probabilities of new images with a trained model file."""
    from cxr.classify.model import predict as run
    from cxr.extract.runner import embed_images

    return run(Path(model), [Path(p) for p in images], embed_images, weights)


@dataclass(frozen=True)
class Evaluation:
    """A `cxr evaluate` result: ``report`` is the JSON document, the methods are views of it."""

    report: EvaluateReport

    @property
    def results(self) -> list[Result]:
        return self.report["results"]

    @property
    def best(self) -> Result:
        """The best result of the first comparison group, by the report's metric."""
        return next(r for r in self.results if r.get("comparison", {}).get("is_best"))

    def summary(self) -> pd.DataFrame:
        """One row per result: every overall metric, pooled with its 95% CI bounds."""
        import pandas as pd

        rows = []
        for r in self.results:
            row = {"backbone": r["backbone"], "head": r["head"], "n": r["n"]}
            held = r.get("validation", {}).get("held_out")
            if held is not None:
                row["held_out"] = held
            for name, stat in r["metrics"].items():
                if name != "per_class":
                    row[name] = stat["pooled"]
                    row[f"{name}_lo"], row[f"{name}_hi"] = stat["ci95"]
            rows.append(row)
        return pd.DataFrame(rows)

    def predictions(self) -> pd.DataFrame:
        """Every out-of-fold prediction: one row per (result, test image, repeat), with the true
        label, the split, ``p_<class>`` columns and the predicted class."""
        import pandas as pd

        frames = []
        for r in self.results:
            p = r.get("predictions")
            if p is None:
                raise ValueError("no predictions in this report: evaluate(..., predictions=True)")
            frame = pd.DataFrame(
                {
                    "backbone": r["backbone"],
                    "head": r["head"],
                    **{k: p[k] for k in ("id", "path", "group", "label", "split")},
                    **{f"p_{c}": p["proba"][c] for c in r["classes"]},
                }
            )
            probabilities = frame[[f"p_{c}" for c in r["classes"]]].to_numpy()
            frame["predicted"] = [r["classes"][i] for i in probabilities.argmax(axis=1)]
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)

    def show(self) -> None:
        """The terminal report, as `cxr evaluate` prints it."""
        from rich.console import Console

        from cxr.classify.report import render

        render(self.report, Console())

    def __repr__(self) -> str:
        from cxr.classify.evaluate import result_name

        metric = self.report["settings"]["metric"]
        first = self.results[0]
        lines = [f"Evaluation: {first['task']['name']}, {len(self.results)} result(s), by {metric}"]
        for r in self.results:
            stat = r["metrics"][metric]
            held = r.get("validation", {}).get("held_out")
            where = f" [held out {held}]" if held is not None else ""
            lo, hi = stat["ci95"]
            mark = " (best)" if r.get("comparison", {}).get("is_best") else ""
            lines.append(
                f"  {result_name(r)}{where}: {stat['pooled']:.3f} [{lo:.3f}, {hi:.3f}]{mark}"
            )
        lines += [f"  warning: {w}" for w in self.report["warnings"][:3]]
        return "\n".join(lines)


@dataclass(frozen=True)
class Audit:
    """A `cxr audit` result: ``report`` is the JSON document."""

    report: AuditReport

    def clusters(self) -> pd.DataFrame:
        """One row per image in a duplicate cluster: cluster number, methods, conflicts, row."""
        import pandas as pd

        rows = [
            {
                "cluster": n,
                "methods": ",".join(c["methods"]),
                "conflicts": ",".join(c["conflicts"]),
                **m,
            }
            for n, c in enumerate(self.report["clusters"])
            for m in c["members"]
        ]
        return pd.DataFrame(rows)

    def write_exclusions(self, path: Path | str) -> Path:
        """The exclusion file for ``evaluate(exclude=...)`` (`cxr audit --exclude-out`)."""
        from cxr.audit.exclusions import Exclusions

        Exclusions.from_json(self.report["exclusions"]).write(Path(path))
        return Path(path)

    def __repr__(self) -> str:
        counts = self.report["counts"]
        probes = ", ".join(
            f"{name} {p['balanced_accuracy']:.2f} (chance {p['chance_balanced_accuracy']:.2f})"
            for name, p in self.report["probes"].items()
            if p.get("balanced_accuracy") is not None
        )
        return (
            f"Audit of {self.report['store']}: {counts['clusters']} duplicate cluster(s) over "
            f"{counts['rows_in_clusters']} rows, {counts['label_conflicts']} label and "
            f"{counts['patient_conflicts']} patient conflict(s); probes: {probes or 'none'}"
        )
