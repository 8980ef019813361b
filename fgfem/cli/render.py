"""`fgfem render`: edit every frame of a video, keeping its frames, their times, its geometry and its audio."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from fgfem.cli.app import app, console, err_console
from fgfem.cli.edit import (
    AU_OPTION,
    BACKEND_OPTION,
    DEVICE_OPTION,
    FACE_OPTION,
    FORCE_OPTION,
    MODE_OPTION,
    TARGET_OPTION,
    WEIGHTS_OPTION,
    check_intensity,
    load_editor,
)
from fgfem.cli.options import PRECISION_OPTION
from fgfem.errors import FgfemError


@app.command()
def render(
    source: Path = typer.Argument(..., help="The video to edit.", show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Output video: .mp4, .m4v, .mov, .mkv, .webm, .avi or "
                             ".gif (.avi cannot delay its first frame; .gif has no sound)."),
    au: list[str] | None = AU_OPTION,
    driver: Path | None = typer.Option(
        None, "--driver", "-d", help="Driving video: each frame gets AUs(driver frame) - AUs(driver neutral frame).",
    ),
    driver_neutral: int = typer.Option(0, "--driver-neutral", help="Frame of the driver with the neutral face."),
    target: Path | None = TARGET_OPTION,
    intensity: float = typer.Option(1.0, "--intensity", "-i", help="Scale the change."),
    batch: int = typer.Option(8, "--batch", "-b", help="Frames per generator call (more is faster on a GPU)."),
    redetect: int = typer.Option(10, "--redetect", help="Run the full face detector every N frames (else track)."),
    smooth: bool = typer.Option(True, "--smooth/--no-smooth", help="One-Euro smoothing of landmarks over time."),
    audio: bool = typer.Option(True, "--audio/--no-audio", help="Keep the input's audio track."),
    encoder_preset: str | None = typer.Option(
        None, "--encoder-preset", show_default=False,
        help="x264 speed/size preset, ultrafast ... veryslow (default veryfast). Slower ones give slightly "
             "smaller or sharper files at the same CRF 18 and slow the render down.",
    ),
    face: str = FACE_OPTION,
    mode: str = MODE_OPTION,
    weights: Path | None = WEIGHTS_OPTION,
    device: str = DEVICE_OPTION,
    precision: str = PRECISION_OPTION,
    backend: str = BACKEND_OPTION,
    force: bool = FORCE_OPTION,
) -> None:
    """Edit the expression of the face(s) in every frame of a video.

    Frames without a face pass through unchanged; the face is tracked between frames
    and its landmarks smoothed, so the edit does not flicker. Every frame keeps its
    presentation time (variable frame rates and a video that starts after its audio
    stay in sync), and the pixel aspect ratio and colour tags are kept.

    Examples:
      [bold]fgfem render clip.mp4 --au 12=+1.0 -o smile.mp4[/]
      [bold]fgfem render clip.mp4 --driver actor.mp4 -o driven.mp4[/]
    """
    from fgfem.aus import parse_au_specs
    from fgfem.editor import check_mode
    from fgfem.media import check_writable, describe_path, is_video
    from fgfem.render import TrackerConfig, driver_deltas, render_video
    from fgfem.request import check_one_source, load_target
    from fgfem.video import WRITABLE_SUFFIXES, X264_PRESETS, writable_suffixes_text

    check_one_source(au, driver=driver, target=target)
    edits = parse_au_specs(au) if au else None
    check_mode(mode)
    check_intensity(intensity)
    for name, path in (("input", source), ("driver", driver)):
        if path is not None and not path.is_file():
            raise FgfemError(f"{name} video {describe_path(path)} does not exist")
    if not is_video(source):
        raise FgfemError(f"{describe_path(source.name)} is not a video fgfem reads; for photos use `fgfem edit`")
    if out.suffix.lower() not in WRITABLE_SUFFIXES:
        raise FgfemError(f"cannot write {describe_path(out.name)}: name the output {writable_suffixes_text()}")
    if batch < 1 or redetect < 1:
        raise FgfemError("--batch and --redetect must be at least 1")
    if encoder_preset is not None and encoder_preset not in X264_PRESETS:
        raise FgfemError(f"--encoder-preset {encoder_preset!r} is not an x264 preset; use one of "
                         f"{', '.join(X264_PRESETS)}")
    check_writable(out, force=force)
    editor = load_editor(weights, device, backend, precision)
    config = TrackerConfig(face=face, redetect_every=redetect, smooth=smooth)
    if driver is not None:
        with console.status(f"measuring the expressions in {describe_path(driver.name)}"):
            deltas = driver_deltas(editor, driver, neutral=driver_neutral)
        spec = lambda index: deltas[min(index, len(deltas) - 1)]  # noqa: E731 (the driver's change at this frame)
    else:
        spec = edits if edits is not None else load_target(editor, target)
    with Progress(TextColumn("[bold]render"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[fps]}"),
                  TimeRemainingColumn(), console=err_console) as progress:
        task = progress.add_task("render", total=None, fps="")

        def report(done: int, total: int) -> None:
            elapsed = progress.tasks[0].elapsed or 0.0
            progress.update(task, completed=done, total=total or None,
                            fps=f"{done / elapsed:.1f} fps" if elapsed > 0 else "")

        stats = render_video(editor, source, out, spec, batch=batch, intensity=intensity, mode=mode,
                             tracker_config=config, keep_audio=audio, force=force, on_frame=report,
                             encoder_preset=encoder_preset)
    notes = escape("".join(f"; {note}" for note in stats.notes))
    console.print(f"[green]wrote[/] {describe_path(out)}: {stats.frames} frames ({stats.edited} with a face edited), "
                  f"{stats.fps:.1f} fps, {stats.detections} full detections{notes}")
