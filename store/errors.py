"""The one exception type for user-facing errors.

`cli.py` turns it into a one-line message and exit status 2.
"""


class CxrError(Exception):
    """Bad input or an impossible request, explained in one line naming the file and the reason."""
