"""One exception type for every failure a user can cause or fix.

The CLI turns an ``FgfemError`` into a single readable line and a non-zero exit;
anything else is a bug and keeps its traceback under ``--debug``.
"""


class FgfemError(Exception):
    """A problem with the user's input, files or environment, explained in one line."""


class NoFaceError(FgfemError):
    """No face was found where one was required."""
