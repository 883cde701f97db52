"""The tool's one exception type for user-facing errors, importable without any heavy library.

`cxr.cli` turns every CxrError into a one-line message on stderr and its ``exit_code``, in one
place (the command group's ``invoke``), so commands and library code only raise.
"""


class CxrError(Exception):
    """Bad input or an impossible request, explained in one line naming the file and the reason."""

    exit_code = 2


class RunFailed(CxrError):
    """The input was valid but the run did not reach its goal (nothing stored, --strict)."""

    exit_code = 1


class Stopped(BaseException):
    """A signal asked a command to stop (SIGTERM, or Ctrl-C under `cxr.interrupt.stopping`):
    raised in the main thread, so every ``finally`` runs and joblib stops its workers. Not a
    KeyboardInterrupt, which scikit-learn's MLP catches to end its training early (a model
    half fitted, saved or scored as if whole); like one, not an Exception."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class Interrupted(CxrError):
    """Stopped by the user (Ctrl-C) or a signal; the message says what was kept and how to go
    on. The exit status is the shell's for the signal: 130 for SIGINT, 143 for SIGTERM."""

    def __init__(self, message: str, signum: int = 2):
        super().__init__(message)
        self.exit_code = 128 + signum
