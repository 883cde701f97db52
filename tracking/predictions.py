"""The out-of-fold predictions a tracked run keeps as an artifact (JSON, never a pickle), so
that a later `cxr runs A B` can compare two runs paired on the same images; written and read
(checked) here."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import numpy as np

from cxr.classify.compare import Scored, row_keys
from cxr.classify.records import Validation
from cxr.classify.results import EvaluateReport, Outcome, result_name
from cxr.errors import CxrError

NAME = "predictions.json"
LIMIT = 512 * 2**20  # bytes of the artifact read back


class Predicted(TypedDict):
    """One result's test rows: stored path, bootstrap unit, true class index, probabilities."""

    name: str  # result_name, with the held-out value when there is one
    store: str  # the store's rows digest: same digest, same images
    classes: list[str]
    paths: list[str]
    groups: list[str]
    y: list[int]
    proba: list[list[float]]


def result_key(result: Mapping[str, Any]) -> str:
    """A result's name within its run: ``mobilenet_v2 + mlp``, ``... | held out: kermany``."""
    held = Validation.of(result).held_out
    return result_name(result) + (f" | held out: {held}" if held is not None else "")


def document(report: EvaluateReport, outcomes: Sequence[Outcome]) -> list[Predicted]:
    stores = report["provenance"]["stores"]
    found = []
    for result, out in zip(report["results"], outcomes, strict=True):
        assert out.paths is not None and out.groups is not None
        found.append(
            Predicted(
                name=result_key(result),
                store=str(stores.get(result["backbone"], {}).get("rows_sha256", "")),
                classes=list(result["classes"]),
                paths=[str(p) for p in out.paths],
                groups=[str(g) for g in out.groups],
                y=[int(v) for v in out.y],
                proba=np.round(np.asarray(out.proba, float), 6).tolist(),
            )
        )
    return found


def read(text: str, where: str) -> dict[str, tuple[Predicted, Scored]]:
    """A run's predictions by result name, each checked (lengths, class indices, shapes):
    CxrError naming the artifact otherwise."""
    try:
        items: Any = json.loads(text)
        out = {}
        for item in items:
            n, k = len(item["paths"]), len(item["classes"])
            y = np.asarray(item["y"], dtype=np.int64)
            proba = np.asarray(item["proba"], dtype=float).reshape(n, k)
            if (
                len(item["groups"]) != n
                or y.shape != (n,)
                or (n and not 0 <= y.min() <= y.max() < k)
            ):
                raise ValueError("rows do not line up")
            paths = np.asarray([str(p) for p in item["paths"]], dtype=object)
            units = np.asarray([str(g) for g in item["groups"]], dtype=object)
            name = str(item["name"])
            out[name] = (item, Scored(name, row_keys(paths), y, proba, units, None))
        return out
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CxrError(f"{where}: not a cxr predictions artifact ({exc})") from None
