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

from cxr.classify.records import Validation  # plain data
from cxr.classify.settings import EVALUATE, default  # plain data
from cxr.errors import CxrError
from cxr.extract.settings import FEATURES  # plain data
from cxr.extract.settings import default as feature
from cxr.settings import takes

if TYPE_CHECKING:
    import pandas as pd

    from cxr.audit.run import AuditReport
    from cxr.classify.designs import Design
    from cxr.classify.model import PredictReport, TrainSummary
    from cxr.classify.neighbours import Sample
    from cxr.classify.results import Evaluated, EvaluateReport, Outcome, Result
    from cxr.extract.runner import Summary
    from cxr.progress import Progress
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


@takes(FEATURES, skip=("backbones",))
def extract_features(
    data: Path | str,
    backbones: Sequence[str] = feature("backbones"),
    *,
    progress: Progress | None = None,
    **settings: Any,
) -> list[Summary]:
    """`cxr features`: embed every image once per backbone (incremental). The keywords are the
    settings of `cxr features` (`cxr.extract.settings`, with their defaults; ``help`` lists
    them), as Python values. ``weights`` takes the CLI's syntax (``"imagenet"``,
    ``"mobilenet_v2=/path/w.h5"``). ``layout``: how ``data`` is read ("auto" recognises it;
    "kermany", "covidx", ...), with ``columns`` naming a manifest's columns by role
    (``{"label": "diagnosis"}``), ``patient_from_name`` a regular expression, ``label_map``
    rules (``{"Pneumonia/Fungal": "fungal"}``). ``replace``: rebuild a store that holds another
    data set's rows. ``scheduler``: a Dask address or ``"local:N"`` (a script using local:N runs
    under ``if __name__ == "__main__":``), ``shard`` files per task."""
    from cxr.extract.runner import from_settings

    chosen = {"backbones": backbones, **settings}
    return from_settings(data, chosen, progress, caller="cxr.extract_features")


@takes(EVALUATE, skip=("backbones", "heads"))
def evaluate(
    features: Path | str = "features",
    backbones: Sequence[str] = default("backbones"),
    heads: Sequence[str] = default("heads"),
    *,
    design: Design | None = None,
    plots: Path | str | None = None,
    progress: Progress | None = None,
    **settings: Any,
) -> Evaluation:
    """`cxr evaluate`: every (backbone, head) validated on one task.

    The keywords are the settings of `cxr evaluate` (`cxr.classify.settings`, with their
    defaults; ``help(cxr.evaluate)`` lists them), as Python values: ``merge={"pneumonia":
    ["bacterial", "viral"]}``, ``where=["label=covid | dataset=kermany"]`` (the ``--where``
    expressions), ``params={"mlp": {"alpha": 1e-3}}`` (a list is a grid for ``search=True``),
    ``train_sizes=[25, 50, "all"]``, ``covariates=["view"]``, ``confounds=[]`` for none; the
    CLI's ``"a,b"`` text works for a list too. The design is cross-validation (``folds``,
    ``repeats``, ``group_by``), ``leave_out=COLUMN`` or ``test_where=[...]``; or pass any
    `cxr.classify.designs.Design` as ``design``. ``cache=False`` fits every head again
    (`cxr evaluate --no-cache`). ``plots`` writes the figures there. ``predictions=True`` keeps
    every out-of-fold prediction (``Evaluation.predictions()``).
    """
    from cxr.classify.config import EvaluateConfig
    from cxr.classify.evaluate import evaluate as run

    folder = _plot_folder(plots)
    chosen = {"backbones": backbones, "heads": heads, **settings}
    config = EvaluateConfig.of(chosen, design, caller="cxr.evaluate")
    evaluation = Evaluation.of(run(Path(features), config, progress=progress))
    if folder is not None:
        evaluation.plot(folder)
    return evaluation


def _plot_folder(plots: Path | str | None) -> Path | None:
    """The plots' folder, checked (and made) before any work."""
    if plots is None:
        return None
    folder = Path(plots)
    if folder.exists() and not folder.is_dir():
        raise CxrError(f"plots={folder}: is a file")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CxrError(f"plots={folder}: cannot create it ({exc.strerror})") from None
    return folder


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
) -> PredictReport:
    """`cxr predict`: class probabilities of new images with a trained model file."""
    from cxr.classify.model import predict as run
    from cxr.extract.runner import embed_images

    return run(Path(model), [Path(p) for p in images], embed_images, weights)


@dataclass(frozen=True)
class Evaluation:
    """A `cxr evaluate` result: ``report`` is the JSON document, the methods are views of it
    (``outcomes``: each result's out-of-fold arrays, for ``plot``)."""

    report: EvaluateReport
    outcomes: tuple[Outcome, ...] = ()
    samples: tuple[Sample, ...] = ()  # each store's films for its embedding map

    @classmethod
    def of(cls, evaluated: Evaluated) -> Evaluation:
        return cls(evaluated.report, evaluated.outcomes, evaluated.samples)

    def plot(self, folder: Path | str) -> list[str]:
        """Write the figures (confusion, ROC, reliability, forest, learning curves, each
        store's embedding map) to ``folder``; their paths are added to the report and
        returned."""
        from cxr.classify.plots import write_plots
        from cxr.classify.results import Evaluated
        from cxr.extract.images import thumbnail  # stage 1's decoder, for the galleries

        if len(self.outcomes) != len(self.results):
            raise CxrError("this Evaluation has no out-of-fold arrays to plot (made from JSON)")
        evaluated = Evaluated(self.report, self.outcomes, self.samples)
        return write_plots(evaluated, Path(folder), thumbnail)

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
            held = Validation.of(r).held_out
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
        label of the task, the ``fold`` (the split that tested the row), ``p_<class>`` columns
        and the predicted class; then the store's columns of the image (``source``, ``view``, a
        manifest's ``split``, ...; ``patient_id``, and the stored ``label`` as
        ``stored_label``: a stored column whose name is taken is prefixed ``stored_``). An
        Evaluation made from JSON alone has the predictions without the store's columns."""
        import pandas as pd

        frames = []
        for i, r in enumerate(self.results):
            p = r.get("predictions")
            if p is None:
                raise CxrError(
                    "this evaluation kept no predictions: run cxr.evaluate(..., "
                    "predictions=True), or for a JSON report `cxr evaluate --predictions`"
                )
            frame = pd.DataFrame(
                {
                    "backbone": r["backbone"],
                    "head": r["head"],
                    **{k: p[k] for k in ("id", "path", "group", "label")},
                    "fold": p["split"],
                    **{f"p_{c}": p["proba"][c] for c in r["classes"]},
                }
            )
            probabilities = frame[[f"p_{c}" for c in r["classes"]]].to_numpy()
            frame["predicted"] = [r["classes"][k] for k in probabilities.argmax(axis=1)]
            stored = self.outcomes[i].columns if i < len(self.outcomes) else None
            for name, values in (stored or {}).items():
                if name in ("id", "path"):  # the same values, already there
                    continue
                shown = name
                while shown in frame.columns:
                    shown = f"stored_{shown}"
                frame[shown] = values
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)

    def show(self) -> None:
        """The terminal report, as `cxr evaluate` prints it."""
        from rich.console import Console

        from cxr.classify.tables import render

        render(self.report, Console())

    def _repr_html_(self) -> str:
        """The summary table, escaped, for Jupyter (the HTML report's first section)."""
        from cxr.reporting.sections import summary_table

        return summary_table(self.report)

    def __repr__(self) -> str:
        import shutil
        import textwrap

        from cxr.classify.presentation import part_name
        from cxr.reporting.sections import design_words

        metric = self.report["settings"]["metric"]
        first = self.results[0]
        width = shutil.get_terminal_size().columns
        lines = [f"Evaluation: {first['task']['name']}, {len(self.results)} result(s), by {metric}"]
        lines += textwrap.wrap(design_words(self.report), width, initial_indent="  ",
                               subsequent_indent="    ", break_on_hyphens=False)  # fmt: skip
        for r in self.results:
            stat = r["metrics"][metric]
            lo, hi = stat["ci95"]
            mark = " (best)" if r.get("comparison", {}).get("is_best") else ""
            lines.append(f"  {part_name(r)}: {stat['pooled']:.3f} [{lo:.3f}, {hi:.3f}]{mark}")
        for w in self.report["warnings"]:
            lines += textwrap.wrap(f"warning: {w}", width, initial_indent="  ",
                                   subsequent_indent="    ", break_on_hyphens=False)  # fmt: skip
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
        from cxr.store.exclusions import Exclusions

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
