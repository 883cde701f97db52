"""The one registry of classification heads: name -> scikit-learn Pipeline, defaults, search grid.

Every head is ``StandardScaler -> classifier``; because the scaler lives inside the Pipeline it is
fitted on the training rows of each fold only. The registry is plain data (classifiers are named
and imported when a head is built), so the CLI offers its names without importing scikit-learn.
Hyper-parameters come from the registry defaults, then a TOML file, then ``--set
head.param=value``; names and values are validated here, once, so a typo fails before any fold.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cxr.errors import CxrError
from cxr.files import read_toml

if TYPE_CHECKING:
    from sklearn.base import BaseEstimator
    from sklearn.pipeline import Pipeline

Params = dict[str, Any]
# A parameter of every head, not of its classifier: the number of principal components the
# standardised features are projected on, inside the fold, before the classifier (None: all).
PCA = "pca"
# Tables of the config file that are not heads (read and checked by cxr.tracking.target).
OTHER_TABLES = ("tracking",)
# What a calibrated head's fitted classifier is wrapped in ("module.Class").
CALIBRATION = (
    "sklearn.calibration.CalibratedClassifierCV",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
)


@dataclass(frozen=True)
class Head:
    """One head: its classifier class, documented defaults and a small grid for ``--search``."""

    name: str
    summary: str
    classifier_path: str  # "module.Class" of the scikit-learn classifier
    defaults: Mapping[str, Any]
    grid: Mapping[str, Sequence[Any]]
    # SVC has no native probabilities (scikit-learn 1.9 deprecated probability=True): wrap it in
    # a sigmoid calibration fitted by 3-fold CV on the training rows of the fold.
    calibrated: bool = False
    # Rough fit time relative to logreg: the parallel pool starts the slow fits first, so the
    # last worker is not left alone with a forest.
    cost: int = 1
    # The types its fitted classifier holds besides itself ("module.Class"): with it (and the
    # calibration) all that a model file may hold for this head (`cxr.classify.modelfile`).
    holds: tuple[str, ...] = ()

    @property
    def classifier(self) -> type[BaseEstimator]:
        return load_class(self.classifier_path)

    @property
    def prefix(self) -> str:
        """Pipeline parameter prefix of the classifier's own parameters."""
        return "clf__estimator__" if self.calibrated else "clf__"

    @property
    def inner_cv(self) -> bool:
        """Fitting it cross-validates inside the training rows (the calibration), so every
        class needs room there, as for ``search``."""
        return self.calibrated

    @property
    def fitted(self) -> str:
        """The last step of its fitted Pipeline ("module.Class")."""
        return CALIBRATION[0] if self.calibrated else self.classifier_path

    @property
    def fitted_types(self) -> tuple[str, ...]:
        """Every type its fitted Pipeline's last step holds ("module.Class")."""
        return (self.classifier_path, *(CALIBRATION if self.calibrated else ()), *self.holds)


HEADS: dict[str, Head] = {
    h.name: h
    for h in (
        Head(
            "mlp",
            "the paper's head: one hidden ReLU layer, Adam, early stopping",
            "sklearn.neural_network.MLPClassifier",
            {
                "hidden_layer_sizes": (256,),
                "activation": "relu",
                "solver": "adam",
                "alpha": 1e-4,
                "learning_rate_init": 1e-3,
                "early_stopping": True,
                "validation_fraction": 0.1,
                "n_iter_no_change": 10,
                "max_iter": 300,
            },
            {"hidden_layer_sizes": [(128,), (512,)], "alpha": [1e-4, 1e-2]},
            cost=2,
            holds=(
                "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
                "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
                "sklearn.preprocessing.LabelBinarizer",
            ),
        ),
        Head(
            "logreg",
            "multinomial logistic regression (L2, lbfgs)",
            "sklearn.linear_model.LogisticRegression",
            {"C": 1.0, "tol": 1e-3, "max_iter": 2000},
            {"C": [0.01, 0.1, 1.0, 10.0]},
        ),
        Head(
            "svm",
            "RBF support vector machine, sigmoid-calibrated probabilities",
            "sklearn.svm.SVC",
            {"kernel": "rbf", "C": 1.0, "gamma": "scale", PCA: 128},
            {"C": [0.1, 1.0, 10.0], "gamma": ["scale", 1e-4]},
            calibrated=True,
            cost=3,
        ),
        Head(
            "knn",
            "k nearest neighbours (Euclidean on standardised features, distance-weighted)",
            "sklearn.neighbors.KNeighborsClassifier",
            {"n_neighbors": 10, "weights": "distance"},
            {"n_neighbors": [5, 10, 20]},
            holds=(
                "sklearn.neighbors.KDTree",
                "sklearn.neighbors.BallTree",
                *(
                    f"sklearn.metrics._dist_metrics.{name}Distance64"
                    for name in ("Euclidean", "Manhattan", "Chebyshev", "Minkowski")
                ),
            ),
        ),
        Head(
            "forest",
            "random forest",
            "sklearn.ensemble.RandomForestClassifier",
            {"n_estimators": 100, "max_features": "sqrt", "max_samples": 0.5, "n_jobs": 1},
            {"max_features": ["sqrt", 0.1], "min_samples_leaf": [1, 3]},
            cost=4,
            holds=("sklearn.tree.DecisionTreeClassifier",),
        ),
    )
}


def load_class(path: str) -> type:
    """The class a "module.Class" path names (imported now)."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def needs_inner_cv(heads: Iterable[str], search: bool) -> bool:
    """Whether any fit cross-validates inside its training rows (``search``, or a head's own)."""
    return search or any(HEADS[name].inner_cv for name in heads)


def get_head(name: str) -> Head:
    if name not in HEADS:
        raise CxrError(f"unknown head {name!r}; available: {', '.join(HEADS)}")
    return HEADS[name]


def parse_value(text: str) -> Any:
    """``512`` -> 512, ``1e-3`` -> 0.001, ``512,256`` -> (512, 256), ``true`` -> True, else str."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return text.strip()


class Grid(tuple):
    """Candidate values of one parameter, for ``--search`` (``--set logreg.C=1,10,100``)."""


def parse_params(assignments: Iterable[str] = (), config: Path | None = None) -> dict[str, Params]:
    """Hyper-parameters per head from a TOML file (``[mlp]`` tables) then ``head.param=value``.

    Command-line assignments override the file. A list for a parameter that takes one value
    (``C = [1, 10, 100]``, ``--set logreg.C=1,10,100``) is a ``Grid`` for ``--search``; a list
    the parameter itself accepts (``hidden_layer_sizes=512,256``) stays one value, and a list of
    lists in TOML (``hidden_layer_sizes = [[128], [512]]``) is a grid of them. Unknown heads,
    unknown parameters and invalid values raise CxrError naming where they came from.
    """
    params: dict[str, Params] = {}
    if config is not None:
        document = read_toml(Path(config), "TOML file of hyper-parameters")
        for head, table in document.items():
            if head in OTHER_TABLES:
                continue
            if not isinstance(table, dict):
                raise CxrError(f"{config}: {head!r} must be a table like [mlp] of parameters")
            try:
                values = validate_params(head, table)
            except CxrError as exc:
                raise CxrError(f"{config}: {exc}") from None
            params.setdefault(head, {}).update(values)
    for item in assignments:
        key, sep, value = item.partition("=")
        head, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise CxrError(f"`params` {item!r}: expected HEAD.PARAM=VALUE, e.g. mlp.alpha=1e-3")
        try:
            checked = validate_params(head, {name: parse_value(value)})
        except CxrError as exc:
            raise CxrError(f"`params` {item}: {exc}") from None
        params.setdefault(head, {}).update(checked)
    for head, values in params.items():
        validate_params(head, values)  # the combination, too
    return params


def _from_list(value: Any) -> Any:
    """TOML and Python lists: a list of lists is a grid of tuples, a list a tuple (see below)."""
    if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        return Grid(tuple(v) for v in value)
    return tuple(value) if isinstance(value, list) else value


def validate_params(name: str, params: Mapping[str, Any]) -> Params:
    """The parameters with lists read as grids where they must be; CxrError for an unknown head,
    an unknown parameter or a value scikit-learn rejects."""
    head = get_head(name)
    known = {**head.classifier().get_params(), PCA: None}
    for key in params:
        if key not in known:
            raise CxrError(
                f"head {name!r} has no parameter {key!r}; valid: {', '.join(sorted(known))}"
            )
    checked = {}
    for key, value in params.items():
        value = _from_list(value)
        if isinstance(value, tuple) and not isinstance(value, Grid) and _invalid(head, key, value):
            value = Grid(value)  # a list where one value belongs: candidates for --search
        for candidate in value if isinstance(value, Grid) else (value,):
            problem = _invalid(head, key, candidate)
            if problem:
                raise CxrError(f"head {name!r}: {problem}")
        checked[key] = value
    single = {k: v for k, v in checked.items() if not isinstance(v, Grid)}
    problem = _invalid_all(head, single)
    if problem:
        raise CxrError(f"head {name!r}: {problem}")
    return checked


def _invalid(head: Head, key: str, value: Any) -> str:
    return _invalid_all(head, {key: value})


def _invalid_all(head: Head, params: Mapping[str, Any]) -> str:
    components = params.get(PCA)
    if components is not None and (
        isinstance(components, bool) or not isinstance(components, int) or components < 1
    ):
        return f"{PCA} must be a number of components (>= 1) or none, not {components!r}"
    try:
        # scikit-learn's own parameter constraints, checked now instead of inside a fold.
        settings = {k: v for k, v in {**head.defaults, **params}.items() if k != PCA}
        head.classifier(**settings)._validate_params()
    except (TypeError, ValueError) as exc:
        return str(exc)
    return ""


def grids(params: Mapping[str, Any] | None) -> dict[str, Grid]:
    """The user's grids among a head's parameters."""
    return {k: v for k, v in (params or {}).items() if isinstance(v, Grid)}


def effective_params(name: str, params: Mapping[str, Any] | None = None) -> Params:
    """Registry defaults overlaid with the user's parameters (what the report records); a grid
    is recorded as its list of candidates."""
    return {**get_head(name).defaults, **(params or {})}


def changed_params(name: str, params: Mapping[str, Any]) -> Params:
    """The parameters of a result (as recorded, or as its JSON holds them) that differ from the
    head's defaults: what tells two runs of the same head apart in a report."""
    defaults = get_head(name).defaults
    return {
        key: value
        for key, value in params.items()
        if key not in defaults or _plain(value) != _plain(defaults[key])
    }


def setting_text(value: Any) -> str:
    """A parameter value as ``--set`` takes it: ``0.001``, ``512,256``, ``none``, ``true``."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "none"
    if isinstance(value, list | tuple):
        return ",".join(setting_text(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _plain(value: Any) -> Any:
    """Tuples as lists, as JSON reads them back."""
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def build_head(
    name: str,
    params: Mapping[str, Any] | None = None,
    random_state: int | None = None,
    inputs: BaseEstimator | None = None,
) -> Pipeline:
    """A fresh, unfitted ``StandardScaler -> classifier`` Pipeline for one head; ``inputs``, a
    transformer that turns raw columns into features (covariates), goes first, inside the fold."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from cxr.classify.reduce import Reduce

    head = get_head(name)
    settings = {k: v for k, v in effective_params(name, params).items() if not isinstance(v, Grid)}
    settings.update({k: head.defaults[k] for k in grids(params) if k in head.defaults})
    components = settings.pop(PCA, None)
    if "random_state" in head.classifier().get_params():
        settings.setdefault("random_state", random_state)
    clf = head.classifier(**settings)
    if head.calibrated:
        clf = CalibratedClassifierCV(clf, method="sigmoid", cv=3, ensemble=False)
    steps = [("inputs", inputs)] if inputs is not None else []
    steps.append(("scale", StandardScaler()))
    if components is not None or PCA in grids(params):
        steps.append(("reduce", Reduce(components, random_state=random_state)))
    return Pipeline([*steps, ("clf", clf)])


def search_grid(name: str, params: Mapping[str, Any] | None = None) -> dict[str, list[Any]]:
    """The head's ``--search`` grid as Pipeline parameter names: the user's grids replace the
    registry's; parameters the user fixed to one value drop out."""
    head = get_head(name)
    fixed = params or {}
    grid = {k: list(v) for k, v in head.grid.items() if k not in fixed}
    grid.update({k: list(v) for k, v in grids(params).items()})
    return {
        ("reduce__n_components" if k == PCA else f"{head.prefix}{k}"): v for k, v in grid.items()
    }
