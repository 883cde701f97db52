"""Model files from anyone: what a skops file may hold, checked before and after skops builds it.

skops constructs only the types a file declares and the caller trusts, but trusting a type is
not trusting its content: a tree's child indices or a KD-tree's index array can point anywhere,
and scikit-learn's compiled code follows them without bounds checks (a segmentation fault, or a
prediction that never returns). So a file is read in five steps, each refusing with one line:

1. the archive: at most ``MAX_MEMBERS`` members, ``schema.json`` at most ``MAX_SCHEMA_BYTES``
   (declared and read), all members together at most ``MAX_INFLATION`` times the file's size
   (cxr writes them uncompressed), and every ``.npy`` member's header consistent with its size,
   so nothing is allocated that the file does not hold;
2. the schema: every node anywhere in it is on ``allowed()``, by its loader and its type: the
   types of cxr's own heads (``classify/heads.py``) and nothing else; skops' defaults (every
   scikit-learn estimator, every NumPy and SciPy ufunc) are not trusted, and no function is;
3. skops builds the objects, trusting exactly the types the schema names;
4. the bundle: its keys and their types (``check_bundle``);
5. the pipeline (``check_pipeline``): a head's steps, every decision tree's node arrays, the
   kNN's training vectors (its KD/ball tree is rebuilt from them), the SVM's support arrays;
   then one prediction on a zero vector must give probabilities.

``cxr train`` runs step 5 on what it fitted, so it never saves a model that would be refused.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np

from cxr.classify.heads import HEADS, load_class

MAX_MEMBERS = 100_000  # a 100-tree forest has ~500
MAX_SCHEMA_BYTES = 64 << 20  # a 100-tree forest's schema is under 1 MB
MAX_INFLATION = 10  # members' declared sizes, summed, against the file's own size
INFLATION_SLACK = 64 << 20
MAX_DEPTH = 200  # JSON nesting of the schema (cxr's heads need under 60)
MAX_JOBS = 1024  # an n_jobs above this would start that many threads at prediction
FINGERPRINT_TYPES = {  # store.schema.FINGERPRINT, as a model file must hold it
    "backbone": str,
    "input_size": int,
    "resize": str,
    "weights_sha256": str,
    "weights_seed": int,
}
# Absent in older model files: runtime, precision (before cxr 0.3), decode (exact).
OPTIONAL_FINGERPRINT = {"runtime": str, "precision": str, "decode": str}
SAFE_METRICS = {"euclidean", "l2", "minkowski", "manhattan", "l1", "cityblock", "chebyshev"}


class ModelProblem(Exception):
    """Why a model file (or a fitted pipeline) cannot be used: one line, without the file."""


# ---- 1. the archive --------------------------------------------------------------------------


def check_archive(fh: BinaryIO, size: int) -> dict:
    """The parsed schema of a skops archive whose members were all checked (ModelProblem)."""
    try:
        archive = zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ModelProblem(f"not a readable zip archive ({exc})") from None
    with archive:
        members = archive.infolist()
        if len(members) > MAX_MEMBERS:
            raise ModelProblem(f"{len(members):,} archive members (limit {MAX_MEMBERS:,})")
        declared = sum(m.file_size for m in members)
        limit = MAX_INFLATION * size + INFLATION_SLACK
        if declared > limit:
            raise ModelProblem(
                f"its members unpack to {declared:,} bytes from a {size:,}-byte file "
                f"(limit {limit:,}): possible zip bomb"
            )
        try:
            schema = archive.getinfo("schema.json")
        except KeyError:
            raise ModelProblem("no schema.json: not a skops file") from None
        if schema.file_size > MAX_SCHEMA_BYTES:
            raise ModelProblem(
                f"schema.json declares {schema.file_size:,} bytes (limit {MAX_SCHEMA_BYTES:,})"
            )
        try:
            with archive.open(schema) as stream:
                text = stream.read(MAX_SCHEMA_BYTES + 1)
            if len(text) > MAX_SCHEMA_BYTES:
                raise ModelProblem(f"schema.json is larger than {MAX_SCHEMA_BYTES:,} bytes")
            for member in members:
                if member.filename.endswith(".npy"):
                    _check_npy(archive, member)
            document = json.loads(text)
        except ModelProblem:
            raise
        except RecursionError:
            raise ModelProblem("schema.json is nested too deep to parse") from None
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as exc:
            raise ModelProblem(f"a damaged archive ({type(exc).__name__}: {exc})") from None
        except ValueError as exc:
            raise ModelProblem(f"schema.json is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(document, dict):
        raise ModelProblem("schema.json does not describe an object")
    return document


def _check_npy(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> None:
    """The array a .npy member declares must be exactly the bytes it holds (no object dtype)."""
    with archive.open(member) as stream:
        try:
            version = np.lib.format.read_magic(stream)
            reader = {
                (1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0,
            }.get(version)
            if reader is None:
                raise ValueError(f"npy format {version}")
            shape, _, dtype = reader(stream)
        except (ValueError, SyntaxError, TypeError) as exc:
            raise ModelProblem(f"{member.filename}: not a NumPy array ({exc})") from None
        header = stream.tell()
    if dtype.hasobject:
        raise ModelProblem(f"{member.filename}: an array of Python objects")
    expected = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if header + expected != member.file_size:
        raise ModelProblem(
            f"{member.filename}: declares a {'x'.join(map(str, shape))} {dtype} array "
            f"({expected:,} bytes) but holds {member.file_size - header:,}"
        )


# ---- 2. the schema ---------------------------------------------------------------------------


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__name__}"


def allowed() -> dict[str, frozenset[str]]:
    """skops loader -> the types it may build: what cxr's heads hold when fitted, and no more.

    Built from the head registry's own classes (each head's ``fitted_types``), so scikit-learn
    moving a private module cannot open a gap (or refuse cxr's own files), and a head added to
    the registry is admitted with it. The heads need no function, method or partial at all.
    """
    from sklearn.decomposition import PCA
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree._tree import Tree

    from cxr.classify.reduce import Reduce

    estimators = [
        Pipeline,
        StandardScaler,
        Reduce,
        PCA,
        *(load_class(path) for head in HEADS.values() for path in head.fitted_types),
    ]
    scalars = (np.float64, np.float32, np.int64, np.int32, np.uint8, np.bool_, np.str_)
    return {
        "DictNode": frozenset({"builtins.dict"}),
        "ListNode": frozenset({"builtins.list"}),
        "TupleNode": frozenset({"builtins.tuple"}),
        "JsonNode": frozenset(f"builtins.{t}" for t in ("str", "int", "float", "bool", "NoneType")),
        "TypeNode": frozenset({"builtins.str", "builtins.int"}),  # a dict's key types
        "NdArrayNode": frozenset({"numpy.ndarray", *(f"numpy.{t.__name__}" for t in scalars)}),
        "RandomStateNode": frozenset({_name(np.random.RandomState)}),
        "TreeNode": frozenset({_name(Tree)}),
        "ObjectNode": frozenset(_name(t) for t in estimators),
    }


def untrusted(schema: dict) -> list[str]:
    """Every type (or loader) in the schema that ``allowed()`` does not admit, sorted."""
    rules = allowed()
    found, stack = set(), [(schema, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ModelProblem(f"schema.json is nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            if "__loader__" in node:
                loader = node["__loader__"]
                name = f"{node.get('__module__')}.{node.get('__class__')}"
                if not isinstance(loader, str) or loader not in rules:
                    found.add(f"{name} (as {loader})")
                elif name not in rules[loader]:
                    found.add(name)
            stack.extend((value, depth + 1) for value in node.values())
        elif isinstance(node, list):
            stack.extend((value, depth + 1) for value in node)
    return sorted(found)


def trusted_names(schema: dict) -> list[str]:
    """The types the schema names (all allowed by now): what skops is told to trust."""
    names, stack = set(), [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__loader__" in node:
                names.add(f"{node.get('__module__')}.{node.get('__class__')}")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return sorted(names)


def read_skops(path: Path) -> object:
    """Steps 1-3: the object a skops file holds; ModelProblem (archive), UntrustedTypes, or
    any exception skops raised on a damaged file."""
    import skops.io as sio

    with open(path, "rb") as fh:
        schema = check_archive(fh, os.fstat(fh.fileno()).st_size)
        refused = untrusted(schema)
        if refused:
            raise UntrustedTypes(refused)
        fh.seek(0)
        return sio.load(fh, trusted=trusted_names(schema))


class UntrustedTypes(ModelProblem):
    def __init__(self, names: list[str]):
        super().__init__(", ".join(names))
        self.names = names


# ---- 4. the bundle ---------------------------------------------------------------------------


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _typed(value, kind: type) -> bool:
    return _is_int(value) if kind is int else isinstance(value, kind)


def check_bundle(bundle: Mapping) -> None:
    """The bundle's own fields, as `predict` and `train` read them (ModelProblem)."""
    classes = bundle["classes"]
    if (
        not isinstance(classes, list)
        or len(classes) < 2
        or not all(isinstance(c, str) and c for c in classes)
        or len(set(classes)) != len(classes)
    ):
        raise ModelProblem("classes must be a list of two or more distinct names")
    if not _is_int(bundle["n_features"]) or bundle["n_features"] < 1:
        raise ModelProblem(f"n_features is {bundle['n_features']!r}, not a positive number")
    for key in ("backbone", "weights"):
        if not isinstance(bundle[key], str) or not bundle[key]:
            raise ModelProblem(f"{key} is {bundle[key]!r}, not a name")
    fingerprint = bundle["fingerprint"]
    if not isinstance(fingerprint, dict):
        raise ModelProblem("fingerprint is not a mapping")
    for key, kind in {**FINGERPRINT_TYPES, **OPTIONAL_FINGERPRINT}.items():
        if key not in fingerprint and key in OPTIONAL_FINGERPRINT:
            continue
        if key not in fingerprint:
            raise ModelProblem(f"the fingerprint lacks {key}")
        if not _typed(fingerprint[key], kind):
            raise ModelProblem(f"fingerprint {key} is {fingerprint[key]!r}, not a {kind.__name__}")
    if fingerprint["backbone"] != bundle["backbone"]:
        raise ModelProblem("the fingerprint names another backbone than the model")
    for key, kind in (("head", str), ("weights_file", str), ("weights_path", str)):
        if bundle.get(key) is not None and not isinstance(bundle[key], kind):
            raise ModelProblem(f"{key} is {bundle[key]!r}, not a {kind.__name__}")
    for key in ("task", "versions"):
        if bundle.get(key) is not None and not isinstance(bundle[key], dict):
            raise ModelProblem(f"{key} is not a mapping")


# ---- 5. the pipeline -------------------------------------------------------------------------


def check_pipeline(pipeline, n_features: int, n_classes: int) -> None:
    """A head's fitted Pipeline, checked so that predicting cannot crash, hang or lie about its
    inputs; the kNN's neighbour tree is rebuilt in place (ModelProblem)."""
    from sklearn.pipeline import Pipeline

    from cxr.classify.reduce import Reduce

    if type(pipeline) is not Pipeline:
        raise ModelProblem(f"the model is a {type(pipeline).__name__}, not a Pipeline")
    steps = pipeline.steps
    if (
        not isinstance(steps, list)
        or not steps
        or not all(isinstance(s, tuple) and len(s) == 2 and isinstance(s[0], str) for s in steps)
    ):
        raise ModelProblem("the Pipeline's steps are not a list of (name, estimator)")
    from sklearn.preprocessing import StandardScaler

    checks = _classifier_checks()
    *transforms, (_, final) = steps
    for name, step in transforms:
        if type(step) not in (StandardScaler, Reduce):
            raise ModelProblem(f"step {name!r} is a {type(step).__name__}, not a head's step")
    if type(final) not in checks:
        raise ModelProblem(f"the last step is a {type(final).__name__}, not a cxr head")
    for estimator in _estimators(pipeline):
        jobs = getattr(estimator, "n_jobs", None)
        if jobs is not None and not (_is_int(jobs) and abs(jobs) <= MAX_JOBS):
            raise ModelProblem(f"{type(estimator).__name__}.n_jobs is {jobs!r}")
    classes = np.asarray(getattr(final, "classes_", None))
    if (
        classes.ndim != 1
        or classes.dtype.kind not in "iu"
        or len(classes) < 2
        or np.any(np.diff(classes) <= 0)
        or classes[0] < 0
        or classes[-1] >= n_classes
    ):
        raise ModelProblem(
            f"the classifier's classes_ are not indices of the model's {n_classes} classes"
        )
    zeros = np.zeros((1, n_features), np.float32)
    try:
        width = _run(lambda: pipeline[:-1].transform(zeros)).shape[1]
        checks[type(final)](final, width)
        proba = _run(lambda: pipeline.predict_proba(zeros))
    except ModelProblem:
        raise
    except (AttributeError, TypeError, ValueError, IndexError, KeyError) as exc:
        raise ModelProblem(f"inconsistent ({type(exc).__name__}: {_line(exc)})") from None
    if (
        np.shape(proba) != (1, len(classes))
        or not np.all(np.isfinite(proba))
        or abs(float(np.sum(proba)) - 1.0) > 1e-6
    ):
        raise ModelProblem("it does not predict probabilities (NaN, infinite or wrong shape)")


def _run(fn):
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn()
    except Exception as exc:  # the estimator's own arrays disagree: one line, not a traceback
        raise ModelProblem(f"it does not run ({type(exc).__name__}: {_line(exc)})") from None


def _line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:200]


def _estimators(pipeline) -> list:
    found = []
    for _, step in pipeline.steps:
        found.append(step)
        found.extend(getattr(step, "estimators_", None) or [])
        for calibrated in getattr(step, "calibrated_classifiers_", None) or []:
            found.append(getattr(calibrated, "estimator", None))
    return found


def _classifier_checks() -> dict:
    """The type of each head's last fitted step -> its check. A classifier whose arrays C code
    reads without bounds has its own check here; the others are numpy only (the smoke
    prediction decides)."""
    numpy_only = lambda estimator, width: None  # noqa: E731
    own = {
        "sklearn.calibration.CalibratedClassifierCV": _check_calibrated_svm,
        "sklearn.neighbors.KNeighborsClassifier": _check_knn,
        "sklearn.ensemble.RandomForestClassifier": _check_forest,
    }
    return {load_class(h.fitted): own.get(h.fitted, numpy_only) for h in HEADS.values()}


def _array(owner: str, value, *, ndim: int, kind: str, length: int | None = None) -> np.ndarray:
    """``value`` as an ndarray of that rank and dtype kind (and first dimension), finite."""
    if not isinstance(value, np.ndarray) or value.ndim != ndim or value.dtype.kind not in kind:
        what = "numbers" if "f" in kind else "integers"
        raise ModelProblem(f"{owner} is not a {ndim}-D array of {what}")
    if length is not None and value.shape[0] != length:
        raise ModelProblem(f"{owner} has {value.shape[0]} rows, expected {length}")
    if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
        raise ModelProblem(f"{owner} holds NaN or infinite values")
    return value


def _check_forest(forest, width: int) -> None:
    from sklearn.tree import DecisionTreeClassifier
    from sklearn.tree._tree import Tree

    n_classes = len(forest.classes_)
    if forest.n_outputs_ != 1 or forest.n_classes_ != n_classes:
        raise ModelProblem("the forest's outputs or classes are inconsistent")
    trees = forest.estimators_
    if not isinstance(trees, list) or not trees:
        raise ModelProblem("the forest has no list of trees")
    for k, tree in enumerate(trees):
        if type(tree) is not DecisionTreeClassifier or type(tree.tree_) is not Tree:
            raise ModelProblem(f"tree {k} of the forest is not a decision tree")
        if tree.n_outputs_ != 1 or tree.n_classes_ != n_classes:
            raise ModelProblem(f"tree {k} of the forest has other classes than the forest")
        _check_tree(tree.tree_, width, n_classes, f"tree {k} of the forest")


def _check_tree(tree, width: int, n_classes: int, owner: str) -> None:
    """Children point forward inside the node arrays (no cycle, nothing outside), internal nodes
    split on a feature that exists at a finite threshold, and every node has class values."""
    n = tree.node_count
    if tree.n_features != width or tree.n_outputs != 1 or list(tree.n_classes) != [n_classes]:
        raise ModelProblem(f"{owner} was built for other inputs or classes")
    left, right = tree.children_left, tree.children_right
    feature, threshold, value = tree.feature, tree.threshold, tree.value
    if n < 1 or value.shape != (n, 1, n_classes):
        raise ModelProblem(f"{owner} has {n} nodes but values of shape {value.shape}")
    index = np.arange(n)
    leaf = (left == -1) & (right == -1)
    inner = ~leaf
    bad = inner & ~((left > index) & (left < n) & (right > index) & (right < n))
    if bad.any():
        node = int(np.flatnonzero(bad)[0])
        raise ModelProblem(
            f"{owner}: node {node} points to nodes {int(left[node])} and {int(right[node])}, "
            f"outside its {n} nodes or back up the tree"
        )
    split = feature[inner]
    if np.any((split < 0) | (split >= width)):
        raise ModelProblem(f"{owner} splits on a feature outside the model's {width}")
    if not np.all(np.isfinite(threshold[inner])):
        raise ModelProblem(f"{owner} has NaN or infinite thresholds")
    if not np.all(np.isfinite(value)) or np.any(value < 0):
        raise ModelProblem(f"{owner} has negative, NaN or infinite class values")


def _check_knn(knn, width: int) -> None:
    from sklearn.neighbors import BallTree, KDTree

    fit_X = _array("the kNN's training vectors", knn._fit_X, ndim=2, kind="f")
    n = len(fit_X)
    if fit_X.shape[1] != width or knn.n_samples_fit_ != n or knn.outputs_2d_:
        raise ModelProblem("the kNN's training vectors do not fit its inputs")
    y = _array("the kNN's training labels", knn._y, ndim=1, kind="iu", length=n)
    if n and (y.min() < 0 or y.max() >= len(knn.classes_)):
        raise ModelProblem("the kNN's training labels are not indices of its classes")
    if not _is_int(knn.n_neighbors) or not 1 <= knn.n_neighbors <= n:
        raise ModelProblem(f"the kNN asks for {knn.n_neighbors!r} neighbours of {n} rows")
    if knn.weights not in ("uniform", "distance"):
        raise ModelProblem(f"the kNN's weights are {knn.weights!r}")
    params = knn.effective_metric_params_
    if (
        knn.effective_metric_ not in SAFE_METRICS
        or not isinstance(params, dict)
        or set(params) - {"p"}
        or not all(isinstance(v, (int, float)) and v >= 1 for v in params.values())
    ):
        raise ModelProblem(f"the kNN's metric is {knn.effective_metric_!r} {params!r}")
    trees = {"kd_tree": KDTree, "ball_tree": BallTree, "brute": None}
    if knn._fit_method not in trees:
        raise ModelProblem(f"the kNN's search is {knn._fit_method!r}")
    if trees[knn._fit_method] is None:
        knn._tree = None
        return
    if not _is_int(knn.leaf_size) or knn.leaf_size < 1:
        raise ModelProblem(f"the kNN's leaf size is {knn.leaf_size!r}")
    # The stored tree's index arrays are never used: built again from the checked vectors
    # (deterministic, so the same tree an honest file held).
    knn._tree = trees[knn._fit_method](fit_X, knn.leaf_size, metric=knn.effective_metric_, **params)


def _check_calibrated_svm(model, width: int) -> None:
    from sklearn.calibration import _CalibratedClassifier, _SigmoidCalibration
    from sklearn.svm import SVC

    calibrated = model.calibrated_classifiers_
    if not isinstance(calibrated, list) or not calibrated:
        raise ModelProblem("the calibrated SVM has no calibrated classifiers")
    for part in calibrated:
        if type(part) is not _CalibratedClassifier or type(part.estimator) is not SVC:
            raise ModelProblem("the calibrated model is not a calibrated SVM")
        if not isinstance(part.calibrators, list) or not all(
            type(c) is _SigmoidCalibration and np.isfinite([c.a_, c.b_]).all()
            for c in part.calibrators
        ):
            raise ModelProblem("the SVM's calibrators are not finite sigmoids")
        _check_svc(part.estimator, width)


def _check_svc(svc, width: int) -> None:
    """The arrays libsvm reads by the counts in ``_n_support``, without bounds checks."""
    if svc.kernel not in ("linear", "poly", "rbf", "sigmoid") or svc._impl != "c_svc":
        raise ModelProblem(f"the SVM's kernel is {svc.kernel!r} ({svc._impl!r})")
    if svc._sparse is not False:
        raise ModelProblem("the SVM is a sparse one")
    vectors = _array("the SVM's support vectors", svc.support_vectors_, ndim=2, kind="f")
    count = len(vectors)
    if vectors.dtype != np.float64 or not vectors.flags.c_contiguous or vectors.shape[1] != width:
        raise ModelProblem("the SVM's support vectors do not fit its inputs")
    if tuple(np.shape(svc.shape_fit_))[-1:] != (2,) or svc.shape_fit_[1] != width:
        raise ModelProblem("the SVM was fitted on other inputs")
    n_support = _array("the SVM's support counts", svc._n_support, ndim=1, kind="i")
    k = len(n_support)
    pairs = k * (k - 1) // 2
    if k < 2 or k != len(svc.classes_) or n_support.min() < 0 or n_support.sum() != count:
        raise ModelProblem("the SVM's support counts do not add up to its support vectors")
    expected = {
        "_dual_coef_": (k - 1, count),
        "_intercept_": (pairs,),
        "support_": (count,),
        "class_weight_": (k,),
    }
    for name, shape in expected.items():
        value = getattr(svc, name)
        kind = "i" if name == "support_" else "f"
        _array(f"the SVM's {name}", value, ndim=len(shape), kind=kind)
        if value.shape != shape:
            raise ModelProblem(f"the SVM's {name} has shape {value.shape}, expected {shape}")
    for name in ("_probA", "_probB"):
        value = _array(f"the SVM's {name}", getattr(svc, name), ndim=1, kind="f")
        if len(value) not in (0, pairs):
            raise ModelProblem(f"the SVM's {name} has {len(value)} values")
    numbers = (svc._gamma, svc.coef0)
    if not all(isinstance(v, (int, float, np.floating)) and np.isfinite(v) for v in numbers):
        raise ModelProblem("the SVM's gamma or coef0 is not a finite number")
    if not _is_int(svc.degree) or svc.degree < 0:
        raise ModelProblem(f"the SVM's degree is {svc.degree!r}")
