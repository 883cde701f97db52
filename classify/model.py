"""`cxr train` and `cxr predict`: one fitted head saved with everything needed to trust it later.

A model file is a skops bundle (a dict) holding the fitted Pipeline plus the store's fingerprint
(backbone, input size, resize, weights sha256 and seed), the classes, the task, digests of the
store's rows and of the training rows, and library versions. ``predict`` is handed an embedder
(stage 1's ``cxr.extract.runner.embed_images``, given by the CLI: stage 2 never imports stage 1),
asks it for the recorded backbone and weights, and refuses to go on if the fingerprints differ.

A model file may come from anyone: ``cxr.classify.modelfile`` bounds the archive, admits only the
types of cxr's own heads anywhere in its schema (not skops' wider defaults), and checks what skops
built (bundle fields, tree nodes, neighbour indices, support vectors) before anything predicts, so
a hostile file is one line, never code run, a crash or a hang. Model files of cxr < 0.2 are joblib
pickles, which run whatever they hold when loaded: they are refused unless ``trust_pickle`` says
the file is your own (their contents are then checked the same way).
"""

from __future__ import annotations

import os
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypedDict, cast

import numpy as np

from cxr.classify import modelfile
from cxr.classify.fitting import INNER_FOLDS
from cxr.classify.folds import derive_seed
from cxr.classify.heads import Params, build_head, effective_params
from cxr.classify.provenance import DISCLAIMER, jsonable, library_versions
from cxr.classify.tasks import TaskSpec, rows_digest, select
from cxr.errors import CxrError
from cxr.files import take_lock, write_atomic
from cxr.store import FeatureSet, find_stores, load
from cxr.store.schema import Reject, fingerprint, store_path

MODEL_FORMAT = "cxr-head/2"
PICKLE_FORMAT = "cxr-head/1"  # cxr < 0.2: joblib pickles
SUFFIX = ".skops"
BUNDLE_KEYS = ("format", "pipeline", "backbone", "fingerprint", "weights", "classes", "n_features")


class TrainSummary(TypedDict):
    """What `cxr train` reports; the model file holds the same keys beside the pipeline."""

    model: str
    backbone: str
    head: str
    params: dict
    seed: int
    task: dict  # TaskSpec.to_dict()
    classes: list[str]
    class_counts: dict[str, int]
    n: int
    store: str
    store_rows_sha256: str
    train_rows_sha256: str
    fingerprint: dict  # store.schema.fingerprint: what new images must be embedded with
    weights: str
    weights_file: str
    weights_path: str  # where the weight file was when the store was built
    versions: dict[str, str]
    warnings: list[str]


class Prediction(TypedDict):
    path: str
    predicted: str
    probabilities: dict[str, float]


class PredictReport(TypedDict):
    """What `cxr predict` reports."""

    model: str
    backbone: str
    head: str
    classes: list[str]
    predictions: list[Prediction]
    rejected: list[dict[str, str]]  # path, reason
    warnings: list[str]
    disclaimer: str


class Embedded(Protocol):
    """What an embedder returns: vectors of the files it could use, the rest with a reason
    (and the store attributes these vectors would have, fingerprint included)."""

    @property
    def X(self) -> np.ndarray: ...

    @property
    def paths(self) -> Sequence[str]: ...

    @property
    def rejected(self) -> Sequence[Reject]: ...

    @property
    def attrs(self) -> Mapping: ...


class ImageEmbedder(Protocol):
    """Embeds image files and folders of images with one backbone (stage 1 provides one)."""

    def __call__(
        self,
        inputs: Sequence[Path],
        *,
        backbone: str,
        weights: Sequence[str],
        resize: str,
        seed: int,
        runtime: str,
        precision: str,
        region: str,
        region_box: float,
        decode: str,
    ) -> Embedded: ...


def _choose_store(features_dir: Path, backbone: str | None) -> Path:
    if backbone:
        path = store_path(features_dir, backbone)
        if not path.is_file():
            raise CxrError(
                f"{path}: no feature store for backbone {backbone!r} (run `cxr features`)"
            )
        return path
    paths = find_stores(features_dir)
    if len(paths) != 1:
        found = ", ".join(p.stem for p in paths) or "none"
        raise CxrError(f"{features_dir}: choose one store with `backbone` (found: {found})")
    return paths[0]


def train(
    features_dir: Path = Path("features"),
    backbone: str | None = None,
    head: str = "mlp",
    task: TaskSpec | None = None,
    params: Mapping[str, Params] | None = None,
    *,
    seed: int = 0,
    out: Path | None = None,
    force: bool = False,
) -> TrainSummary:
    """Fit one head on all selected rows of one store and save the bundle; returns a summary."""
    task = task or TaskSpec()
    chosen = (params or {}).get(head, {})
    fs = load(_choose_store(features_dir, backbone))
    out = Path(out or Path("models") / f"{fs.name}-{head}{SUFFIX}")
    if out.suffix != SUFFIX:
        raise CxrError(f"{out}: a model file is a skops file and its name must end in {SUFFIX}")
    with _writing(out):
        if out.exists() and not force:
            _check_replaceable(out, fs.backbone, head, task)
        bundle, caught = fitted(fs, head, task, chosen, seed)
        shown = {k: v for k, v in bundle.items() if k in TrainSummary.__annotations__}
        summary = cast(TrainSummary, jsonable({**shown, "model": str(out), "warnings": caught}))
        bundle["model"] = str(out)
        import skops.io as sio

        write_atomic(out, sio.dumps(bundle), "the model file")
    return summary


def fitted_on(
    features_dir: Path, backbone: str | None, head: str, task: TaskSpec, chosen: Params, seed: int
) -> tuple[dict, Path]:
    """A bundle fitted on the chosen store and not written (what `cxr explain` explains when it
    is given no model file), and the store's path."""
    fs = load(_choose_store(features_dir, backbone))
    return fitted(fs, head, task, chosen, seed)[0], fs.path


def fitted(
    fs: FeatureSet, head: str, task: TaskSpec, chosen: Params, seed: int
) -> tuple[dict, list[str]]:
    """A model bundle (the fitted pipeline and what it must be trusted with), and the warnings
    fitting gave: what `cxr train` writes, and what `cxr explain` uses without writing it."""
    data = select(fs, task)
    pipeline, caught = _fit(fs.path, head, chosen, seed, data)
    bundle = {
        "format": MODEL_FORMAT,
        "pipeline": pipeline,
        "n_features": int(data.X.shape[1]),
        "model": "",
        "backbone": fs.backbone,
        "head": head,
        "params": jsonable(effective_params(head, chosen)),
        "seed": seed,
        "task": jsonable(task.to_dict()),
        "classes": list(data.classes),
        "class_counts": data.class_counts,
        "n": len(data.y),
        "store": str(fs.path),
        "store_rows_sha256": rows_digest(fs.ids, fs.labels),
        "train_rows_sha256": data.rows_sha256(),
        "fingerprint": jsonable(fingerprint(fs.attrs)),
        "weights": str(fs.attrs.get("weights", "")),
        "weights_file": str(fs.attrs.get("weights_file", "")),
        "weights_path": str(fs.attrs.get("weights_path", "")),
        "versions": library_versions(),
    }
    return bundle, caught


def _fit(store: Path, head: str, chosen: Params, seed: int, data) -> tuple[object, list[str]]:
    """The head fitted on the task's rows, and the warnings fitting gave; a class too small to
    fit, or a fit that would not load as a model, is one line naming the store."""
    for name, count in data.class_counts.items():
        if count < INNER_FOLDS:  # as `cxr evaluate` checks its folds before fitting
            raise CxrError(
                f"{store}: class {name!r} has {count} row(s); the {head} head needs at least "
                f"{INNER_FOLDS} per class (the SVM's calibration and the MLP's early stopping "
                "split them); drop it with `classes` or merge it with `merge`"
            )
    pipeline = build_head(head, chosen, random_state=derive_seed(seed))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            pipeline.fit(data.X, data.y)
        except ValueError as exc:  # scikit-learn's own limits on what it can fit
            reason = (str(exc).strip().splitlines() or [""])[0]
            raise CxrError(f"{store}: cannot fit the {head} head here ({reason})") from None
    try:  # what `cxr predict` would refuse is never written
        modelfile.check_pipeline(pipeline, int(data.X.shape[1]), len(data.classes))
    except modelfile.ModelProblem as exc:
        raise CxrError(f"{store}: the fitted {head} head cannot predict ({exc})") from None
    return pipeline, sorted({f"{w.category.__name__}: {w.message}" for w in caught})


@contextmanager
def _writing(out: Path) -> Iterator[None]:
    """One `cxr train` per --out: an flock on ``.<name>.lock`` beside it, held from the check of
    the old file to the rename of the new one (released by the kernel if the process dies)."""
    lock = out.with_name(f".{out.name}.lock")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd = take_lock(
            lock,
            busy=f"{out}: another `cxr train` is writing this model file",
            fix="wait for it to finish or choose another `out`",
        )
    except OSError as exc:
        raise CxrError(f"{out}: cannot create its lock file ({exc.strerror})") from None
    try:
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _check_replaceable(out: Path, backbone: str, head: str, task: TaskSpec) -> None:
    """Retraining the same model may replace its file; a model of another task may not."""
    try:
        old = load_model(out)
    except CxrError:
        raise CxrError(
            f"{out}: exists and is not a cxr model; choose another `out` or pass `force`"
        ) from None
    before = (old["backbone"], old.get("head"), old.get("task"))
    if before != (backbone, head, jsonable(task.to_dict())):
        raise CxrError(
            f"{out}: holds a {old['backbone']} + {old.get('head')} model for another task "
            f"({', '.join(old.get('classes', []))}); choose another `out` or pass `force`"
        )


def load_model(path: Path, *, trust_pickle: bool = False) -> dict:
    """Load and check a model bundle; CxrError naming the file if it is not one of ours, if
    loading it could run code (untrusted types, or a pickle without ``trust_pickle``), or if
    what it holds could not predict safely (``cxr.classify.modelfile``)."""
    path = Path(path)
    if not path.is_file():
        raise CxrError(f"{path}: model file not found (run `cxr train` first)")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if zipfile.is_zipfile(path):
        bundle = _load_skops(path)
    elif head.startswith(b"PK") or path.suffix == SUFFIX:
        raise CxrError(f"{path}: a damaged skops model file (not a whole zip archive); retrain")
    elif not head.startswith(b"\x80") and not path.suffix.startswith((".joblib", ".pkl")):
        raise CxrError(f"{path}: not a cxr model file (neither skops nor a pickle)")
    elif trust_pickle:
        import joblib

        try:
            bundle = joblib.load(path)
        except Exception as exc:  # a pickle can fail in many ways; all mean "not a model file"
            raise CxrError(f"{path}: not a readable pickle ({type(exc).__name__})") from None
    else:
        raise CxrError(
            f"{path}: not a skops model file; if it is a joblib pickle from cxr < 0.2, loading "
            "it could run any code it holds: retrain with `cxr train`, or pass `trust_pickle` "
            "for a file you made yourself"
        )
    formats = (MODEL_FORMAT, PICKLE_FORMAT) if trust_pickle else (MODEL_FORMAT,)
    if not isinstance(bundle, dict) or bundle.get("format") not in formats:
        raise CxrError(f"{path}: not a cxr model file (expected format {MODEL_FORMAT})")
    missing = [k for k in BUNDLE_KEYS if k not in bundle]
    if missing:
        raise CxrError(f"{path}: model file lacks {', '.join(missing)}")
    try:
        modelfile.check_bundle(bundle)
        modelfile.check_pipeline(
            bundle["pipeline"], int(bundle["n_features"]), len(bundle["classes"])
        )
    except modelfile.ModelProblem as exc:
        raise CxrError(f"{path}: refused: {exc}; retrain with `cxr train`") from None
    return bundle


def _load_skops(path: Path) -> object:
    try:
        return modelfile.read_skops(path)
    except modelfile.UntrustedTypes as exc:
        raise CxrError(
            f"{path}: refused: it declares types cxr does not trust ({exc}); "
            "nothing in it was loaded or run"
        ) from None
    except modelfile.ModelProblem as exc:
        raise CxrError(f"{path}: refused: {exc}; nothing in it was loaded") from None
    except Exception as exc:  # skops on a damaged archive: any of its many exception types
        reason = (str(exc).strip().splitlines() or [""])[0][:200]
        raise CxrError(f"{path}: cannot load the model ({type(exc).__name__}: {reason})") from None


def embed_as_trained(
    model_path: Path,
    bundle: Mapping[str, Any],
    inputs: Sequence[Path],
    embed: Callable[..., Any],
    weights: Sequence[str] = (),
    *,
    runtime: str | None = None,
    **options: Any,
) -> Any:
    """``embed(inputs, ...)`` with the backbone, weights, resize, runtime, region and decode the
    model was trained on; CxrError unless the embeddings' fingerprint is the model's. ``weights``
    defaults to the recorded weights (a weight file where it was, else by name in the offline
    folders); ``runtime`` to auto (the runtime is no part of a fingerprint: f32 runtimes agree
    within the probe's tolerance), a precision never changes. ``options`` go to ``embed`` as
    they are."""
    expected = bundle["fingerprint"]
    recorded = str(bundle["weights"])
    if recorded == "file":  # where it was at training, else by name in the offline folders
        where = Path(str(bundle.get("weights_path") or ""))
        found = where if where.name and where.is_file() else bundle.get("weights_file")
        recorded = f"{bundle['backbone']}={found}"
    try:
        embedded = embed(
            inputs,
            backbone=bundle["backbone"],
            weights=list(weights) or [recorded],
            resize=str(expected["resize"]),
            seed=max(int(expected.get("weights_seed") or 0), 0),  # -1 unless random
            runtime=runtime or "auto",
            precision=str(expected.get("precision") or "f32"),
            region=str(expected.get("region") or "full"),
            region_box=float(expected.get("region_box") or 0.0),
            decode=str(expected.get("decode") or "exact"),
            **options,
        )
    except CxrError as exc:
        if weights or not str(exc).startswith("`weights`"):
            raise
        raise CxrError(
            f"{model_path}: trained with the weight file {bundle.get('weights_file')} (sha256 "
            f"{expected['weights_sha256'][:12]}), which is neither where it was at training "
            f"nor in $CXR_WEIGHTS_DIR or ~/.keras/models; copy it there or pass `weights` "
            f"{bundle['backbone']}=PATH"
        ) from None
    actual = jsonable(fingerprint(embedded.attrs))
    expected = jsonable(fingerprint(expected))  # models of cxr < 0.3 lack precision
    if actual != expected:
        differ = ", ".join(k for k in expected if expected[k] != actual.get(k))
        raise CxrError(
            f"{model_path}: model was trained on {expected['backbone']} features with weights "
            f"sha256 {expected['weights_sha256']}, but these images were embedded with "
            f"{actual['backbone']} weights sha256 {actual['weights_sha256']} (differs in: {differ})"
        )
    return embedded


def predict(
    model_path: Path,
    inputs: Sequence[Path],
    embed: ImageEmbedder,
    weights: Sequence[str] = (),
    *,
    trust_pickle: bool = False,
    runtime: str | None = None,
) -> PredictReport:
    """Class probabilities for new images, embedded by ``embed`` with the model's backbone.

    ``weights`` uses the `cxr features --weights` syntax and defaults to the recorded weights name;
    the embedding's fingerprint must equal the model's, else CxrError names both weight hashes.
    ``runtime`` defaults to auto (f32 runtimes agree within the probe's tolerance), a precision
    never changes.
    """
    bundle = load_model(model_path, trust_pickle=trust_pickle)
    embedded = embed_as_trained(model_path, bundle, inputs, embed, weights, runtime=runtime)
    rejected = [{"path": r.path, "reason": r.reason} for r in embedded.rejected]
    if len(embedded.paths) == 0:
        first = rejected[0]
        raise CxrError(
            f"none of the {len(rejected)} image(s) could be read: {first['path']}: "
            f"{first['reason']}"
        )
    X = np.asarray(embedded.X, dtype=np.float32)
    if X.shape[1] != bundle["n_features"]:
        raise CxrError(
            f"{model_path}: embeddings have {X.shape[1]} features, the model expects "
            f"{bundle['n_features']}"
        )
    if not np.isfinite(X).all():
        raise CxrError(f"{model_path}: the new images gave NaN or infinite embeddings")
    pipeline = bundle["pipeline"]
    proba = np.zeros((len(X), len(bundle["classes"])))
    proba[:, pipeline.classes_] = pipeline.predict_proba(X)
    classes = bundle["classes"]
    notes = []
    trained_with = bundle.get("versions", {}).get("sklearn")
    running = library_versions()["sklearn"]
    if trained_with != running:
        notes.append(
            f"{model_path}: trained with scikit-learn {trained_with}, running {running}; "
            "retrain if predictions look wrong"
        )
    return jsonable(
        PredictReport(
            model=str(model_path),
            backbone=bundle["backbone"],
            head=bundle.get("head", ""),
            classes=classes,
            predictions=[
                Prediction(
                    path=path,
                    predicted=classes[int(np.argmax(p))],
                    probabilities=dict(zip(classes, p.tolist(), strict=True)),
                )
                for path, p in zip(embedded.paths, proba, strict=True)
            ],
            rejected=rejected,
            warnings=notes,
            disclaimer=DISCLAIMER,
        )
    )
