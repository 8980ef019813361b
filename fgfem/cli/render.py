"""`fgfem render`: edit every frame of a video, keeping its frames, their times, its geometry and its audio."""

from __future__ import annotations

import contextlib
from pathlib import Path

import typer
from rich.markup import escape

from fgfem.cli.app import app, console
from fgfem.cli.options import AU_OPTION, EDIT_OPTIONS, TARGET_OPTION, Command, Shared, shared_options
from fgfem.cli.progress import rate_progress


@app.command(cls=Command)
@shared_options(*EDIT_OPTIONS)
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
    *,
    shared: Shared,
) -> None:
    """Edit the expression of the face(s) in every frame of a video.

    Frames without a face pass through unchanged; the face is tracked between frames \
and its landmarks smoothed, so the edit does not flicker. Every frame keeps its \
presentation time (variable frame rates and a video that starts after its audio \
stay in sync), and the pixel aspect ratio and colour tags are kept.

    Examples:
      [bold]fgfem render clip.mp4 --au 12=+1.0 -o smile.mp4[/]
      [bold]fgfem render clip.mp4 --driver actor.mp4 -o driven.mp4[/]
    """
    from fgfem.media import describe_path
    from fgfem.render import TrackerConfig, render_video
    from fgfem.request import EditRequest, check_render

    request = EditRequest.for_video(au, driver=driver, target=target, driver_neutral=driver_neutral)
    check_render(source, out, driver=driver, intensity=intensity, batch=batch, redetect=redetect,
                 encoder_preset=encoder_preset, force=shared.force)
    editor = shared.load_editor()
    measuring = console.status(f"measuring the expressions in {describe_path(driver.name)}") if driver else None
    with measuring or contextlib.nullcontext():
        spec = request.video_spec(editor)
    config = TrackerConfig(face=shared.face, redetect_every=redetect, smooth=smooth)
    with rate_progress("[bold]render", "fps") as report:
        stats = render_video(editor, source, out, spec, batch=batch, intensity=intensity, mode=shared.mode,
                             tracker_config=config, keep_audio=audio, force=shared.force, on_frame=report,
                             encoder_preset=encoder_preset)
    notes = escape("".join(f"; {note}" for note in stats.notes))
    console.print(f"[green]wrote[/] {describe_path(out)}: {stats.frames} frames ({stats.edited} with a face edited), "
                  f"{stats.fps:.1f} fps, {stats.detections} full detections{notes}")

