"""Which engine runs the frozen backbone: TensorFlow (the reference) or OpenVINO (faster on CPUs).

Plain data and checks only (nothing heavy is imported here), so the CLI can validate
``--runtime`` and ``--precision`` before any model is loaded, and a run with nothing to compute
still never imports an engine.

TensorFlow is the default: it is the reference every other runtime is checked against, it is
always installed, and the default must not depend on what else happens to be installed (``auto``
does, so a store made with ``auto`` says which runtime it used, and its identity follows).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from cxr.errors import CxrError
from cxr.extract.settings import PRECISION, RUNTIME

RUNTIMES = ("tensorflow", "openvino", "auto")
PRECISIONS = ("f32", "bf16", "int8")
# Largest |difference| allowed between an f32 OpenVINO embedding and TensorFlow's on the probe.
F32_TOLERANCE = 1e-4
INSTALL = "pip install 'cxr-transfer[openvino]'"


@dataclass(frozen=True)
class Runtime:
    name: str  # tensorflow | openvino
    precision: str  # f32 | bf16 | int8 (quantised by NNCF, calibrated on the data set)

    def attrs(self) -> dict:
        return {"runtime": self.name, "precision": self.precision}


def openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def choose(runtime: str = RUNTIME, precision: str = PRECISION) -> Runtime:
    """The runtime a run uses; CxrError for impossible requests, before any work."""
    if runtime not in RUNTIMES:
        raise CxrError(f"`runtime` {runtime}: choose from {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise CxrError(f"`precision` {precision}: choose from {', '.join(PRECISIONS)}")
    if runtime == "auto":
        runtime = "openvino" if openvino_installed() else "tensorflow"
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
    return Runtime(runtime, precision)
