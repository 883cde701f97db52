"""`cxr reproduce`: images -> stores -> protocol A and B -> one JSON -> docs/results.md.

Everything in the document comes from the JSON this writes; nothing is typed by hand.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
from rich.console import Console

from cxr.audit.probe import ProbeResult, probe
from cxr.classify.config import EvaluateConfig
from cxr.classify.designs import CrossValidation, ExternalTest, LeaveOneOut
from cxr.classify.evaluate import evaluate
from cxr.classify.metrics import Bootstrap
from cxr.classify.provenance import jsonable, library_versions
from cxr.classify.records import Validation
from cxr.classify.results import Result
from cxr.classify.settings import as_flags, default
from cxr.errors import CxrError
from cxr.extract.registry import PAPER_BACKBONES  # plain data, no TensorFlow
from cxr.files import write_atomic
from cxr.progress import Progress, RichProgress, Silent
from cxr.reproduce.protocols import (
    ADULT_NON_COVID,
    ALL_IMAGES,
    CAM_SAMPLE,
    CROSS_SOURCE_DESIGN,
    CROSS_SOURCE_TASKS,
    FOLDS,
    GAP_CROSS_SOURCE,
    GAP_TASKS,
    HEAD,
    NON_COVID,
    POSITIVE,
    PROTOCOLS,
    PUBLISHED,
    REGIONS,
    SMALL_BACKBONES,
    TASKS,
    WEIGHT_NOTES,
)
from cxr.reproduce.render import render
from cxr.reproduce.results import (
    BackboneStatus,
    Checks,
    CrossSource,
    Duplicates,
    Gap,
    GapRow,
    ResultRow,
    StudyReport,
)
from cxr.store import FeatureSet, load
from cxr.store.exclusions import Exclusions
from cxr.store.schema import store_path


def reproduce(
    *,
    data: Path,
    weights: list[str],
    features_dir: Path,
    doc_path: Path,
    jobs: int = default("jobs"),
    seed: int = 0,
    n_boot: int = 1000,
    console: Console | None = None,
    progress: Progress | None = None,
) -> StudyReport:
    """Run the whole study; write ``doc_path`` and return the report it was rendered from (the
    study's JSON: the CLI writes it with --json)."""
    console = console or Console(stderr=True)
    started = time.perf_counter()
    extraction = extract_available(data, weights, features_dir, console)
    extracted = time.perf_counter()
    report = run_study(
        features_dir,
        extraction,
        doc_path.parent,
        jobs=jobs,
        seed=seed,
        n_boot=n_boot,
        console=console,
        progress=progress,
    )
    report["seconds"]["extraction"] = round(extracted - started, 1)
    report["seconds"]["total"] = round(time.perf_counter() - started, 1)
    write_atomic(doc_path, render(report).encode(), "the study's results")
    console.print(f"Wrote {doc_path}", highlight=False)
    return report


def run_study(
    features_dir: Path,
    extraction: dict,
    out_dir: Path,
    *,
    jobs: int = default("jobs"),
    seed: int = 0,
    n_boot: int = 1000,
    console: Console | None = None,
    progress: Progress | None = None,
) -> StudyReport:
    """Protocols A and B and the shortcut checks on the stores listed as available."""
    console = console or Console(stderr=True)
    steps = progress or Silent()
    available = [b for b, status in extraction.items() if status["status"] == "ok"]
    if not available:
        raise CxrError("no backbone has weights available; see the reasons above")
    first = load(store_path(features_dir, available[0]))
    exclusions, duplicates = duplicate_exclusions(features_dir, first, out_dir, seed, steps)
    evaluation_started = time.perf_counter()
    rows: list[ResultRow] = []
    checks: dict[str, Checks] = {}
    gaps: dict[str, Gap] = {}
    for backbone in available:
        console.print(f"[bold]{backbone}[/]: protocols A and B, shortcut checks")
        runs = [(p, key, spec) for p in PROTOCOLS for key, spec in TASKS.items()]
        with steps.step(f"{backbone}: protocols A and B", len(runs)) as done:
            for protocol, task_key, spec in runs:
                task = replace(spec, exclude=exclusions if protocol.drop_duplicates else None)
                config = EvaluateConfig(
                    (backbone,),
                    (HEAD,),
                    task,
                    design=CrossValidation(FOLDS, group_by=protocol.group_by),
                    seed=seed,
                    bootstrap=Bootstrap(n_boot, seed),
                    jobs=jobs,
                )
                report = evaluate(features_dir, config).report
                rows.append(_row(backbone, protocol.key, task_key, report["results"][0]))
                done(1)
        fs = first if backbone == available[0] else load(store_path(features_dir, backbone))
        checks[backbone] = Checks(
            probes=source_probes(fs, seed),
            cross_source=cross_source(
                features_dir, backbone, exclusions, seed=seed, n_boot=n_boot, jobs=jobs
            ),
        )
        gaps[backbone] = generalisation(
            features_dir,
            backbone,
            exclusions,
            out_dir / "figures" if backbone == "mobilenet_v2" else None,
            checks[backbone]["cross_source"][GAP_CROSS_SOURCE],
            seed=seed,
            n_boot=n_boot,
            jobs=jobs,
        )
    return jsonable(
        StudyReport(
            generated=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            command="make reproduce",
            data=_data_counts(first),
            head=HEAD,
            folds=FOLDS,
            seed=seed,
            bootstrap=n_boot,
            published=PUBLISHED,
            backbones=extraction,
            duplicates=duplicates,
            results=rows,
            checks=checks,
            generalisation=gaps,
            machine=_machine(),
            versions=library_versions(),
            extraction_versions=json.loads(fs.attrs.get("versions", "{}")),
            seconds={"evaluation": round(time.perf_counter() - evaluation_started, 1)},
        )
    )


def extract_available(
    data: Path, weights: list[str], out: Path, console: Console
) -> dict[str, BackboneStatus]:
    """Build stores for every backbone whose weights can be had; say why for the others."""
    from cxr.extract.registry import get_spec
    from cxr.extract.runner import extract_features
    from cxr.extract.weights import parse_weights, resolve

    names = [*PAPER_BACKBONES, *SMALL_BACKBONES]
    choices = parse_weights(
        [w for w in weights if w.partition("=")[0] in names or "=" not in w], names, 0
    )
    status: dict[str, BackboneStatus] = {}
    ready = []
    for name in names:
        try:
            resolved = resolve(get_spec(name), choices[name])
        except CxrError as exc:  # its reason as the CLI prints it (results.json, the doc)
            reason = as_flags(str(exc))
            status[name] = BackboneStatus(status="unavailable", reason=reason)
            console.print(f"[yellow]{name}: weights not available ({reason})[/]", highlight=False)
            continue
        ready.append(name)
        status[name] = BackboneStatus(
            status="ok", **resolved.attrs(), note=WEIGHT_NOTES.get(resolved.sha256, "")
        )
    if ready:
        started = time.perf_counter()
        ready_weights = [w for w in weights if w.partition("=")[0] in ready or "=" not in w]
        summaries = extract_features(
            data=data,
            manifest=None,
            backbones=ready,
            weights=ready_weights,
            features_dir=out,
            progress=RichProgress(console, bars=True),
        )
        for region in REGIONS:  # the same films, a region of each: stores of their own
            extract_features(
                data=data,
                manifest=None,
                backbones=ready,
                weights=ready_weights,
                features_dir=out,
                progress=RichProgress(console, bars=True),
                region=region,
            )
        for s in summaries:
            done = status[s.backbone]
            done["rows"], done["new"], done["rejected"], done["dim"] = (
                s.stored,
                s.new,
                s.rejected,
                s.dim,
            )
            done["seconds"] = round(time.perf_counter() - started, 1)
    return status


def duplicate_exclusions(
    features_dir: Path, fs: FeatureSet, out_dir: Path, seed: int, progress: Progress | None = None
) -> tuple[Path, Duplicates]:
    """Protocol B's exclusion file, from `cxr audit` (exact, perceptual-hash and cosine copies).

    Each duplicate cluster keeps its first image and drops the other copies (by path, so one of
    two byte-identical files stays); a picture under two labels is dropped entirely. The audit's
    group merges are kept too, so copies it merged can never sit in two folds.
    """
    from cxr.audit.run import audit

    backbone = fs.backbone
    report = audit(features_dir, backbone, probes=["dataset"], seed=seed, progress=progress)
    found = Exclusions.from_json(report["exclusions"])
    exclude = set(found.exclude)
    for cluster in report["clusters"]:
        if "label" not in cluster["conflicts"]:
            exclude.update(member["path"] for member in cluster["members"][1:])
    exclusions = Exclusions(frozenset(exclude), found.groups)
    path = out_dir / "duplicates-exclude.json"
    out_dir.mkdir(parents=True, exist_ok=True)
    exclusions.write(path)
    counts = report["counts"]
    return path, Duplicates(
        method=(
            f"cxr audit on {backbone}: sha256, {report['settings']['hash_method']} <= "
            f"{report['settings']['hash_threshold']} bits, embedding cosine >= "
            f"{report['settings']['cosine_threshold']}"
        ),
        clusters=counts["clusters"],
        rows_in_clusters=counts["rows_in_clusters"],
        excluded=int(exclusions.dropped(fs.ids, fs.rows["path"]).sum()),
        label_conflicts=counts["label_conflicts"],
        patient_conflicts=counts["patient_conflicts"],
        members=[[m["path"] for m in c["members"]] for c in report["clusters"]],
    )


def source_probes(fs: FeatureSet, seed: int) -> dict[str, ProbeResult]:
    """How well a linear probe on the same embeddings names the source data set, vs chance."""
    dataset = fs.column("dataset")
    rows = {ALL_IMAGES: np.ones(len(fs), dtype=bool), NON_COVID: fs.labels != POSITIVE}
    return {
        name: probe(fs.X[keep], dataset[keep], fs.patient_ids[keep], seed=seed, ids=fs.ids[keep])
        for name, keep in rows.items()
    }


def cross_source(
    features_dir: Path, backbone: str, exclusions: Path, *, seed: int, n_boot: int, jobs: int
) -> dict[str, CrossSource]:
    """Train on the paper's composition, then score the adult non-COVID films it never saw.

    This is `cxr evaluate --test-where dataset=ieee8023,actualmed --test-where
    label=bacterial,viral,normal` on each training task (CROSS_SOURCE_TASKS): the everyday
    command, so the study and the tool cannot drift. Every test image called COVID-19 is a false
    alarm; the test rows keep the task's classes (dataset 1 has no viral class).
    """
    out = {}
    for task_key in CROSS_SOURCE_TASKS:
        config = EvaluateConfig(
            (backbone,),
            (HEAD,),
            replace(TASKS[task_key], exclude=exclusions),
            design=ExternalTest(ADULT_NON_COVID),
            seed=seed,
            bootstrap=Bootstrap(n_boot, seed),
            confounds=(),
            jobs=jobs,
        )
        report = evaluate(features_dir, config).report
        [result] = report["results"]
        covid = result["classes"].index(POSITIVE)
        called = {
            cls: row[covid]
            for cls, row in zip(result["classes"], result["confusion_matrix"], strict=True)
            if cls != POSITIVE
        }
        out[task_key] = CrossSource(
            n_train=Validation.of(result).n_train or 0,
            n_unseen=result["n"],
            unseen_labels={c: n for c, n in result["class_counts"].items() if n},
            called_covid=sum(called.values()),
            called_covid_by_label=called,
            specificity=result["metrics"]["per_class"][POSITIVE]["specificity"],
        )
    return out


def _row(backbone: str, protocol: str, task: str, result: Result) -> ResultRow:
    covid = result["metrics"]["per_class"][POSITIVE]
    return ResultRow(
        backbone=backbone,
        protocol=protocol,
        task=task,
        cv=result["cv"],
        n=result["n"],
        class_counts=result["class_counts"],
        accuracy=result["metrics"]["accuracy"],
        balanced_accuracy=result["metrics"]["balanced_accuracy"],
        sensitivity=covid["sensitivity"],
        specificity=covid["specificity"],
        confusion_matrix=result["confusion_matrix"],
        classes=result["classes"],
    )


def _data_counts(fs) -> dict:
    pairs = Counter(zip(fs.labels.tolist(), fs.column("dataset").tolist(), strict=True))
    table: dict[str, dict[str, int]] = {}
    for (label, dataset), n in sorted(pairs.items()):
        table.setdefault(label, {})[dataset] = n
    return {
        "root": fs.attrs.get("data_root", ""),
        "images": len(fs),
        "patients": len(set(fs.patient_ids.tolist())),
        "by_label_and_dataset": table,
    }


def _machine() -> dict:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpus": os.cpu_count(),
        "memory_gib": round(memory, 1),
    }


def generalisation(
    features_dir: Path,
    backbone: str,
    exclusions: Path,
    figures: Path | None,
    cross: CrossSource,
    *,
    seed: int,
    n_boot: int,
    jobs: int,
) -> Gap:
    """Protocol B's dataset 1 (patient-grouped, duplicates removed, the MLP) on whole films, on
    centre-masked and on centre-only films (the same images and folds: paired differences),
    with each source held out in turn, the cross-source test (``cross``), and the share of the
    MLP's evidence outside the centre (`cxr explain`); ``figures`` gets a contact sheet of the
    COVID-19 films' maps."""
    from cxr.classify.explain import explain
    from cxr.classify.model import fitted
    from cxr.classify.plots import explanation_plots
    from cxr.extract.explain import feature_maps
    from cxr.extract.regions import BOX

    rows: list[GapRow] = []
    notes: list[str] = []
    stores = [backbone, *(f"{backbone}@{r}" for r in REGIONS)]
    present = [s for s in stores if store_path(features_dir, s).is_file()]
    if present != stores:
        notes.append(
            f"regions not evaluated: no store {', '.join(sorted(set(stores) - set(present)))}"
        )
    scoring = Bootstrap(n_boot, seed)
    for key in GAP_TASKS:
        task = replace(TASKS[key], exclude=exclusions)
        config = EvaluateConfig(
            tuple(present), (HEAD,), task, design=CrossValidation(FOLDS, group_by="patient"),
            seed=seed, bootstrap=scoring, confounds=(), jobs=jobs,
        )  # fmt: skip
        for result in evaluate(features_dir, config).report["results"]:
            region = result["backbone"].partition("@")[2]
            rows.append(_gap_row(result, key, region.replace("-", " ") or "whole films"))
    task = replace(TASKS["dataset 1, covid vs rest"], exclude=exclusions)
    held = EvaluateConfig(
        (backbone,), (HEAD,), task, design=LeaveOneOut("dataset"), seed=seed, bootstrap=scoring,
        confounds=(), jobs=jobs,
    )  # fmt: skip
    try:
        report = evaluate(features_dir, held).report
    except CxrError as exc:  # no source can be held out of these rows
        notes.append(f"no source held out: {as_flags(str(exc))}")
    else:
        for result in report["results"]:
            design = f"held out: {Validation.of(result).held_out}"
            rows.append(_gap_row(result, "dataset 1, covid vs rest", design))
        notes += [w.split(": ", 1)[1] for w in report["warnings"] if "is not held out" in w]
    rows.append(
        GapRow(
            design=CROSS_SOURCE_DESIGN, task=GAP_CROSS_SOURCE, n=cross["n_unseen"],
            balanced_accuracy=cross["specificity"], difference=None,
            sensitivity={"pooled": None, "ci95": [None, None]},  # no COVID-19 film to find
        )
    )  # fmt: skip
    cam: dict = {}
    sheet = ""
    try:
        fs = load(store_path(features_dir, backbone))
        bundle, _ = fitted(fs, HEAD, replace(TASKS["dataset 1, 3-class"], exclude=exclusions),
                           {}, seed)  # fmt: skip
        explained = explain(bundle, feature_maps, model_path=fs.path, features_dir=features_dir,
                            sample=CAM_SAMPLE, box=BOX, seed=seed)  # fmt: skip
        cam = dict(explained.report["by_class"])
        if figures is not None:
            import shutil
            import tempfile

            with tempfile.TemporaryDirectory() as folder:
                explanation_plots(explained, Path(folder))
                made = Path(folder) / "sheet-class-covid.png"
                if made.is_file():
                    figures.mkdir(parents=True, exist_ok=True)
                    target = figures / f"cam-{backbone}-covid.png"
                    shutil.copyfile(made, target)
                    sheet = f"figures/{target.name}"
    except CxrError as exc:
        notes.append(f"evidence maps not computed: {as_flags(str(exc))}")
    return Gap(
        rows=rows, cam=cam, cam_method="grad-cam", box=BOX, uniform_outside=1 - BOX * BOX,
        sheet=sheet, notes=notes,
    )  # fmt: skip


def _gap_row(result: Result, task: str, design: str) -> GapRow:
    gain = result.get("region_gain")
    return GapRow(
        design=design,
        task=task,
        n=result["n"],
        balanced_accuracy=result["metrics"]["balanced_accuracy"],
        sensitivity=result["metrics"]["per_class"][POSITIVE]["sensitivity"],
        difference=gain,
    )
