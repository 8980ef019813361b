"""`fgfem aus`: measure the 17 AU intensities of every face in a photo, folder or video."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from fgfem.aus import AU_CODES
from fgfem.cli.app import app, console, err_console
from fgfem.cli.options import Command, Shared, shared_options


@app.command("aus", cls=Command)
@shared_options("face", "backend", "force", face="all")
def aus_command(
    source: Path = typer.Argument(..., help="A photo, a folder of photos, or a video."),
    out: Path | None = typer.Option(None, "-o", "--out", help="Write the table to a .csv or .json file."),
    plot: Path | None = typer.Option(None, "--plot", help="Video only: AU curves over time as a PNG."),
    *,
    shared: Shared,
) -> None:
    """Measure AU intensities (OpenFace's 0-5 scale) with the offline landmark-based estimator.

    Examples:
      [bold]fgfem aus examples/astronaut.png[/]
      [bold]fgfem aus photos/ -o aus.csv[/]
      [bold]fgfem aus clip.mp4 -o curves.csv --plot curves.png[/]

    AUs marked * are weakly visible in landmarks and are estimated from proxies.
    """
    from fgfem.au_reading.estimator import LOW_CONFIDENCE_AUS
    from fgfem.au_reading.measure import check_measure, measure_source, plot_curves, write_records
    from fgfem.faces import get_backend
    from fgfem.media import describe_path

    check_measure(source, out, plot, force=shared.force)
    detector = get_backend(shared.backend)
    with _progress() as progress:
        task = progress.add_task("", total=None)
        records, skipped = measure_source(source, detector, shared.face, on_step=lambda what, done, total: (
            progress.update(task, description=what, completed=done, total=total)))
    _show(records, LOW_CONFIDENCE_AUS)
    for skip in skipped:
        err_console.print(f"[yellow]skipped[/] {describe_path(skip.source)}: {describe_path(skip.reason)}",
                          soft_wrap=True)
    if out is not None:
        write_records(records, out, LOW_CONFIDENCE_AUS, force=shared.force)
        console.print(f"wrote {len(records)} rows to {describe_path(out)}")
    if plot is not None:
        plot_curves(records, plot, force=shared.force)
        console.print(f"wrote AU curves to {describe_path(plot)}")
    if skipped:
        raise typer.Exit(1)


def _name(source: str) -> str:
    """A file name fit to print, whatever its encoding (non-UTF-8 names hold lone surrogates)."""
    from fgfem.media import describe_path

    return describe_path(Path(source).name)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=err_console, transient=True)


def _show(records: list, low_confidence: tuple[str, ...], max_rows: int = 40) -> None:
    """A few faces read best with AUs as rows; many faces or frames with AUs as columns."""
    if len(records) <= 6:
        one_source = len({r.source for r in records}) == 1
        title = _name(records[0].source) + ": " if one_source else ""
        table = Table(title=f"{title}AU intensities (0-5); * = weakly visible in landmarks")
        table.add_column("AU")
        for r in records:
            name = "" if one_source else _name(r.source) + " "
            table.add_column(f"{name}face {r.face}" if r.frame is None else f"frame {r.frame}", justify="right")
        for index, code in enumerate(AU_CODES):
            table.add_row(code + ("*" if code in low_confidence else ""), *(f"{r.aus[index]:.2f}" for r in records))
        console.print(table)
        return
    table = Table(title="AU intensities (0-5); * = weakly visible in landmarks", padding=(0, 0), box=None)
    by_frame = records[0].frame is not None
    table.add_column("frame" if by_frame else "file:face", overflow="ellipsis", max_width=16, no_wrap=True)
    for code in AU_CODES:
        table.add_column(code[2:] + ("*" if code in low_confidence else ""), justify="right", min_width=4)
    shown = records if len(records) <= max_rows else records[:: max(1, len(records) // max_rows)]
    for r in shown:
        where = str(r.frame) if by_frame else f"{_name(r.source)}:{r.face}"
        table.add_row(where, *(f"{v:.1f}" for v in r.aus))
    console.print(table)
    if len(shown) < len(records):
        console.print(f"({len(records)} rows; every {len(records) // len(shown)}th shown; use -o for all)")
