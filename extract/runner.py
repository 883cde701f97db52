"""Stage 1 end to end: discover -> skip what is cached -> decode once -> every backbone -> store.

The run only: files come from discovery, the work is `cxr.extract.job` (decode once, every
backbone, rows to a sink), durability is the store writer's (`writer`), and every word to the
user goes through the caller's `cxr.progress.Progress` (silent by default). Locally one job
takes every file still to embed; with ``scheduler`` the same job runs per shard of files on
Dask workers (`cxr.extract.distributed`), and the client adopts their shards.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from cxr.errors import CxrError
from cxr.extract.calibration import Calibration
from cxr.extract.dataset import Discovery, Entry, list_images, shown_name
from cxr.extract.discovery import discover
from cxr.extract.hashing import HashCache
from cxr.extract.headers import HeaderCache, StudyKey
from cxr.extract.job import Target, run_job
from cxr.extract.layouts import ReadOptions
from cxr.extract.reader import WHOLE, decode_stream
from cxr.extract.regions import LUNGS, Region, masks_digest
from cxr.extract.registry import RESIZE_POLICIES, BackboneSpec, get_spec
from cxr.extract.runtimes import Runtime, choose
from cxr.extract.settings import (
    AUTO,
    BATCH,
    BOX,
    CALIBRATION_SIZE,
    DECODES,
    EXACT,
    FEATURES,
    FULL,
    PRECISION,
    REFERENCE,
    RESIZE,
    RUNTIME,
    SHARD_FILES,
)
from cxr.extract.weights import ResolvedWeights, WeightsChoice, parse_weights, resolve
from cxr.extract.writer import StoreWriter
from cxr.progress import Progress, Silent
from cxr.settings import flag, listed, unknown
from cxr.store.provenance import library_versions
from cxr.store.schema import Reject, StoreAttrs, hashes_path, read_attrs, store_name, store_path

MAX_BATCH = 1024  # images per forward pass: more only costs memory
MAX_COUNT = 100_000  # films to calibrate on, files per Dask task
# Recorded in every store, whichever runtime wrote it (f32 runtimes share stores).
LIBRARIES = ("tensorflow", "keras", "h5py", "numpy", "PIL", "pydicom", "openvino")
AGREEMENT_FILMS = 8  # stored films a runtime re-embeds before it adds rows beside another's


@dataclass(frozen=True)
class Summary:
    """What one backbone's store looks like after a run."""

    backbone: str
    path: Path
    dim: int
    new: int
    cached: int
    rejected: int
    stored: int
    seconds: float
    published: bool


@dataclass(frozen=True)
class EmbedResult:
    """Embeddings of loose files (`cxr predict`), with the attributes a store would record."""

    X: np.ndarray
    paths: list[str]
    rejected: list[Reject]
    attrs: StoreAttrs


@dataclass
class Pending:
    """One backbone's share of a run: what is left to embed, and the writer of its store."""

    spec: BackboneSpec
    weights: ResolvedWeights
    writer: StoreWriter
    todo: list[Entry]
    batch_size: int
    new: int = 0  # files embedded by this run
    check: list[Entry] = field(default_factory=list)  # stored films to re-embed first (`agree`)


def store_attrs(
    spec: BackboneSpec,
    weights: ResolvedWeights,
    resize_policy: str,
    runtime: Runtime = Runtime(REFERENCE, PRECISION),
    max_abs_diff: float | None = None,
    region: dict | None = None,
    calibration: Calibration | None = None,
    decode: str = EXACT,
) -> StoreAttrs:
    """The attributes this run gives the store (the writer adds where the data came from).

    ``max_abs_diff``: the runtime's probe against TensorFlow when known before any model is
    built (from the converted-model cache); the embedder's own figure replaces it once built.
    """
    libraries = (*LIBRARIES, "nncf") if calibration is not None else LIBRARIES
    return StoreAttrs(
        backbone=spec.name,
        constructor=spec.constructor_label,
        dim=spec.dim,
        input_size=spec.input_size,
        preprocessing=spec.preprocessing,
        pooling="global average",
        resize=resize_policy,
        **weights.attrs(),
        **runtime.attrs(),
        runtime_max_abs_diff=float(max_abs_diff or 0.0),
        **(region or WHOLE.attrs()),
        **(calibration.attrs() if calibration else {}),
        decode=decode,
        versions=json.dumps(library_versions(*libraries), sort_keys=True),
    )


def _known_difference(spec: BackboneSpec, weights: ResolvedWeights, runtime: Runtime, old: dict):
    """The probe figure without building anything: the cache's, else the existing store's."""
    if runtime.name != "openvino":
        return 0.0
    from cxr.extract.ov_runtime import recorded_difference

    known = recorded_difference(spec, weights, runtime.precision)
    return known if known is not None else old.get("runtime_max_abs_diff")


def extract_features(
    *,
    data: Path | None,
    manifest: Path | None,
    backbones: Sequence[str],
    weights: Sequence[str],
    features_dir: Path,
    batch_size: int = BATCH,
    resize: str = RESIZE,
    seed: int = 0,
    rehash: bool = False,
    rebuild: bool = False,
    runtime: Runtime | str = RUNTIME,
    precision: str = PRECISION,
    progress: Progress | None = None,
    scheduler: str | None = None,
    shard: int = SHARD_FILES,
    region: str = FULL,
    region_box: float = BOX,
    calibration: int = CALIBRATION_SIZE,
    layout: str = AUTO,
    read: ReadOptions | None = None,
    replace: bool = False,
    decode: str = EXACT,
) -> list[Summary]:
    """Bring ``features_dir/<backbone>.h5`` up to date with the data set, for every backbone.

    ``scheduler``: compute on Dask (an address, or ``local:N``), ``shard`` files per task.
    ``region`` (`cxr.extract.regions`): embed a region of every film (``centre-masked``, ...)
    into stores of their own, ``<backbone>@<region>.h5``. ``calibration``: with precision int8,
    the films (drawn by ``seed``) that NNCF calibrates the quantised model on. ``layout``
    (`cxr.extract.layouts`): how the data set is read, recognised when "auto", with ``read``'s
    options (manifest columns, patients from names, label rules, paths outside the data).
    ``replace``: let this data set replace the rows of a store built from another.
    ``decode`` draft: JPEG films decoded at a reduced scale (`cxr.extract.images`), into
    stores of their own (``<backbone>+draft.h5``); the int8 calibration stays exact.
    ``runtime``: "auto" (the default) chooses and says which (`cxr.extract.runtimes`); before
    it adds rows to a store another runtime wrote, it re-embeds a few stored films and the
    store's writer refuses a difference over the f32 tolerance."""
    report = progress or Silent()
    if scheduler is not None:
        from cxr.cluster import local_workers

        local_workers(scheduler)  # a malformed local:N fails before any hashing
    if not 1 <= shard <= MAX_COUNT:
        raise CxrError(f"`shard` {shard}: give 1..{MAX_COUNT} files per task")
    if not 1 <= batch_size <= MAX_BATCH:
        raise CxrError(f"`batch_size` {batch_size}: give 1..{MAX_BATCH} images per pass")
    engine = runtime if isinstance(runtime, Runtime) else choose(runtime, precision)
    if engine.precision == "int8" and scheduler is not None:
        raise CxrError("`precision` int8 runs in-process: leave out `scheduler`")
    if not 1 <= calibration <= MAX_COUNT:
        raise CxrError(f"`calibration` {calibration}: give 1..{MAX_COUNT} images")
    zone = Region.parse(region, region_box)
    check_decode(decode)
    specs = [get_spec(name) for name in dict.fromkeys(backbones)]
    named = {
        s.name: store_name(
            {"backbone": s.name, "region": zone.kind, "decode": decode, **engine.attrs()}
        )
        for s in specs
    }
    if resize not in RESIZE_POLICIES:
        raise CxrError(f"`resize` {resize}: choose from {', '.join(RESIZE_POLICIES)}")
    choices = parse_weights(list(weights), [s.name for s in specs], seed)
    existing = {s.name: read_attrs(store_path(features_dir, named[s.name])) for s in specs}
    for spec in specs:  # no --weights for it: the weight file its store was built with
        own = _stores_weight_file(existing[spec.name], spec.name, weights)
        if own is not None:
            choices[spec.name] = WeightsChoice("file", path=own)
            report.note(f"{spec.name}: the store's weight file {own} (`weights` to choose others)")
    hashes = HashCache(hashes_path(features_dir), trust=not rehash)
    key = StudyKey(features_dir)
    headers = HeaderCache(features_dir, key)
    discovery = discover(data, manifest, hashes, options=read, layout=layout, headers=headers)
    headers.save()
    if zone.kind in LUNGS and zone.masks is None and not any(e.mask for e in discovery.entries):
        raise CxrError(
            f"`region` {region}: the {discovery.layout} layout ships no lung masks; name a "
            f"folder of them: `region` {region}:DIR"
        )
    if discovery.header_ids:
        report.note(
            f"{discovery.header_ids} DICOM film(s): patient ids and institutions from their "
            f"headers, pseudonymised with {key.source} (keep it private; the same key gives the "
            "same ids)"
        )
    distinct = len({e.sha256 for e in discovery.entries})
    repeated = len(discovery.entries) - distinct
    found = (
        f"layout: {discovery.layout} ({discovery.reads}): {len(discovery.entries)} files in "
        f"{discovery.root}"
    )
    if repeated:  # the progress bars count images, not files
        found += (
            f": {distinct} distinct images ({repeated} file(s) hold the same bytes as another, "
            "and each image is embedded once)"
        )
    report.note(found)
    for note in discovery.notes:
        report.note(note)
    for reject in discovery.rejects:
        report.warn(f"rejected {reject.path}: {reject.reason}")
    if discovery.unlisted:
        report.note(
            f"warning: {len(discovery.unlisted)} image file(s) under {discovery.root} are not in "
            f"{discovery.manifest} and were left out (first: {discovery.unlisted[0]}); add them "
            "to the manifest to use them"
        )
    if not discovery.entries:
        raise CxrError(f"{discovery.root}: none of the listed files could be read (see above)")
    region_attrs = zone.attrs(masks_digest(zone, discovery.entries, hashes.sha256))
    sample = None
    if engine.precision == "int8":
        sample = Calibration.sample(discovery.entries, calibration, seed, resize, zone)

    with ExitStack() as stack:
        jobs: list[Pending] = []
        for spec in specs:
            resolved = resolve(spec, choices[spec.name], hashes)
            writer = stack.enter_context(
                StoreWriter(
                    features_dir,
                    store_attrs(
                        spec,
                        resolved,
                        resize,
                        engine,
                        _known_difference(spec, resolved, engine, existing[spec.name]),
                        region_attrs,
                        sample,
                        decode,
                    ),
                    rebuild=rebuild,
                )
            )
            writer.claim(discovery, replace)
            todo = list(
                {e.sha256: e for e in discovery.entries if e.sha256 not in writer.cache}.values()
            )
            for aside in writer.moved_aside:
                report.note(
                    f"{spec.name}: moved {aside.name.split('.damaged-')[0]} aside to {aside}"
                )
            if writer.resumed_batches:
                report.note(
                    f"{spec.name}: resuming after {writer.resumed_batches} committed batch(es)"
                )
            check = _stored_films(writer, discovery.entries) if todo else []
            jobs.append(Pending(spec, resolved, writer, todo, batch_size, check=check))
        hashes.save()
        started = time.perf_counter()
        if any(job.todo for job in jobs):
            if engine.why:
                report.note(engine.said())
            copies: dict[str, list[str]] = {}
            for entry in discovery.entries:
                copies.setdefault(entry.sha256, []).append(entry.path)
            if scheduler is None:
                _compute(jobs, resize, copies, report, engine, zone, sample, decode)
            else:
                from cxr.extract.distributed import compute_on_cluster
                from cxr.extract.model import make_embedder

                for job in jobs:  # checked here, before any worker writes a shard
                    if job.todo and job.check:
                        embedder = make_embedder(job.spec, job.weights, job.batch_size, engine)
                        _agree(job, embedder, resize, zone, report, decode)
                compute_on_cluster(
                    jobs, resize, copies, report, engine, scheduler, shard, zone, decode
                )
        else:
            report.note(f"No new images to embed: all {len(discovery.entries)} files are stored.")
        summaries = [_publish(job, discovery, time.perf_counter() - started) for job in jobs]
        for job, s in zip(jobs, summaries, strict=True):
            if s.published and not s.new:
                changed = f"; {job.writer.changes}" if job.writer.changes else ""
                report.note(
                    f"{s.backbone}: store updated (rows or metadata changed{changed}): {s.path}"
                )
    return summaries


def from_settings(
    data: Path | str | None,
    settings: Mapping[str, Any],
    progress: Progress | None = None,
    caller: str = "extract_features",
) -> list[Summary]:
    """`extract_features` from the settings by name (`cxr.extract.settings`; the others at
    their defaults), as Python values or the CLI's text (``ROLE=NAME`` items for ``columns``,
    ``TEXT=LABEL`` for ``label_map``, ``a,b`` for a list). The one call of both edges, so a
    setting that is a parameter of `extract_features` reaches it from both without a line of
    its own."""
    unknown(FEATURES, settings, caller)
    value = {name: entry.default for name, entry in FEATURES.items()} | dict(settings)
    read = ReadOptions.parse(
        value.pop("columns"),
        value.pop("patient_from_name"),
        value.pop("label_map"),
        value.pop("allow_outside_data"),
    )
    manifest, folder = value.pop("manifest"), value.pop("features")
    return extract_features(
        data=Path(data) if data is not None else None,
        manifest=Path(manifest) if manifest else None,
        features_dir=Path(folder),
        read=read,
        progress=progress,
        **value | {name: list(listed(value[name], name)) for name in ("backbones", "weights")},
    )


def _stores_weight_file(attrs: dict, backbone: str, weights: Sequence[str]) -> Path | None:
    """The file an existing store (its ``attrs``) was built from, when this run names no weights
    for it: a re-run of `cxr features DATA` then needs no --weights, offline included."""
    if any("=" not in w or w.partition("=")[0] == backbone for w in weights):
        return None
    recorded = Path(str(attrs.get("weights_path", "")))
    if attrs.get("weights") == "file" and recorded.name and recorded.is_file():
        return recorded
    return None


def _stored_films(writer: StoreWriter, entries: list[Entry]) -> list[Entry]:
    """Up to `AGREEMENT_FILMS` films of the data set (spread over it) whose stored rows only
    other runtimes wrote: this run's runtime embeds them again before it adds rows."""
    others = set(writer.others)
    stored = list({e.sha256: e for e in entries if e.sha256 in others}.values())
    step = max(1, len(stored) // AGREEMENT_FILMS)
    return stored[::step][:AGREEMENT_FILMS]


def check_decode(decode: str) -> None:
    """`decode` checked at the boundary, before any work: CxrError naming the choices."""
    if decode not in DECODES:
        raise CxrError(f"`decode` {decode}: choose from {', '.join(DECODES)}")


def _agree(
    job: Pending,
    embedder,
    resize_policy: str,
    region: Region,
    report: Progress,
    decode: str = EXACT,
) -> None:
    """Re-embed the job's check films with this run's runtime; the writer refuses (CxrError,
    nothing written) when they differ from the stored vectors by more than the tolerance."""
    from cxr.extract.model import embed_all

    size = job.spec.input_size
    ids, images = [], []
    for entry, result in decode_stream(
        job.check, lambda e: {size}, resize_policy, 2 * job.batch_size, region, decode=decode
    ):
        if not isinstance(result, str):  # decoded when stored; a file gone bad is skipped
            ids.append(entry.sha256)
            images.append(result[size])
    if ids:
        worst = job.writer.agree(ids, embed_all(embedder, images, job.batch_size, job.spec.dim))
        report.note(
            f"{job.spec.name}: {job.writer.runtime} agrees with the stored rows of "
            f"{'+'.join(job.writer.runtimes)} (largest difference {worst:.2g} on {len(ids)} "
            "films)"
        )


def _compute(
    jobs: list[Pending],
    resize_policy: str,
    copies: dict[str, list[str]],
    report: Progress,
    runtime: Runtime = Runtime(REFERENCE, PRECISION),
    region: Region = WHOLE,
    calibration: Calibration | None = None,
    decode: str = EXACT,
) -> None:
    """One job over every file still to embed, the stores' writers its sinks; ``copies``
    names every path that holds the same bytes (a reject is said for each)."""
    from cxr.extract.model import make_embedder

    busy = [job for job in jobs if job.todo]
    needs: dict[str, list[str]] = {}
    for job in busy:
        for entry in job.todo:
            needs.setdefault(entry.sha256, []).append(job.spec.name)
    union = list({e.sha256: e for job in busy for e in job.todo}.values())
    targets = {}
    for job in busy:
        embedder = make_embedder(
            job.spec, job.weights, job.batch_size, runtime, calibration, report.warn
        )
        job.writer.record_probe(embedder.max_abs_diff)
        if job.check:
            _agree(job, embedder, resize_policy, region, report, decode)
        targets[job.spec.name] = Target(
            job.spec.name, job.spec.input_size, job.spec.dim, embedder, job.writer, job.batch_size
        )

    def rejected(entry: Entry, reason: str) -> None:
        for path in copies[entry.sha256]:
            report.warn(f"rejected {path}: {reason}")

    with report.parts({job.spec.name: len(job.todo) for job in busy}) as advance:
        for name, target in targets.items():
            target.on_commit = partial(advance, name)
        run_job(union, needs, targets, resize_policy, rejected, region, decode)
    for job in busy:
        job.new += targets[job.spec.name].new


def _publish(job: Pending, discovery: Discovery, seconds: float) -> Summary:
    published = job.writer.publish(discovery)
    stored = sum(e.sha256 in job.writer.cache.vectors for e in discovery.entries)
    rejected = len(discovery.rejects) + sum(
        e.sha256 in job.writer.cache.rejected for e in discovery.entries
    )
    return Summary(
        backbone=job.writer.backbone,
        path=job.writer.path,
        dim=job.spec.dim,
        new=job.new,
        cached=stored - job.new,
        rejected=rejected,
        stored=stored,
        seconds=seconds,
        published=published,
    )


def embed_images(
    inputs: Sequence[Path],
    *,
    backbone: str,
    weights: Sequence[str],
    resize: str = RESIZE,
    seed: int = 0,
    batch_size: int = 16,
    runtime: str = RUNTIME,
    precision: str = PRECISION,
    region: str = FULL,
    region_box: float = BOX,
    decode: str = EXACT,
) -> EmbedResult:
    """Embeddings of image files and folders of images (`cxr predict`), in listing order, of
    the ``region`` of each film a model was trained on (the centre regions: lungs regions need a
    mask per film, which loose files do not have), decoded as it was (``decode``).

    Matches `cxr.classify.model.ImageEmbedder`, so stage 2 can be handed this function without
    importing stage 1.
    """
    zone = Region.parse(region, region_box) if not region.startswith(LUNGS) else None
    if zone is None:
        raise CxrError(
            f"the model was trained on {region} films, which need a lung mask per film: "
            "predict embeds whole films or their centre regions only"
        )
    engine = choose(runtime, precision)
    check_decode(decode)
    if engine.precision == "int8":  # its quantised model depends on the store's calibration
        raise CxrError(
            "`precision` int8: images outside a data set have no calibration sample; embed "
            f"them with `cxr features {flag('precision')} int8` beside the store's data, or use f32"
        )
    paths = list_images(inputs)
    spec = get_spec(backbone)
    resolved = resolve(spec, parse_weights(list(weights), [backbone], seed)[backbone])
    from cxr.extract.model import embed_all, make_embedder

    embed = make_embedder(spec, resolved, batch_size, engine)
    attrs = store_attrs(
        spec, resolved, resize, engine, embed.max_abs_diff, zone.attrs(), decode=decode
    )
    kept, images, rejected, entries = [], [], [], []
    for p in paths:
        name, problem = shown_name(str(p))
        entry = Entry(path=name, file=Path(p), label="")
        if problem:  # a name that is not UTF-8 could not be printed or written to JSON
            rejected.append(entry.reject(problem))
        else:
            entries.append(entry)
    for entry, result in decode_stream(
        entries, lambda e: {spec.input_size}, resize, 2 * batch_size, zone, decode=decode
    ):
        if isinstance(result, str):
            rejected.append(entry.reject(result))
        else:
            kept.append(entry.path)
            images.append(result[spec.input_size])
    X = embed_all(embed, images, batch_size, spec.dim)
    return EmbedResult(X=X, paths=kept, rejected=rejected, attrs=attrs)
