"""Import TensorFlow without its C++ start-up chatter on a clinician's terminal.

TensorFlow writes "failed call to cuInit: CUDA error", "Could not find cuda drivers" and oneDNN
notices straight to file descriptor 2 before its log level is read, so the level alone cannot
hide them. Unless the user set ``TF_CPP_MIN_LOG_LEVEL`` (then they asked for TensorFlow's own
logs), the import runs with fd 2 captured; if the import fails, the captured text is printed
before the error so nothing needed for a bug report is lost.
"""

from __future__ import annotations

import os
import sys
import tempfile
from types import ModuleType


def import_tensorflow() -> ModuleType:
    if "tensorflow" in sys.modules or "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        import tensorflow

        return tensorflow
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # errors still reach Python as exceptions
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import keras  # noqa: F401  (its import initialises TensorFlow's devices too)
            import tensorflow
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    return tensorflow
