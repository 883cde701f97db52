"""Every setting of `cxr evaluate`, defined once: its name, default, help and CLI flag.

`EvaluateConfig` (and the records it holds: `TaskSpec`, the designs, `Bootstrap`) take their
defaults from this table, `cxr.api.evaluate` its keywords' defaults and the CLI its options'
defaults, flags and help; `tests/test_settings.py` fails when an option or a keyword has no
entry here or another default. The library speaks in setting names: an error names one in
backticks (`folds`), which the CLI prints as its flag (`as_flags`); text that goes into a report
as the CLI prints it uses `flag`.
Plain data: imports only `cxr.settings` (the tables' machinery) and `cxr.cluster`'s help text, so
every module can read it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cxr.cluster import HELP as SCHEDULER  # plain text (the module imports Dask only to connect)
from cxr.settings import Setting, as_flags, flag, table

__all__ = ["EVALUATE", "Setting", "as_flags", "default", "flag"]

FOLDS = 10  # the paper's 10-fold cross-validation
REPEATS = 1
DRAWS = 3  # subsample draws per training size of a learning curve
MARGIN = 0.02  # "within this much of the full-data score", in the metric's own units
REPLICATES = 1000
OPERATING_POINT = 0.95
METRIC = "balanced_accuracy"
TARGET = "label"
GROUP_BY = "auto"

# The order is `cxr evaluate --help`'s.
EVALUATE = table(
    Setting("backbones", (), "Store to use (repeatable). Default: all.", ("-b", "--backbone")),
    Setting("heads", (), "Head (repeatable). Default: all.", ("--head",)),
    Setting(
        "classes",
        (),
        "Keep these classes (comma-separated, after --merge): covid,bacterial,normal.",
        cli=None,
    ),
    Setting(
        "merge", None, "Merge classes, NEW=a,b (repeatable): pneumonia=bacterial,viral.", cli=[]
    ),
    Setting("binary", None, "One-vs-rest: this class against all other selected classes."),
    Setting(
        "where",
        (),
        "Keep rows whose COLUMN (e.g. dataset, view) is one of COLUMN=v1,v2; 'a=x | b=y' keeps "
        "rows matching either; repeat to require all.",
    ),
    Setting(
        "exclude",
        None,
        "Drop images: a file from `cxr audit --exclude-out`, or one id/path per line.",
        type=Path | None,
    ),
    Setting(
        "target",
        TARGET,
        f"Column to predict: {TARGET} (default), or any metadata column, e.g. dataset to probe "
        "how well the embeddings recognise the source.",
    ),
    Setting(
        "folds", None, f"K of stratified K-fold (default {FOLDS}, the paper's).", type=int | None
    ),
    Setting(
        "repeats",
        None,
        f"Repeat K-fold with reshuffled folds (default {REPEATS}).",
        type=int | None,
    ),
    Setting("seed", 0, "Seed for folds, heads and the bootstrap."),
    Setting(
        "group_by",
        GROUP_BY,
        "Group CV folds by patient, none, auto (patient whenever rows have ids), or "
        "any stored column (dataset, source, view, ...).",
    ),
    Setting(
        "leave_out",
        None,
        "Leave-one-value-out instead of CV: train on all other values of COLUMN, test on "
        "each value in turn (e.g. dataset).",
    ),
    Setting(
        "test_where",
        (),
        "External test instead of CV: fit on the other selected rows, score once on the "
        "rows matching COLUMN=v1,v2 (syntax of --where; repeat to require all).",
    ),
    Setting(
        "metric",
        METRIC,
        "Metric that picks the best result, compares every result with it, and is plotted.",
    ),
    Setting(
        "operating_point",
        OPERATING_POINT,
        "Fixed specificity (sensitivity) at which sensitivity (specificity) is reported.",
    ),
    Setting(
        "confounds",
        None,
        "Metadata columns checked for predicting the target: auto (all), none, or a,b,c.",
        cli="auto",
    ),
    Setting("jobs", -1, "Parallel folds (-1: all cores); results do not depend on it."),
    Setting("search", False, "Tune each head's small grid by nested CV."),
    Setting(
        "params",
        None,
        "Hyper-parameter HEAD.PARAM=VALUE (repeatable), e.g. mlp.alpha=1e-3.",
        ("--set",),
        cli=[],
    ),
    Setting("bootstrap", REPLICATES, "Bootstrap replicates for the 95% CI."),
    Setting(
        "train_sizes",
        (),
        "Learning curves: refit each head on nested, stratified, patient-grouped subsamples "
        "of every training split: images per class (25,50,100,all) or fractions (0.1,0.5,all).",
        cli=None,
    ),
    Setting("curve_draws", DRAWS, "Subsample draws per training size (averaged)."),
    Setting(
        "curve_margin",
        MARGIN,
        "Report the smallest size whose score is within this of the full-data score.",
    ),
    Setting(
        "covariates",
        (),
        "Stored columns appended to the embeddings inside each fold (age,sex,view): "
        "numbers imputed and scaled, categories one-hot; reported against embeddings alone.",
        cli=None,
    ),
    Setting(
        "covariates_only",
        False,
        "Also fit each head on the --covariates alone (the clinician's baseline).",
    ),
    Setting(
        "predictions",
        False,
        "Put every out-of-fold prediction (image, fold, class probabilities) in --json.",
    ),
    Setting("scheduler", None, SCHEDULER),
    Setting(
        "cache",
        True,
        "Fit every head again instead of reusing the out-of-fold predictions kept in "
        "FEATURES_DIR/.fits/ (safe to delete).",
        ("--no-cache",),
        cli=False,
    ),
)


def default(name: str) -> Any:
    """The default of an evaluate setting (a KeyError for a name that is none)."""
    return EVALUATE[name].default
