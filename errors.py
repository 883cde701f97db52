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


class Stopped(KeyboardInterrupt):
    """A signal asked the run to stop (SIGTERM; Ctrl-C stays a KeyboardInterrupt): raised in the
    main thread like Ctrl-C, so every ``finally`` runs and joblib stops its workers."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class Interrupted(CxrError):
    """Stopped by the user (Ctrl-C) or a signal; the message says what was kept and how to go
    on. The exit status is the shell's for the signal: 130 for SIGINT, 143 for SIGTERM."""

    def __init__(self, message: str, signum: int = 2):
        super().__init__(message)
        self.exit_code = 128 + signum
