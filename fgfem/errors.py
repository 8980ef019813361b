"""One exception type for every failure a user can cause or fix.

The CLI turns an ``FgfemError`` into a single readable line and a non-zero exit;
anything else is a bug and keeps its traceback under ``--debug``.
"""


class FgfemError(Exception):
    """A problem with the user's input, files or environment, explained in one line."""


class NoFaceError(FgfemError):
    """No face was found where one was required."""


def first_line(problem: BaseException) -> str:
    """The first line of an exception's text (its type name when empty), for one-line messages."""
    text = str(problem).strip()
    return text.splitlines()[0] if text else type(problem).__name__
