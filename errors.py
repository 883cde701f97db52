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


class Interrupted(CxrError):
    """Stopped by the user (Ctrl-C); the message says what was kept and how to go on."""

    exit_code = 130  # the shell's code for SIGINT
