"""`fgfem interpolate`: one face at several intensities, as a GIF, an MP4, a labelled strip or the AU grid."""

from __future__ import annotations

from pathlib import Path

import typer

from fgfem.cli.app import app, console
from fgfem.cli.options import AU_OPTION, EDIT_OPTIONS, EXPRESSION_OPTION, TARGET_OPTION, Command, Shared, shared_options


@app.command(cls=Command)
@shared_options(*EDIT_OPTIONS)
def interpolate(
    source: Path = typer.Argument(..., help="A photo with a face.", show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="anim.gif, anim.mp4, or strip.png (labelled cells)."),
    au: list[str] | None = AU_OPTION,
    target: Path | None = TARGET_OPTION,
    expression: list[str] | None = EXPRESSION_OPTION,
    steps: str | None = typer.Option(
        None, "--steps", "-s",
        help="Intensities, comma-separated. Default 0,0.5,0.75,1,1.25; with --grid, AU changes 0,1,2,3,4.",
    ),
    frames: int | None = typer.Option(
        None, "--frames", "-n", help="N evenly spaced intensities, first to last step; 1 = the full edit (x1).",
    ),
    boomerang: bool = typer.Option(False, "--boomerang", help="Play forwards then backwards (a seamless loop)."),
    fps: float = typer.Option(8.0, "--fps", help="Frames per second of a GIF or MP4 (above 0, at most 120)."),
    full: bool = typer.Option(False, "--full", help="Show the whole photo instead of a view around the face."),
    size: int = typer.Option(256, "--size", help="Side in pixels of the view around the face."),
    grid: bool = typer.Option(False, "--grid", help="The paper's figure: rows of AUs x columns of changes (PNG)."),
    grid_aus: str = typer.Option("4,5,7,12,15,20", "--grid-aus", help="Rows of the --grid figure."),
    *,
    shared: Shared,
) -> None:
    """Sweep an expression change over several intensities.

    Examples:
      [bold]fgfem interpolate face.jpg --target t.jpg --steps 0,0.5,0.75,1,1.25 -o anim.gif[/]
      [bold]fgfem interpolate face.jpg --au 12=+2 --frames 24 --boomerang -o smile.mp4[/]
      [bold]fgfem interpolate face.jpg --expression surprise --frames 12 -o surprise.gif[/]
      [bold]fgfem interpolate face.jpg --au 12=+2 -o strip.png[/]
      [bold]fgfem interpolate face.jpg --grid -o grid.png[/]
    """
    from fgfem.animation import check_view, sweep_schedule, write_sweep
    from fgfem.media import check_writable, describe_path
    from fgfem.request import EditRequest

    check_view(fps=fps, size=size)
    view = {"face": shared.face, "mode": shared.mode, "full": full, "size": size, "force": shared.force}
    if grid:
        write_grid(source, out, grid_aus, steps, edit_given=bool(au or target or expression), shared=shared,
                   view=view)
        return
    request = EditRequest.from_options(au, expression, target)
    schedule = sweep_schedule(steps, frames=frames, boomerang=boomerang)
    request.check_intensities(schedule, option="--steps" if steps else "an intensity of")
    check_writable(out, force=shared.force)
    editor = shared.load_editor()
    spec = request.spec(editor)
    with console.status(f"rendering {len(schedule)} frames"):
        rendered = write_sweep(editor, source, out, spec, schedule, fps=fps, **view)  # type: ignore[arg-type]
    console.print(f"[green]wrote[/] {describe_path(out)} ({len(rendered)} frames, intensities "
                  f"{schedule[0]:g}..{max(schedule):g})")


def write_grid(source: Path, out: Path, grid_aus: str, steps: str | None, *, edit_given: bool, shared: Shared,
               view: dict[str, object]) -> None:
    """``--grid``: the rows and columns checked, then the model loaded and the figure written."""
    from fgfem import animation
    from fgfem.media import check_writable, describe_path

    rows, columns = animation.grid_plan(out, grid_aus, steps, edit_given=edit_given)
    check_writable(out, force=shared.force)
    editor = shared.load_editor()
    with console.status("rendering the grid"):
        animation.write_grid(editor, source, out, rows, columns, **view)  # type: ignore[arg-type]
    console.print(f"[green]wrote[/] {describe_path(out)} ({len(rows)} AUs x {len(columns)} changes)")
