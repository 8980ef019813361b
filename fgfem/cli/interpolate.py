"""`fgfem interpolate`: one face at several intensities, as a GIF, an MP4, a labelled strip or the AU grid."""

from __future__ import annotations

from pathlib import Path

import typer

from fgfem.cli.app import app, console
from fgfem.cli.edit import (
    AU_OPTION,
    BACKEND_OPTION,
    DEVICE_OPTION,
    EXPRESSION_OPTION,
    FACE_OPTION,
    FORCE_OPTION,
    MODE_OPTION,
    TARGET_OPTION,
    WEIGHTS_OPTION,
    explain_no_face,
    load_editor,
)
from fgfem.cli.options import PRECISION_OPTION
from fgfem.errors import FgfemError, NoFaceError

MAX_FPS = 120.0


def check_fps(fps: float) -> float:
    """Refuse a frame rate no player shows, before the model loads (a GIF or MP4 needs one above 0)."""
    if not (0 < fps <= MAX_FPS):
        raise FgfemError(f"--fps {fps:g} must be greater than 0 and at most {MAX_FPS:g}")
    return fps


@app.command()
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
    face: str = FACE_OPTION,
    mode: str = MODE_OPTION,
    weights: Path | None = WEIGHTS_OPTION,
    device: str = DEVICE_OPTION,
    precision: str = PRECISION_OPTION,
    backend: str = BACKEND_OPTION,
    force: bool = FORCE_OPTION,
) -> None:
    """Sweep an expression change over several intensities.

    Examples:
      [bold]fgfem interpolate face.jpg --target t.jpg --steps 0,0.5,0.75,1,1.25 -o anim.gif[/]
      [bold]fgfem interpolate face.jpg --au 12=+2 --frames 24 --boomerang -o smile.mp4[/]
      [bold]fgfem interpolate face.jpg --expression surprise --frames 12 -o surprise.gif[/]
      [bold]fgfem interpolate face.jpg --au 12=+2 -o strip.png[/]
      [bold]fgfem interpolate face.jpg --grid -o grid.png[/]
    """
    from fgfem.animation import (
        DEFAULT_GRID_STEPS,
        DEFAULT_STEPS,
        expression_grid,
        intensity_schedule,
        interpolation_frames,
        parse_steps,
        save_animation,
    )
    from fgfem.aus import au_index, check_combined_change
    from fgfem.editor import check_mode
    from fgfem.media import check_writable, describe_path, load_image, save_image
    from fgfem.request import load_target

    check_mode(mode)
    check_fps(fps)
    if not 16 <= size <= 2048:
        raise FgfemError(f"--size {size} must be between 16 and 2048 pixels")
    if grid:
        if au or target or expression:
            raise FgfemError("--grid draws its own rows of AUs (--grid-aus); leave out --au, --expression and --target")
        if out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
            raise FgfemError(f"--grid writes a picture: name the output .png (got {out.name})")
        rows = [part.strip() for part in grid_aus.split(",") if part.strip()]
        for row in rows:
            au_index(row)
        columns = parse_steps(steps) if steps else list(DEFAULT_GRID_STEPS)
        check_writable(out, force=force)
        editor = load_editor(weights, device, backend, precision)
        with console.status("rendering the grid"):
            picture = expression_grid(editor, load_image(source).rgb, rows, columns, face=face, mode=mode,
                                      full=full, size=size)
        save_image(None, picture, out, force=force)
        console.print(f"[green]wrote[/] {describe_path(out)} ({len(rows)} AUs x {len(columns)} changes)")
        return
    from fgfem.presets import check_edit_sources, edits_from_options

    check_edit_sources(au, expression, target)
    edits = edits_from_options(au, expression)
    schedule = intensity_schedule(parse_steps(steps) if steps else DEFAULT_STEPS, frames=frames, boomerang=boomerang)
    if edits:
        check_combined_change(edits, schedule, option="--steps" if steps else "an intensity of")
    check_writable(out, force=force)
    editor = load_editor(weights, device, backend, precision)
    spec = edits if edits is not None else load_target(editor, target)
    rgb = load_image(source).rgb
    with console.status(f"rendering {len(schedule)} frames"):
        try:
            rendered = interpolation_frames(editor, rgb, spec, schedule, face=face, mode=mode, full=full, size=size)
        except NoFaceError as problem:
            raise explain_no_face(problem, editor, lambda: rgb) from None
        save_animation(rendered, out, fps=fps, force=force)
    console.print(f"[green]wrote[/] {describe_path(out)} ({len(rendered)} frames, intensities "
                  f"{schedule[0]:g}..{max(schedule):g})")
