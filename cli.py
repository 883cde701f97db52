"""`cxr`: a thin Typer layer over stage 1 (extract) and stage 2 (classify).

Each command parses its options, calls one function, and shows the result. The tool's own errors
(CxrError) become a one-line message and their exit status in one place, the command group's
``invoke`` below. One vocabulary across commands: ``--features DIR`` is the store folder,
``--json PATH`` writes the command's JSON document (``-`` for stdout, which then holds the JSON
alone), choices come from the registries. Heavy libraries (TensorFlow, scikit-learn, h5py) are
imported inside the commands, so `cxr --help` starts fast.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from enum import Enum
from functools import partial, wraps
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text
from typer.core import TyperGroup

from cxr.audit.thresholds import COSINE_THRESHOLD, HASH_THRESHOLD  # plain data
from cxr.classify.heads import HEADS  # plain data
from cxr.classify.metric_table import overall_metrics  # plain data
from cxr.classify.settings import EVALUATE, Setting, as_flags  # plain data
from cxr.errors import CxrError, Interrupted, RunFailed
from cxr.extract.registry import RESIZE_POLICIES  # plain data
from cxr.extract.runtimes import PRECISIONS, RUNTIMES  # plain data
from cxr.extract.settings import DECODES, FEATURES  # plain data
from cxr.files import write_atomic
from cxr.interrupt import STOPS, signal_of, stop_workers, stopping


def _console_for(stderr: bool = False) -> Console:
    """Rich's 80 columns off a terminal would wrap every table cell in a log or a pipe; there,
    use 160 unless $COLUMNS says otherwise."""
    console = Console(stderr=stderr)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(stderr=stderr, width=160)
    return console


err_console = _console_for(stderr=True)


class _Commands(TyperGroup):
    """The one CLI edge: any CxrError, from any command, is one line on stderr and its status;
    so is Ctrl-C or SIGTERM (`cxr.interrupt`: workers stopped, status 130 or 143), and so is
    each of the tool's own warnings (a cache entry ignored). Help is printed as written: Rich
    would take ``'cxr-transfer[tracking]'`` for markup and drop the brackets."""

    def get_command(self, ctx, cmd_name):
        command = super().get_command(ctx, cmd_name)
        if command is not None and not getattr(command, "escaped", False):
            items: list[Any] = [command, *command.params]  # a command and its parameters
            for item in items:
                text = getattr(item, "help", None)
                if text:
                    item.help = escape(text)
            command.escaped = True  # type: ignore[attr-defined]
        return command

    def invoke(self, ctx):
        try:
            with stopping(), _one_line_warnings():
                try:
                    return super().invoke(ctx)
                except STOPS as stop:
                    stop_workers()
                    raise Interrupted(_stopped(signal_of(stop)), signal_of(stop)) from None
        except CxrError as exc:
            # The message echoes user input: printed as text, never as markup or :emoji: codes.
            word = "[yellow]stopped:[/]" if isinstance(exc, Interrupted) else "[red]error:[/]"
            err_console.print(
                word, escape(as_flags(str(exc))), highlight=False, emoji=False, soft_wrap=True
            )
            raise typer.Exit(exc.exit_code) from None


def _stopped(signum: int) -> str:
    import signal

    return (
        f"interrupted ({signal.Signals(signum).name}); every file written so far is whole, "
        "nothing half-written was kept; run the same command again"
    )


@contextmanager
def _one_line_warnings() -> Iterator[None]:
    """The tool's own warnings (`cxr.trust.CacheWarning`) as ``warning: ...``, one line."""
    import warnings

    from cxr.trust import CacheWarning

    default = warnings.formatwarning

    def formatted(message, category, filename, lineno, line=None) -> str:
        if issubclass(category, CacheWarning):
            return f"warning: {as_flags(str(message))}\n"
        return default(message, category, filename, lineno, line)

    warnings.formatwarning = formatted
    try:
        yield
    finally:
        warnings.formatwarning = default


def _version(value: bool) -> None:
    if value:
        from cxr import __version__

        print(f"cxr {__version__}")
        raise typer.Exit()


app = typer.Typer(
    cls=_Commands,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Chest X-ray transfer learning: cache frozen-CNN embeddings in HDF5, then cross-validate
    scikit-learn heads on them. For research, not diagnosis."""


# Choices straight from the registries, so help text and validation cannot drift from them
# (functional Enums: their members are data, which a type checker cannot list).
HeadName = Enum("HeadName", {name: name for name in HEADS}, type=str)  # type: ignore[misc]
ResizePolicy = Enum("ResizePolicy", {n: n for n in RESIZE_POLICIES}, type=str)  # type: ignore[misc]
MetricName = Enum("MetricName", {m.name: m.name for m in overall_metrics()}, type=str)  # type: ignore[misc]
RuntimeName = Enum("RuntimeName", {name: name for name in RUNTIMES}, type=str)  # type: ignore[misc]
PrecisionName = Enum("PrecisionName", {n: n for n in PRECISIONS}, type=str)  # type: ignore[misc]
DecodeName = Enum("DecodeName", {n: n for n in DECODES}, type=str)  # type: ignore[misc]


def _console(json_out: Path | None) -> Console:
    """People's output: stdout, or stderr when stdout carries the JSON (``--json -``)."""
    return err_console if str(json_out) == "-" else _console_for()


def _writable(path: Path | None, option: str, folder: bool = False) -> None:
    """Check an output path before any work, so a typo costs nothing already computed."""
    if path is None or str(path) == "-":
        return
    target = path if folder else path.parent
    if (folder and path.exists() and not path.is_dir()) or (not folder and path.is_dir()):
        kind = "a file" if folder else "a folder"
        raise CxrError(f"{option} {path}: is {kind}")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CxrError(f"{option} {path}: cannot create {target} ({exc.strerror})") from None
    if not os.access(target, os.W_OK):
        raise CxrError(f"{option} {path}: {target} is not writable")


def _show(document: Any, json_out: Path | None, render: Callable[[Any, Console], None]) -> Console:
    """Render the result for people, and write its JSON as --json asks (see `_report`)."""
    return _report(document, json_out, render)


def _report(
    document: Any,
    json_out: Path | None,
    render: Callable[[Any, Console], None],
    then: Callable[[], None] = lambda: None,
    *,
    console: Console | None = None,
) -> Console:
    """The one meaning of --json: PATH gets the document, ``-`` prints it alone on stdout
    (people's output then goes to stderr). A file is written first, before anything that could
    fail after the work (``then``, e.g. plots, which add to the document; the file is written
    again after it); ``then``'s error is raised once the JSON is out and the result rendered.
    Returns the console for further notes (``console``: people's, when not the default)."""
    console = console or _console(json_out)
    to_file = json_out if json_out is not None and str(json_out) != "-" else None
    if to_file is not None:
        _write_json(document, to_file)
    failure = None
    try:
        then()
    except CxrError as exc:
        failure = exc
    if to_file is not None and failure is None:
        _write_json(document, to_file)
    elif json_out is not None and to_file is None:
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    render(document, console)
    if to_file is not None:
        console.print(f"Wrote {to_file}", markup=False, highlight=False, soft_wrap=True)
    if failure is not None:
        raise failure
    return console


def _write_json(document: Any, path: Path) -> None:
    write_atomic(path, (json.dumps(document, indent=2) + "\n").encode(), "JSON")


def _option(name: str, table: Mapping[str, Setting] = EVALUATE, **checks: Any) -> Any:
    """The option of a setting (of evaluate, or another command's ``table``): default, flags and
    help from its one definition."""
    entry = table[name]
    checks.setdefault("help", entry.help)
    return typer.Option(entry.cli_default, *entry.flags or (entry.flag,), **checks)


_feature = partial(_option, table=FEATURES)


def _with_settings(table: Mapping[str, Setting], first: int = 1) -> Callable[[Any], Any]:
    """A command with an option per setting of ``table`` (default, flags, help and type from its
    one definition) after its first ``first`` parameters. The command takes their values as
    ``**settings`` by setting name, in Python's terms (a choice as its name, a ``--no-`` flag as
    the setting's own value): a new setting needs no line in the command."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
            for p in inspect.signature(command).parameters.values()
            if p.kind is not inspect.Parameter.VAR_KEYWORD
        ]
        options = [
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=_option(name, table),
                annotation=_cli_type(entry),
            )
            for name, entry in table.items()
        ]

        @wraps(command)
        def run(**given: Any) -> Any:
            settings = {name: _python(entry, given.pop(name)) for name, entry in table.items()}
            return command(**given, **settings)

        run.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            own[:first] + options + own[first:]
        )
        return run

    return decorate


# Settings whose value is a name from a registry: their CLI choices.
CHOICES: dict[str, Any] = {
    "heads": HeadName,
    "metric": MetricName,
    "resize": ResizePolicy,
    "runtime": RuntimeName,
    "precision": PrecisionName,
    "decode": DecodeName,
}


def _cli_type(entry: Setting) -> Any:
    choice = CHOICES.get(entry.name)
    if choice is None:
        return entry.cli_type
    return list[choice] if isinstance(entry.cli_default, list) else choice  # type: ignore[valid-type]


def _python(entry: Setting, value: Any) -> Any:
    """A CLI value in the library's terms: a choice's name, the setting a ``--no-`` flag turns
    off."""
    if entry.negated:
        return not value
    if isinstance(value, list):
        return [v.value if isinstance(v, Enum) else v for v in value]
    return value.value if isinstance(value, Enum) else value


FEATURES_DIR = typer.Option(Path("features"), "--features", help="Folder holding the stores.")
JSON_OUT = typer.Option(
    None, "--json", help="Write the result as JSON to this file ('-': stdout, JSON only)."
)
SEED = _option("seed", min=0)
QUIET = typer.Option(False, "--quiet", "-q", help="No progress bars (none either off a terminal).")
SCHEDULER = _option("scheduler")
# How a data set is read, for `cxr manifest` (`cxr.extract.layouts`; the names are checked
# against its registry by the tests, so that --help does not import the readers).
LAYOUT = _feature("layout")
COLUMN = _feature("columns")
PATIENT_FROM_NAME = _feature("patient_from_name")
LABEL_MAP = _feature("label_map")


def _steps(quiet: bool):
    """Progress bars on stderr when a person is watching; silent in pipes, logs and CI."""
    from cxr.progress import RichProgress, Silent

    return Silent() if quiet else RichProgress(err_console)


@app.command()
@_with_settings(FEATURES)
def features(
    data: Path | None = typer.Argument(
        None,
        help="The data set: class folders (covid/, normal/, ...), a public collection as its "
        "distributor ships it (see --layout), or the folder the manifest's paths start from.",
    ),
    out: Path | None = typer.Option(None, "--out", hidden=True),  # the old name of --features
    strict: bool = typer.Option(False, "--strict", help="Exit 1 if any file was rejected."),
    json_out: Path | None = JSON_OUT,
    **settings: Any,
) -> None:
    """Embed every image once per backbone into FEATURES/<backbone>.h5 (incremental, resumable)."""
    from dataclasses import asdict

    from cxr.extract.runner import from_settings  # lazy: the model code imports TensorFlow
    from cxr.extract.tables import render_features
    from cxr.progress import RichProgress

    _writable(json_out, "--json")
    folder = settings["features"] = out or settings["features"]
    if folder.exists() and not folder.is_dir():  # a typo, not a storage fault: nothing starts
        raise CxrError(f"--features {folder}: is a file")
    try:
        summaries = from_settings(data, settings, RichProgress(_console(json_out), bars=True))
    except STOPS as stop:
        raise Interrupted(_kept(folder), signal_of(stop)) from None
    stores = [{**asdict(s), "path": str(s.path)} for s in summaries]
    _show({"stores": stores}, json_out, render_features)
    if not any(s.stored for s in summaries):
        raise RunFailed("no image could be used; see the rejected files above")
    if strict and any(s.rejected for s in summaries):
        raise RunFailed("--strict: some files were rejected (listed above)")


def _kept(folder: Path) -> str:
    """What an interrupted `cxr features` leaves: the batches committed, per store."""
    from cxr.store.schema import committed_parts

    counts = committed_parts(folder)
    kept = ", ".join(f"{n} batch(es) of {b}" for b, n in counts.items() if n) or "no batch"
    return f"interrupted: {kept} kept in {folder}; run the same command to resume"


@app.command()
def manifest(
    data: Path = typer.Argument(
        ...,
        help="A data set (class folders, a public collection: see --layout), a flat export of "
        "DICOM files, or a manifest CSV to complete.",
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="The manifest to write ('-': stdout). Default: DATA/manifest.csv, where "
        "`cxr features DATA` looks.",
    ),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
    features_dir: Path = typer.Option(
        Path("features"),
        "--features",
        help="The study's features folder: its key file (.id-key) pseudonymises the ids.",
    ),
    key: str | None = typer.Option(
        None,
        "--key",
        help="Secret for the keyed hash of patient ids and institutions, instead of the study's "
        "key file. Prefer $CXR_ID_KEY: a key on the command line stays in the shell history.",
        show_default=False,
    ),
    keep_ids: bool = typer.Option(
        False, "--keep-ids", help="Write the real patient ids and institutions (not shareable)."
    ),
    layout: str = LAYOUT,
    column: list[str] = COLUMN,
    patient_from_name: str = PATIENT_FROM_NAME,
    label_map: list[str] = LABEL_MAP,
    json_out: Path | None = JSON_OUT,
) -> None:
    """Write a manifest of a data set as its layout reads it, with its DICOM headers: patient,
    view, modality, manufacturer, ... ."""
    from dataclasses import asdict

    from cxr.extract.headers import StudyKey
    from cxr.extract.layouts import ReadOptions
    from cxr.extract.manifest import build_manifest, default_out
    from cxr.extract.tables import render_manifest

    target = out if out is not None else default_out(data)
    _writable(target, "--out")
    _writable(json_out, "--json")
    if str(target) == "-" and str(json_out) == "-":
        raise CxrError("--out - and --json - would both write to stdout; choose one")
    if str(target) != "-" and target.exists() and not force:
        raise CxrError(f"{target}: exists; pass --force to replace it, or choose another --out")
    study = StudyKey(features_dir, key)
    read = ReadOptions.parse(column, patient_from_name, label_map)
    summary = build_manifest(data, target, key=study, keep_ids=keep_ids, layout=layout, read=read)
    document = {**asdict(summary), "out": str(summary.out)}
    document["key"] = "" if keep_ids else study.source
    if str(target) == "-":  # stdout holds the CSV: people's output goes to stderr
        _report(document, None, render_manifest, console=err_console)
    else:
        _show(document, json_out, render_manifest)


@app.command()
def backbones(json_out: Path | None = JSON_OUT) -> None:
    """List the registered backbones (input size, embedding dimension, weight file name)."""
    from cxr.extract.registry import REGISTRY
    from cxr.extract.tables import render_backbones

    document = {
        "backbones": [
            {
                "name": spec.name,
                "constructor": spec.constructor_label,
                "input_size": spec.input_size,
                "dim": spec.dim,
                "preprocessing": spec.preprocessing,
                "weights_file": spec.weights_file,
                "weights_url": spec.weights_url,
            }
            for spec in REGISTRY.values()
        ]
    }
    _show(document, json_out, render_backbones)


@app.command()
def info(features_dir: Path = FEATURES_DIR, json_out: Path | None = JSON_OUT) -> None:
    """List the feature stores: rows, dimension, weights, classes, rejected files."""
    from cxr.store import StoreError, describe, find_stores
    from cxr.store.schema import orphan_parts
    from cxr.store.tables import render_stores

    stores, damaged = [], []
    for path in find_stores(features_dir):
        try:
            stores.append(describe(path))
        except StoreError as exc:  # list the healthy stores all the same
            damaged.append({"path": str(path), "error": str(exc)})
    document = {"stores": stores, "damaged": damaged, "unpublished": orphan_parts(features_dir)}
    _show(document, json_out, partial(render_stores, features_dir=features_dir))
    if damaged:
        raise CxrError(f"{features_dir}: {len(damaged)} damaged store(s), listed above")


@app.command()
def reproduce(
    data: Path = typer.Argument(
        Path("../shared/data/cxr"), help="The chest X-ray set (with manifest.csv)."
    ),
    weights: list[str] = typer.Option(
        [], "--weights", help="As for `cxr features`: NAME=PATH for each offline weight file."
    ),
    features_dir: Path = typer.Option(
        Path("features"), "--features", help="Folder for the stores."
    ),
    json_path: Path = typer.Option(
        Path("docs/results.json"), "--json", help="The study's JSON ('-': stdout)."
    ),
    doc_path: Path = typer.Option(Path("docs/results.md"), "--doc", help="The generated document."),
    jobs: int = typer.Option(-1, "--jobs", help="Parallel folds (joblib); -1: all cores."),
    seed: int = typer.Option(0, "--seed", min=0),
    quiet: bool = QUIET,
) -> None:
    """Reproduce the paper (protocol A) and the honest protocol B, end to end from the images."""
    from cxr.classify.config import check_jobs
    from cxr.reproduce.run import reproduce as run_reproduce

    check_jobs(jobs)  # before the stores are built, not after

    _writable(json_path, "--json")
    _writable(doc_path, "--doc")
    console = _console(json_path)
    report = run_reproduce(
        data=data,
        weights=weights,
        features_dir=features_dir,
        doc_path=doc_path,
        jobs=jobs,
        seed=seed,
        console=console,
        progress=_steps(quiet),
    )
    _show(report, json_path, lambda document, console: None)  # the document is the rendering


# Stage 2 (evaluate, train, predict): classify/ is imported inside each command, so
# `cxr --help` and stage 1 never pay for scikit-learn.
CLASSES = _option("classes")
MERGE = _option("merge")
BINARY = _option("binary")
WHERE = _option("where")
EXCLUDE = _option("exclude")
HEAD_PARAMS = _option("params")
CONFIG = typer.Option(
    None, "--config", help="TOML file of hyper-parameters: one table per head, named like the head."
)
TARGET = _option("target")


TRACKING_URI = typer.Option(
    None,
    "--tracking-uri",
    help="MLflow tracking URI (a server, http://host:5000, or sqlite:///path.db); default "
    "$MLFLOW_TRACKING_URI, [tracking] uri in --config, else sqlite beside the features folder.",
)


@app.command()
@_with_settings(EVALUATE)
def evaluate(
    features_dir: Path = FEATURES_DIR,
    config: Path | None = CONFIG,
    json_out: Path | None = JSON_OUT,
    plots: Path | None = typer.Option(
        None,
        "--plots",
        help="Write PNGs here: confusion matrix, ROC and reliability per result, a forest plot "
        "per task.",
    ),
    quiet: bool = QUIET,
    track: bool = typer.Option(
        False,
        "--track",
        help="Log the run to MLflow (pip install 'cxr-transfer[tracking]'): by default a SQLite "
        "file beside the features folder; also [tracking] enabled = true in --config.",
    ),
    tracking_uri: str | None = TRACKING_URI,
    **settings: Any,
) -> None:
    """Validate scikit-learn heads on cached embeddings (default: every store, every head)."""
    from cxr.classify.config import EvaluateConfig
    from cxr.classify.evaluate import evaluate as run_evaluate
    from cxr.classify.heads import parse_params
    from cxr.classify.tables import render

    _writable(json_out, "--json")
    _writable(plots, "--plots", folder=True)
    tracked = _tracking(track, tracking_uri, features_dir, config)
    if settings["predictions"] and json_out is None:
        raise CxrError("--predictions goes into the JSON report: add --json PATH (or --json -)")
    settings["params"] = parse_params(settings["params"], config)
    chosen = EvaluateConfig.of(settings)
    evaluated = run_evaluate(features_dir, chosen, progress=_steps(quiet))
    console = _report(evaluated.report, json_out, render, lambda: _plots(evaluated, plots))
    if chosen.scheduler is not None:
        console.print(f"Fits and bootstraps ran on Dask ({chosen.scheduler}).", highlight=False)
    if plots is not None:
        written = evaluated.report.get("plots", []) + [
            p for r in evaluated.report["results"] for p in r.get("plots", [])
        ]
        console.print(
            f"Wrote {len(written)} plot(s) to {plots}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    if tracked is not None:
        _track(evaluated, tracked, plots, console)


def _tracking(track: bool, uri: str | None, features_dir: Path, config: Path | None):
    """The tracking store of an evaluation, or None; checked before any work (MLflow too)."""
    from cxr.tracking.target import enabled, require_mlflow, resolve

    if not enabled(track, uri, config):
        return None
    target = resolve(uri, features_dir, config)
    require_mlflow()
    return target


def _track(evaluated, target, plots: Path | None, console: Console) -> None:
    """Log the evaluation (its files are written already): a failure is one warning."""
    from cxr.classify.tables import best_words, result_settings
    from cxr.tracking.log import log_run

    report = evaluated.report
    settings = "; ".join(
        dict.fromkeys(f"{r['head']} {result_settings(r)}" for r in report["results"])
    )
    run_id, problem = log_run(
        report, evaluated.outcomes, target, best=best_words(report), settings=settings, plots=plots
    )
    if problem is not None:
        err_console.print(Text.assemble(("warning: ", "yellow"), problem), soft_wrap=True)
    else:
        console.print(f"Tracked as run {run_id} in {target.uri}", markup=False, highlight=False)


@app.command()
def runs(
    compare: list[str] = typer.Argument(
        None, help="Two run ids (or unique prefixes) to compare; none: list the runs."
    ),
    last: bool = typer.Option(False, "--compare", help="Compare the two latest runs."),
    limit: int = typer.Option(20, "--limit", min=1, help="Runs listed, newest first."),
    features_dir: Path = FEATURES_DIR,
    config: Path | None = CONFIG,
    tracking_uri: str | None = TRACKING_URI,
    json_out: Path | None = JSON_OUT,
) -> None:
    """List tracked runs (cxr evaluate --track), or compare two: the parameters that differ and
    the paired difference where both used the same images."""
    from cxr.tracking.runs import compare_runs, list_runs
    from cxr.tracking.tables import render_comparison, render_runs
    from cxr.tracking.target import resolve

    _writable(json_out, "--json")
    target = resolve(tracking_uri, features_dir, config)
    ids = list(compare or [])
    if ids and len(ids) != 2:
        raise CxrError(f"cxr runs: give two run ids to compare, not {len(ids)}")
    if ids or last:
        found = compare_runs(target, *(ids or (None, None)))
        _show(found, json_out, render_comparison)
    else:
        listed = list_runs(target, limit)
        _show(listed, json_out, lambda doc, console: render_runs(doc, target.uri, console))


def _listed(text: str) -> list[str]:
    """``a,b,c`` as names (the CLI's list syntax)."""
    return [part.strip() for part in text.split(",") if part.strip()]


def _plots(evaluated, folder: Path | None) -> None:
    if folder is None:
        return
    from cxr.classify.plots import write_plots
    from cxr.extract.images import thumbnail  # stage 1's decoder, for the galleries

    try:
        write_plots(evaluated, folder, thumbnail)
    except (OSError, ValueError, RuntimeError) as exc:
        raise CxrError(f"--plots {folder}: cannot write the plots ({exc})") from None


@app.command()
def train(
    features_dir: Path = FEATURES_DIR,
    backbone: str | None = typer.Option(
        None, "-b", "--backbone", help="Store to use (needed if several)."
    ),
    head: HeadName = typer.Option("mlp", "--head", help="The head to fit."),
    classes: str | None = CLASSES,
    merge: list[str] = MERGE,
    binary: str | None = BINARY,
    where: list[str] = WHERE,
    exclude: Path | None = EXCLUDE,
    target: str = TARGET,
    head_params: list[str] = HEAD_PARAMS,
    config: Path | None = CONFIG,
    seed: int = SEED,
    out: Path | None = typer.Option(
        None, "--out", help="Model file (skops). Default: models/<backbone>-<head>.skops."
    ),
    force: bool = typer.Option(
        False, "--force", help="Replace --out even if it holds a model of another task."
    ),
    json_out: Path | None = JSON_OUT,
) -> None:
    """Fit one head on all selected rows; save it with its backbone, weights and task (skops)."""
    from cxr.classify.heads import parse_params
    from cxr.classify.model import train as run_train
    from cxr.classify.tables import render_training
    from cxr.classify.tasks import TaskSpec

    _writable(json_out, "--json")
    _writable(out, "--out")
    summary = run_train(
        features_dir,
        backbone,
        head.value,
        TaskSpec.from_options(classes, merge, binary, where, exclude, target),
        parse_params(head_params, config),
        seed=seed,
        out=out,
        force=force,
    )
    _show(summary, json_out, render_training)


@app.command()
def predict(
    inputs: list[Path] = typer.Argument(..., help="Image files and/or folders of images."),
    model: Path = typer.Option(..., "--model", help="A model file from `cxr train`."),
    weights: list[str] = typer.Option(
        [],
        "--weights",
        help="As for `cxr features`. Default: the weights the model was trained with (ImageNet, "
        "or its weight file by name from $CXR_WEIGHTS_DIR or ~/.keras/models).",
    ),
    trust_pickle: bool = typer.Option(
        False,
        "--trust-pickle",
        help="Load a joblib pickle of cxr < 0.2 (it can run code: only a file you made).",
    ),
    runtime: RuntimeName | None = typer.Option(
        None,
        "--runtime",
        help="auto (the default: the fastest installed that matches TensorFlow), tensorflow or "
        "openvino.",
    ),
    json_out: Path | None = JSON_OUT,
    csv_out: Path | None = typer.Option(
        None,
        "--csv",
        help="Also write a CSV here: one row per image, its predicted class and each class's "
        "probability (rejected images with their reason).",
    ),
) -> None:
    """Class probabilities for new images, embedded with the model's backbone and weights."""
    from cxr.classify.model import predict as run_predict
    from cxr.classify.tables import render_predictions
    from cxr.extract.runner import embed_images  # stage 1 is handed to stage 2 here, at the edge

    _writable(json_out, "--json")
    _writable(csv_out, "--csv")
    result = run_predict(
        model,
        inputs,
        embed_images,
        weights,
        trust_pickle=trust_pickle,
        runtime=runtime.value if runtime else None,
    )
    console = _report(
        result, json_out, render_predictions, lambda: _predictions_csv(result, csv_out)
    )
    if csv_out is not None:
        console.print(f"Wrote {csv_out}", markup=False, highlight=False, soft_wrap=True)


def _predictions_csv(result: Any, path: Path | None) -> None:
    """One row per image: its path, the predicted class and each class's probability; a
    rejected image has its reason instead (cells a spreadsheet would run are escaped)."""
    if path is None:
        return
    import csv
    import io

    from cxr.files import csv_cell, escape_cell

    classes = result["classes"]
    rows = [["image", "predicted", *(f"p_{c}" for c in classes), "rejected"]]
    for p in result["predictions"]:
        chances = [f"{p['probabilities'][c]:.6f}" for c in classes]
        rows.append([p["path"], p["predicted"], *chances, ""])
    rows += [[r["path"], "", *("" for _ in classes), r["reason"]] for r in result["rejected"]]
    text = io.StringIO()
    cells = [[escape_cell(r[0]), *map(csv_cell, r[1:])] for r in rows]  # paths as they are
    csv.writer(text, lineterminator="\n").writerows(cells)
    write_atomic(path, text.getvalue().encode(), "the CSV")


@app.command()
def explain(
    images: list[Path] = typer.Argument(
        None, help="Image files and/or folders to explain (default: --sample films of the store)."
    ),
    model: Path | None = typer.Option(
        None, "--model", help="A model file from `cxr train` (or give -b and --head)."
    ),
    features_dir: Path = FEATURES_DIR,
    backbone: str | None = typer.Option(
        None, "-b", "--backbone", help="Without --model: the store to fit --head on."
    ),
    head: HeadName = typer.Option("logreg", "--head", help="Without --model: the head to fit."),
    classes: str | None = CLASSES,
    merge: list[str] = MERGE,
    binary: str | None = BINARY,
    where: list[str] = WHERE,
    target: str = TARGET,
    head_params: list[str] = HEAD_PARAMS,
    config: Path | None = CONFIG,
    sample: int = typer.Option(
        0, "--sample", min=0, max=1000, help="Explain N films per class, drawn from the store."
    ),
    mapped: str | None = typer.Option(
        None, "--class", help="Map the evidence for this class (default: each film's predicted)."
    ),
    box: float = typer.Option(
        0.6, "--box", help="The central box's share of each side, as --region-box."
    ),
    weights: list[str] = typer.Option(
        [], "--weights", help="As for `cxr predict` (default: the weights the model had)."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Write each film's map over it, and contact sheets, here."
    ),
    seed: int = SEED,
    json_out: Path | None = JSON_OUT,
) -> None:
    """Where on the film a head found its evidence: class-activation maps, and the share of the
    evidence outside the central box, per film, class and source."""
    from cxr.classify.explain import explain as run_explain
    from cxr.classify.heads import parse_params
    from cxr.classify.model import fitted_on, load_model
    from cxr.classify.tables import render_explanation
    from cxr.classify.tasks import TaskSpec
    from cxr.extract.explain import feature_maps  # stage 1, handed to stage 2 here

    _writable(json_out, "--json")
    _writable(out, "--out", folder=True)
    if model is not None:
        bundle, model_path = load_model(model), model
    else:
        task = TaskSpec.from_options(classes, merge, binary, where, None, target)
        params = parse_params(head_params, config).get(head.value, {})
        bundle, model_path = fitted_on(features_dir, backbone, head.value, task, params, seed)
    explained = run_explain(
        bundle,
        feature_maps,
        model_path=model_path,
        features_dir=features_dir,
        images=images or [],
        sample=sample,
        weights=weights,
        box=box,
        target=mapped,
        seed=seed,
    )

    def figures() -> None:
        if out is not None:
            from cxr.classify.plots import explanation_plots

            explanation_plots(explained, out)

    console = _report(explained.report, json_out, render_explanation, figures)
    if out is not None:
        console.print(
            f"Wrote {len(explained.report['plots'])} figure(s) to {out}",
            markup=False,
            highlight=False,
        )


@app.command()
def audit(
    features_dir: Path = FEATURES_DIR,
    backbone: str | None = typer.Option(
        None, "-b", "--backbone", help="Store to audit (needed if several)."
    ),
    data: Path | None = typer.Option(
        None,
        "--data",
        help="Image folder the stored paths are relative to. Default: the store's data_root.",
    ),
    hash_threshold: int = typer.Option(
        HASH_THRESHOLD,
        "--hash-threshold",
        help="Near-duplicate if the 255-bit pHash differs in <= N bits.",
    ),
    cosine_threshold: float = typer.Option(
        COSINE_THRESHOLD,
        "--cosine-threshold",
        help="Near-duplicate if the embeddings' cosine is >= X.",
    ),
    probe: list[str] = typer.Option(
        [],
        "--probe",
        help="Column to predict from the embeddings (repeatable). Default: source, dataset.",
    ),
    json_out: Path | None = JSON_OUT,
    exclude_out: Path | None = typer.Option(
        None, "--exclude-out", help="Write the exclusion/merge file for `cxr evaluate --exclude`."
    ),
    plots: Path | None = typer.Option(
        None,
        "--plots",
        help="Draw the store's embedding map and each duplicate group's films side by side here.",
    ),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the probe's folds."),
    scheduler: str | None = SCHEDULER,
    quiet: bool = QUIET,
) -> None:
    """Find exact and near-duplicate images, label/patient conflicts and source confounds."""
    from cxr.audit.run import audit as run_audit
    from cxr.audit.tables import render
    from cxr.store.exclusions import Exclusions

    _writable(json_out, "--json")
    _writable(exclude_out, "--exclude-out")
    _writable(plots, "--plots", folder=True)
    result = run_audit(
        features_dir,
        backbone,
        data=data,
        hash_threshold=hash_threshold,
        cosine_threshold=cosine_threshold,
        probes=probe,
        seed=seed,
        progress=_steps(quiet),
        scheduler=scheduler,
    )

    def figures() -> None:
        if plots is None:
            return
        from cxr.audit.figures import cluster_plots, map_plot
        from cxr.reporting.figures import written

        try:
            clusters = cluster_plots(result, Path(result["data_root"]), plots)
            result["plots"] = map_plot(result, plots) + clusters
            result["figures"] = written(plots, result["plots"])
        except (OSError, ValueError, RuntimeError) as exc:
            raise CxrError(f"--plots {plots}: cannot write the plots ({exc})") from None

    console = _report(result, json_out, render, figures)
    if scheduler is not None:
        console.print(f"Hashes and probes ran on Dask ({scheduler}).", highlight=False)
    if plots is not None:
        console.print(
            f"Wrote {len(result.get('plots', []))} figure(s) to {plots}: the embedding map "
            "and each duplicate cluster's films",
            markup=False,
            highlight=False,
        )
    if exclude_out is not None:
        Exclusions.from_json(result["exclusions"]).write(exclude_out)
        console.print(f"Wrote {exclude_out} (for cxr evaluate --exclude)", soft_wrap=True)


@app.command()
def report(
    documents: list[Path] = typer.Argument(
        ..., help="JSON documents of cxr evaluate and cxr audit (--json), in page order."
    ),
    out: Path = typer.Option(
        Path("report.html"), "--out", "-o", help="The HTML file to write (self-contained)."
    ),
) -> None:
    """Write one self-contained HTML report (tables, embedded figures, checklist) from JSON."""
    from cxr.reporting import write_report

    _writable(out, "--out")
    written = write_report(documents, out)
    console = _console_for()
    say = partial(console.print, markup=False, highlight=False, soft_wrap=True)
    say(f"Wrote {written.path} ({written.size / 1024:,.0f} KB, self-contained)")
    say("Sections: " + "; ".join(written.sections))
    tally = ", ".join(f"{n} {status}" for status, n in written.checklist.items())
    say(f"Checklist (TRIPOD+AI and CLAIM items): {tally}")
