"""Every setting of `cxr features`, defined once: its name, default, help and CLI flag.

`cxr.extract.runner.extract_features` takes its defaults from this table, `cxr.extract_features`
its keywords and the CLI its options (default, flags, help); `tests/test_settings.py` fails when
an option or a keyword has no entry here or another default. Errors name a setting in backticks
(`region_box`); the CLI prints its flag. Plain data: imports only `cxr.settings`, so the CLI's
`--help` reads it without loading stage 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cxr.cluster import HELP as SCHEDULER  # plain text (the module imports Dask only to connect)
from cxr.settings import Setting, table

BACKBONE = "mobilenet_v2"
BATCH = 32  # images per forward pass (and per commit)
RESIZE = "squash"  # the paper's: stretch to the input
RUNTIME = "auto"  # the fastest installed that matches the reference (`cxr.extract.runtimes`)
REFERENCE = "tensorflow"  # the runtime every other is checked against
PRECISION = "f32"
FULL = "full"  # the whole film (`cxr.extract.regions`)
BOX = 0.6  # the central box's share of each side: margins of 20%
AUTO = "auto"  # the layout recognised (`cxr.extract.layouts`)
EXACT = "exact"  # every pixel, as Keras decodes it (`cxr.extract.images`)
DECODES = (EXACT, "draft")
CALIBRATION_SIZE = 300  # int8: films NNCF calibrates on (its own default subset size)
SHARD_FILES = 256  # files per task: a few batches, so a lost worker costs little to redo

# The order is `cxr features --help`'s.
FEATURES = table(
    Setting(
        "backbones",
        (BACKBONE,),
        "Backbone name (repeatable). See `cxr backbones`.",
        ("-b", "--backbone"),
    ),
    Setting(
        "weights",
        (),
        "imagenet (default), random, or NAME=PATH for a local weight file (repeatable).",
    ),
    Setting(
        "manifest",
        None,
        "CSV with path,label[,patient_id,source,...]. Default: DATA/manifest.csv if present.",
        type=Path | None,
    ),
    Setting("features", Path("features"), "Folder for the <backbone>.h5 stores."),
    Setting("batch_size", BATCH, "Images per forward pass (and per commit)."),
    Setting("resize", RESIZE, "squash (the paper: stretch to the input) or pad (keep aspect)."),
    Setting("seed", 0, "Seed for --weights random."),
    Setting("rehash", False, "Re-read every file's bytes instead of trusting size+mtime+inode."),
    Setting(
        "rebuild",
        False,
        "Move these backbones' stores (and unreadable shards) aside, then build them again.",
    ),
    Setting(
        "region",
        FULL,
        "The part of each film to embed, into a store of its own (<backbone>@<region>.h5): "
        "full, centre-masked (the central box black), centre-only, lungs-only:DIR or "
        "lungs-masked:DIR (a lung mask per film under DIR, at the film's path; without :DIR, "
        "the masks the collection ships).",
    ),
    Setting(
        "region_box",
        BOX,
        "The central box's share of each side (centre regions): 0.6 leaves margins of 20%.",
    ),
    Setting(
        "allow_outside_data",
        False,
        "Read manifest paths that are absolute or climb out of DATA with '..' (refused by "
        "default: a manifest from elsewhere must not point the tool at other files).",
    ),
    Setting(
        "layout",
        AUTO,
        "How DATA is laid out: auto (recognised, and said), folders, split-folders, manifest, "
        "covid-radiography, kermany, covidx or cohen.",
    ),
    Setting(
        "columns",
        None,
        "A manifest's column for a role, ROLE=NAME (repeatable): path, label, patient, source "
        "(e.g. --column label=diagnosis).",
        ("--column",),
        cli=[],
    ),
    Setting(
        "patient_from_name",
        "",
        "A regular expression that finds the patient id in each file name (its first group, "
        "else the match), e.g. 'person\\d+'.",
    ),
    Setting(
        "label_map",
        None,
        "TEXT=LABEL (repeatable): rows whose finding or class contains TEXT get LABEL, before "
        "the collection's own rules; TEXT= leaves them out.",
        cli=[],
    ),
    Setting(
        "replace",
        False,
        "Let this data set replace the rows of a store built from another data root or "
        "manifest (refused by default, naming both).",
    ),
    Setting(
        "runtime",
        RUNTIME,
        "auto (the fastest installed that matches TensorFlow: openvino on a CPU, tensorflow "
        "where a GPU is visible; the run says which), tensorflow (the reference) or openvino "
        "(the openvino extra of cxr-transfer; checked against TensorFlow). f32 runtimes share "
        "one store.",
    ),
    Setting(
        "precision",
        PRECISION,
        "f32, bf16 (OpenVINO on a CPU with bf16) or int8 (OpenVINO, quantised by NNCF on "
        "--calibration films of the data): faster, other vectors, a store of its own.",
    ),
    Setting(
        "decode",
        EXACT,
        "exact (every pixel, as Keras decodes it) or draft (a JPEG decoded by libjpeg at 1/2 to "
        "1/8 scale, never below the input size; other formats exactly): faster, other pixels, "
        "a store of its own (<backbone>+draft.h5).",
    ),
    Setting(
        "calibration",
        CALIBRATION_SIZE,
        "With --precision int8: films drawn (by --seed) to calibrate the quantisation.",
    ),
    Setting("scheduler", None, SCHEDULER),
    Setting("shard", SHARD_FILES, "With --scheduler: files per Dask task (one shard each)."),
)


def default(name: str) -> Any:
    """The default of a features setting (a KeyError for a name that is none)."""
    return FEATURES[name].default
