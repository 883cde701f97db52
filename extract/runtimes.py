"""Which engine runs the frozen backbone: TensorFlow (the reference) or OpenVINO (faster on CPUs).

Plain data and checks only (nothing heavy is imported here), so the CLI can validate
``--runtime`` and ``--precision`` before any model is loaded, and a run with nothing to compute
still never imports an engine.

``auto`` is the default: the fastest runtime installed whose f32 embeddings match TensorFlow's
(OpenVINO on a CPU; TensorFlow where a GPU is visible to it, or when OpenVINO is missing), and
the run says which and why. The choice cannot change a result: f32 runtimes agree within
``F32_TOLERANCE`` (checked by the probe, and on stored films before a second runtime adds rows
to a store), so a store's identity holds its precision, never its engine.

Deciding costs no TensorFlow import on a CPU box: without a GPU device node (NVIDIA, ROCm,
WSL) or the Metal plugin no GPU can be visible to TensorFlow; only where one may be is
TensorFlow asked (it loads anyway there, to run the model).
"""

from __future__ import annotations

import glob
import importlib.util
import os
from dataclasses import dataclass, field

from cxr.errors import CxrError
from cxr.extract.settings import PRECISION, REFERENCE, RUNTIME

RUNTIMES = ("auto", "tensorflow", "openvino")
PRECISIONS = ("f32", "bf16", "int8")
# Largest |difference| allowed between an f32 OpenVINO embedding and TensorFlow's on the probe.
F32_TOLERANCE = 1e-4
INSTALL = "pip install 'cxr-transfer[openvino]'"
# Device nodes through which TensorFlow can see a GPU: NVIDIA (CUDA), AMD (ROCm), WSL (DirectML).
GPU_DEVICES = ("/dev/nvidia[0-9]*", "/dev/kfd", "/dev/dxg")


@dataclass(frozen=True)
class Runtime:
    name: str  # tensorflow | openvino
    precision: str  # f32 | bf16 | int8 (quantised by NNCF, calibrated on the data set)
    why: str = field(default="", compare=False)  # auto's reason ("" when asked by name)

    def attrs(self) -> dict:
        """The store's part: its precision (identity) and this runtime (provenance)."""
        from cxr.store.schema import runtimes_text

        return {"runtimes": runtimes_text([self.name]), "precision": self.precision}

    def said(self) -> str:
        """The line a run prints when ``auto`` chose (its reason and how to choose another)."""
        return f"runtime: {self.name} ({self.why})"


def openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def choose(runtime: str = RUNTIME, precision: str = PRECISION) -> Runtime:
    """The runtime a run uses; CxrError for impossible requests, before any work."""
    if runtime not in RUNTIMES:
        raise CxrError(f"`runtime` {runtime}: choose from {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise CxrError(f"`precision` {precision}: choose from {', '.join(PRECISIONS)}")
    why = ""
    if runtime == "auto":
        runtime, why = _auto(precision)
    if runtime == "openvino" and not openvino_installed():
        raise CxrError(f"`runtime` openvino: OpenVINO is not installed ({INSTALL})")
    if precision != "f32" and runtime != "openvino":
        raise CxrError(
            f"`precision` {precision} needs `runtime` openvino (TensorFlow runs f32 here)"
        )
    if precision == "int8" and importlib.util.find_spec("nncf") is None:
        raise CxrError(f"`precision` int8: NNCF is not installed ({INSTALL})")
    if precision == "bf16":
        import openvino as ov

        capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        if "BF16" not in capabilities:
            raise CxrError(
                "`precision` bf16: this CPU has no bf16 support "
                f"(OpenVINO reports {', '.join(capabilities)})"
            )
    return Runtime(runtime, precision, why)


def _auto(precision: str) -> tuple[str, str]:
    """``auto``'s runtime and reason, in words a run prints."""
    if precision != "f32":
        return "openvino", f"auto: precision {precision} runs on OpenVINO"
    if not openvino_installed():
        return REFERENCE, f"auto: OpenVINO is not installed; {INSTALL} runs faster on CPUs"
    if gpu_visible():
        return REFERENCE, "auto: a GPU is visible to TensorFlow; `runtime` openvino to change"
    return "openvino", f"auto: fastest installed on CPU; `runtime` {REFERENCE} to change"


def gpu_visible() -> bool:
    """Whether TensorFlow sees a GPU, asked only where one may be (a GPU device node, or the
    Metal plugin): on a CPU box the answer costs no TensorFlow import."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1"):
        return False
    maybe = any(glob.glob(pattern) for pattern in GPU_DEVICES)
    if not maybe and importlib.util.find_spec("tensorflow_metal") is None:
        return False
    from cxr.extract.quiet_tf import import_tensorflow

    return bool(import_tensorflow().config.list_physical_devices("GPU"))
