"""The Dask cluster behind ``--scheduler``: one owner of the option for every command.

``--scheduler ADDRESS`` joins a running scheduler (``tcp://host:8786``, started with ``dask
scheduler`` and ``dask worker``, dask-jobqueue or dask-kubernetes); ``--scheduler local:N`` starts
a ``LocalCluster`` of N single-threaded worker processes on this machine and stops it at the end.
Dask is an optional dependency (``pip install 'cxr-transfer[dask]'``), imported only here and
only when the option is given.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from cxr.errors import CxrError

if TYPE_CHECKING:
    from distributed import Client

HELP = (
    "Run on Dask: a scheduler address (tcp://host:8786) or local:N for N worker processes "
    "here. Workers must see the data and the features folder at the same paths."
)
CONNECT_TIMEOUT = "10s"
_GUARD = (
    "--scheduler local:N: the worker processes did not start; a Python script that uses "
    'local:N must call cxr under `if __name__ == "__main__":` (the workers import it again)'
)


def local_workers(scheduler: str) -> int | None:
    """N of ``local:N``; None for an address. Either malformed raises CxrError, before any
    work and without contacting anything."""
    if not scheduler.startswith("local:"):
        host, _, port = scheduler.rpartition("://")[2].rpartition(":")
        if not host or not port.isdigit():
            raise CxrError(
                f"--scheduler {scheduler}: give a scheduler's address (tcp://HOST:PORT, as "
                "`dask scheduler` prints it) or local:N"
            )
        return None
    count = scheduler.partition(":")[2]
    if not count.isdigit() or int(count) < 1:
        raise CxrError(f"--scheduler {scheduler}: write local:N with N >= 1 worker processes")
    return int(count)


def worker_env(workers: int, cores: int | None = None) -> dict[str, str]:
    """Thread counts for ``workers`` processes sharing ``cores``: each gets its share, so N
    TensorFlow or BLAS pools do not each claim every core (the same rule for a remote worker:
    set these in its environment, one share per worker process on the host)."""
    share = str(max(1, (cores or os.cpu_count() or 1) // workers))
    return {
        "TF_NUM_INTRAOP_THREADS": share,
        "TF_NUM_INTEROP_THREADS": "1",
        "OMP_NUM_THREADS": share,
        "OPENBLAS_NUM_THREADS": share,
        "MKL_NUM_THREADS": share,
    }


@contextmanager
def connect(scheduler: str) -> Iterator[Client]:
    """A Dask client for ``--scheduler``, closed (and a local cluster stopped) on exit."""
    workers = local_workers(scheduler)
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise CxrError(
            f"--scheduler {scheduler} needs Dask: pip install 'cxr-transfer[dask]'"
        ) from None
    if workers is not None:
        if getattr(multiprocessing.current_process(), "_inheriting", False):
            raise CxrError(_GUARD)  # this is a worker importing the user's script again
        try:
            local = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",  # any free port: a second cluster must not warn
                silence_logs=logging.ERROR,
                env=worker_env(workers),
            )
        except RuntimeError as exc:  # "Nanny failed to start", most often the missing guard
            raise CxrError(f"{_GUARD} ({exc})") from None
        with local, Client(local) as client:
            yield client
        return
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as exc:
        raise CxrError(
            f"--scheduler {scheduler}: cannot reach a Dask scheduler "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no answer'}); "
            "start one with `dask scheduler` and workers with `dask worker ADDRESS`"
        ) from None
    with client:
        yield client


@contextmanager
def on_cluster(scheduler: str | None) -> Iterator[None]:
    """joblib's ``Parallel`` calls inside run as Dask tasks on ``scheduler`` (None: unchanged).

    joblib sends each large argument (the embeddings) to the workers once per call.
    """
    if scheduler is None:
        yield
        return
    from joblib import parallel_config

    with connect(scheduler), parallel_config(backend="dask"):
        yield
