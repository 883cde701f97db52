"""Which weights each backbone gets, and where the file comes from (offline first).

Order for ``imagenet``: ``$CXR_WEIGHTS_DIR/<keras file name>``, then Keras' own cache
(``$KERAS_HOME/models`` or ``~/.keras/models``), then Keras' download. A local file given as
``NAME=PATH`` is used as is. The file's sha256 goes into every store so embeddings made with
different weights can never mix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cxr.errors import CxrError
from cxr.extract.hashing import HashCache
from cxr.extract.registry import BackboneSpec, get_spec

KINDS = ("imagenet", "random")


@dataclass(frozen=True)
class WeightsChoice:
    kind: str  # imagenet | file | random
    path: Path | None = None
    seed: int = 0


@dataclass(frozen=True)
class ResolvedWeights:
    kind: str
    path: Path | None
    sha256: str
    seed: int

    def attrs(self) -> dict:
        return {
            "weights": self.kind,
            "weights_file": self.path.name if self.path else "",
            "weights_sha256": self.sha256,
            "weights_seed": self.seed if self.kind == "random" else -1,
            "weights_path": str(self.path.absolute()) if self.path else "",
        }


def parse_weights(values: list[str], backbones: list[str], seed: int) -> dict[str, WeightsChoice]:
    """``["random", "mobilenet_v2=/w.h5"]`` -> one choice per backbone; bare word: default."""
    default = WeightsChoice("imagenet")
    per_backbone: dict[str, WeightsChoice] = {}
    for value in values:
        name, sep, target = value.partition("=")
        if not sep:
            default = _choice(value, seed, value)
            continue
        get_spec(name)
        if name not in backbones:
            raise CxrError(
                f"`weights` {value}: {name!r} is not a backbone of this run "
                f"({', '.join(backbones)})"
            )
        per_backbone[name] = _choice(target, seed, value)
    return {b: per_backbone.get(b, default) for b in backbones}


def _choice(target: str, seed: int, raw: str) -> WeightsChoice:
    if target in KINDS:
        return WeightsChoice(target, seed=seed)
    path = Path(target).expanduser()
    if "=" not in raw:
        raise CxrError(f"`weights` {raw}: expected imagenet, random or NAME=PATH")
    if not path.is_file() and path.name == target:  # a bare file name: the offline folders
        path = next((f / target for f in _local_folders() if (f / target).is_file()), path)
    if path.is_dir():
        raise CxrError(f"`weights` {raw}: {path} is a folder; name the weight file in it")
    if not path.is_file():
        looked = "" if path.name != target else f" (nor in {', '.join(map(str, _local_folders()))})"
        raise CxrError(f"`weights` {raw}: weight file {path} does not exist{looked}")
    return WeightsChoice("file", path=path)


def resolve(
    spec: BackboneSpec, choice: WeightsChoice, hashes: HashCache | None = None
) -> ResolvedWeights:
    """Find (or download) the weight file and hash it; random weights have no file."""
    if choice.kind == "random":
        return ResolvedWeights("random", None, "", choice.seed)
    if choice.kind == "file" and choice.path is not None:  # parse_weights gives files a path
        path = choice.path
    else:
        path = _imagenet_file(spec)
    return ResolvedWeights(choice.kind, path, (hashes or HashCache()).sha256(path, None), -1)


def _imagenet_file(spec: BackboneSpec) -> Path:
    for folder in _local_folders():
        candidate = folder / spec.weights_file
        if candidate.is_file():
            return candidate
    try:
        from cxr.extract.quiet_tf import import_tensorflow

        import_tensorflow()  # Keras imports TensorFlow: without its start-up chatter
        from keras.utils import get_file

        return Path(get_file(spec.weights_file, spec.weights_url, cache_subdir="models"))
    except Exception as exc:  # any download failure: offline, proxy, HTTP error
        raise CxrError(
            f"ImageNet weights for {spec.name} are not available: downloading {spec.weights_url} "
            f"failed ({_reason(exc)}). Offline: put {spec.weights_file} in $CXR_WEIGHTS_DIR "
            f"or ~/.keras/models, or pass `weights` {spec.name}=PATH"
        ) from None


def _reason(exc: Exception) -> str:
    """The cause a user can act on: Keras wraps the network error in a bare Exception."""
    cause: BaseException = exc
    while (deeper := cause.__cause__ or cause.__context__) is not None:
        cause = deeper
    if cause is not exc and str(cause).strip():
        return f"{type(cause).__name__}: {str(cause).strip().splitlines()[0]}"[:300]
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


def _local_folders() -> list[Path]:
    folders = []
    if os.environ.get("CXR_WEIGHTS_DIR"):
        folders.append(Path(os.environ["CXR_WEIGHTS_DIR"]).expanduser())
    keras_home = os.environ.get("KERAS_HOME", str(Path("~/.keras").expanduser()))
    folders.append(Path(keras_home) / "models")
    return folders
