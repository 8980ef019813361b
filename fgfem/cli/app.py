"""The Typer application object and the error policy every subcommand shares.

Subcommand modules import ``app`` from here and register themselves; the CLI only
parses arguments and reports, all work happens in the library.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

import typer
from rich.console import Console
from rich.text import Text

from fgfem.errors import FgfemError

app = typer.Typer(
    name="fgfem",
    help="Fine-grained facial expression manipulation with relative Action Units.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

console = Console()
err_console = Console(stderr=True)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback when something fails."),
) -> None:
    """fgfem: edit facial expressions in photos and videos with Action Units (AUs)."""


def report_error(message: str) -> None:
    """Print one readable error line on stderr."""
    line = Text("error: ", style="bold red")
    # File names that are not UTF-8 arrive as lone surrogates; show them as \xNN instead of failing to print.
    printable = str(message).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    line.append(" ".join(printable.split()))
    err_console.print(line, soft_wrap=True)


def report_warning(message: str) -> None:
    """Print one ``warning: ...`` line on stderr: what happened, never the Python source line that warned."""
    line = Text("warning: ", style="bold yellow")
    printable = str(message).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    line.append(" ".join(printable.split()))
    err_console.print(line, soft_wrap=True)


class WarningLines:
    """``warnings.showwarning`` for the CLI: the message alone, each once, repeats counted.

    Python's default prints ``file.py:377: MediaWarning ...`` and the source line, which
    means nothing to a user. A warning with a ``key`` attribute (an AU clamp, met on every
    face of a folder or every frame of a video) is shown the first time and then counted,
    so a long run ends with one summary line instead of a screenful.
    """

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    def __call__(self, message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
        key = str(getattr(message, "key", "") or message)
        self.seen[key] = self.seen.get(key, 0) + 1
        if self.seen[key] == 1:
            report_warning(str(message))

    def summary(self) -> None:
        """One line per repeated keyed warning: how many more times it happened."""
        for key, count in self.seen.items():
            if count > 1:
                report_warning(f"{key} ({count - 1} more time{'s' if count > 2 else ''})")


@contextmanager
def cli_warnings() -> Iterator[WarningLines]:
    """Show every warning raised during one CLI run as ``warning: message`` lines."""
    from fgfem.aus import AUClampWarning
    from fgfem.rig.field import GeometryLimitWarning

    lines = WarningLines()
    with warnings.catch_warnings():
        # Python shows a repeated warning once per place; clamps and limits are counted here instead.
        warnings.filterwarnings("always", category=AUClampWarning)
        warnings.filterwarnings("always", category=GeometryLimitWarning)
        warnings.showwarning = lines
        try:
            yield lines
        finally:
            lines.summary()


def run(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv`` and return the exit code instead of exiting."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    with cli_warnings():
        return _run(args, debug)


def _run(args: list[str], debug: bool) -> int:
    """``run`` without the warning display: the exit code for ``args``, one error line on failure."""
    try:
        app(args=args, prog_name="fgfem", standalone_mode=True)
    except SystemExit as stop:
        code = stop.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except FgfemError as problem:
        if debug:
            raise
        report_error(str(problem))
        return 1
    except KeyboardInterrupt:
        report_error("interrupted")
        return 130
    except MemoryError:
        if debug:
            raise
        report_error("out of memory; try a smaller image, --batch or --size")
        return 1
    except Exception as problem:  # a bug: keep it to one line unless --debug
        if debug:
            raise
        report_error(f"unexpected {type(problem).__name__}: {problem} (run with --debug for the traceback)")
        return 2
    return 0
