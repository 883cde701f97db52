"""Ctrl-C and SIGTERM end a command cleanly: workers stopped, one line, the shell's status.

Python's default for SIGTERM ends the process at once: no ``finally`` runs, and joblib's worker
processes, which hold the command's output pipes, go on fitting (a caller waiting for the
output then waits for them); and Ctrl-C's KeyboardInterrupt is caught by scikit-learn's MLP,
which then returns a half-fitted model as if it were done. Under `stopping`, both signals raise
`cxr.errors.Stopped` in the main thread, so every ``finally`` runs (temporary files removed; a
file is only ever replaced whole) and joblib aborts its pool; `stop_workers`
then kills whatever worker of the reusable pool is left; the pool's own threads, racing that
shutdown, are not reported. A second signal while stopping ends the process at once.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from cxr.errors import Stopped

SIGNALS = (signal.SIGINT, signal.SIGTERM)


STOPS = (KeyboardInterrupt, Stopped)  # what ends a command early, from the user


def signal_of(exc: BaseException) -> int:
    """The signal behind a stop (SIGINT for a KeyboardInterrupt)."""
    return exc.signum if isinstance(exc, Stopped) else signal.SIGINT


def _stop(signum: int, frame: Any) -> None:
    for number in SIGNALS:
        signal.signal(number, _now)
    threading.excepthook = _quiet  # the pool's threads, racing its shutdown, until the exit
    # joblib's exit hook may find its memmapping folder still in use by a worker being killed;
    # the folder stays registered with loky's resource tracker, which removes it once they end
    warnings.filterwarnings("ignore", "Failed to delete temporary folder", UserWarning, "joblib")
    raise Stopped(signum)


def _quiet(args: Any) -> None:
    """Exceptions in other threads once the command is stopping (joblib's pool manager raises
    a KeyError when its work items are dropped under it)."""


def _now(signum: int, frame: Any) -> None:
    os._exit(128 + signum)  # asked twice: no more cleaning up


@contextmanager
def stopping() -> Iterator[None]:
    """SIGINT and SIGTERM raise in the main thread while the block runs (elsewhere: as is)."""
    try:
        previous = {number: signal.signal(number, _stop) for number in SIGNALS}
    except ValueError:  # not the main thread: signals are the main thread's business
        yield
        return
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def quiet_tracker() -> None:
    """Start loky's resource tracker, if it is not running, with its stderr on /dev/null.

    The tracker is the daemon that removes joblib's memmapping folders, and it outlives the
    command. Stopped mid-fit, joblib's own cleanup (its result thread racing the main thread's
    abort) may unregister a folder twice, and the tracker then prints a KeyError traceback under
    the command's one line. It still removes every folder; only its chatter is dropped."""
    from joblib.externals.loky.backend import resource_tracker

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)  # the tracker inherits fd 2 as it starts
            resource_tracker.ensure_running()
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def stop_workers() -> None:
    """Kill the workers of joblib's reusable process pool, if one was started (a worker busy
    with a fit would otherwise run on, holding the command's output pipes)."""
    if "joblib" not in sys.modules:
        return
    from joblib.externals.loky import reusable_executor

    executor = getattr(reusable_executor, "_executor", None)  # the one pool joblib reuses
    if executor is not None:
        executor.shutdown(wait=True, kill_workers=True)
