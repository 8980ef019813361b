"""A progress bar that counts units of work and shows their rate, for ``render`` (frames) and ``prep`` (files)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from fgfem.cli.app import err_console


@contextmanager
def rate_progress(label: str, rate: str, *, elapsed: bool = False,
                  transient: bool = False) -> Iterator[Callable[[int, int], None]]:
    """A bar named ``label`` with ``done/total`` and the rate (``12.5 fps``); yields the ``report(done, total)``.

    ``total`` 0 means the count is not known yet (a container that does not say how many frames).
    """
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
               *((TimeElapsedColumn(),) if elapsed else ()), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=transient) as progress:
        task = progress.add_task(label, total=None, rate="")

        def report(done: int, total: int) -> None:
            seconds = progress.tasks[0].elapsed or 0.0
            progress.update(task, completed=done, total=total or None,
                            rate=f"{done / seconds:.1f} {rate}" if seconds > 0 else "")

        yield report
