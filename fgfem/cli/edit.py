"""`fgfem edit`: change the expression of the faces in a photo (or a folder of photos).

The shared options (``--au``, ``--target``, ``--weights``, ``--device``, ``--backend``)
are defined here once and reused by ``interpolate`` and ``render``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from fgfem.cli.app import app, console, err_console
from fgfem.cli.options import PRECISION_OPTION
from fgfem.errors import FgfemError

if TYPE_CHECKING:
    from fgfem.editor import Editor

AU_OPTION = typer.Option(
    None, "--au", "-a",
    help="AU change: 12=+1.0 (relative), AU4=-0.5, lip_corner_puller=+2, or 12=3 (absolute target). Repeatable.",
)
TARGET_OPTION = typer.Option(
    None, "--target", "-t", help="Copy the expression of the face in this image (expression transfer).",
)
EXPRESSION_OPTION = typer.Option(
    None, "--expression", "-e",
    help="Emotion preset measured on real posed faces: happy, sad, surprise, anger, disgust, fear (=WEIGHT scales "
         "it, e.g. happy=0.8) or neutral; with --au, the --au value wins for its AU. Repeatable.",
)
WEIGHTS_OPTION = typer.Option(None, "--weights", "-w", help="Model file (.safetensors); default: the shipped model.")
DEVICE_OPTION = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps.")
BACKEND_OPTION = typer.Option("auto", "--backend", help="Face landmark backend: auto, dlib or fan.")
FACE_OPTION = typer.Option("largest", "--face", help="Which faces to edit: largest, all, or N (0 = leftmost).")
MODE_OPTION = typer.Option(
    "delta", "--mode", help="delta: paste the change G(x,r)-G(x,0) (keeps photo detail); crop: paste G(x,r) itself.",
)
FORCE_OPTION = typer.Option(False, "--force", "-f", help="Overwrite existing outputs.")


def check_intensity(value: float) -> float:
    """``--intensity`` scales the AU change: NaN or infinity would silently write a garbage photo."""
    if not math.isfinite(value) or abs(value) > 10:
        raise FgfemError(f"--intensity {value:g}: give a finite number between -10 and 10 (1 = the change as asked)")
    return value


def load_editor(weights: Path | None, device: str, backend: str, precision: str = "auto") -> Editor:
    """Load the model once, with a status line (it is the slow part of a single edit)."""
    from fgfem.cli.options import check_precision
    from fgfem.editor import Editor

    precision = check_precision(precision)
    with console.status("loading the model"):
        return Editor.from_weights(weights, device=device, backend=backend, precision=precision)


@app.command()
def edit(
    source: Path = typer.Argument(..., help="A photo, or a folder of photos.", show_default=False),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Output file (single photo) or folder; default NAME_edited.EXT beside the input.",
    ),
    au: list[str] | None = AU_OPTION,
    target: Path | None = TARGET_OPTION,
    expression: list[str] | None = EXPRESSION_OPTION,
    intensity: float = typer.Option(1.0, "--intensity", "-i", help="Scale the change (0 = unchanged, 1 = as asked)."),
    face: str = FACE_OPTION,
    crop: bool = typer.Option(False, "--crop", help="Also save the edited aligned face crop(s) as OUT_crop.png."),
    compare: bool = typer.Option(False, "--compare", help="Also save before/after side by side as OUT_compare.EXT."),
    mode: str = MODE_OPTION,
    weights: Path | None = WEIGHTS_OPTION,
    device: str = DEVICE_OPTION,
    precision: str = PRECISION_OPTION,
    backend: str = BACKEND_OPTION,
    force: bool = FORCE_OPTION,
) -> None:
    """Edit facial expressions with Action Units; the output keeps the photo's size, format and EXIF.

    Examples:
      [bold]fgfem edit face.jpg --au 12=+1.0 --au 4=-0.5 -o smile.jpg[/]
      [bold]fgfem edit face.jpg --target other.jpg --compare -o transfer.jpg[/]
      [bold]fgfem edit face.jpg --expression happy=0.8 --au 9=+0 -o happy.jpg[/]
      [bold]fgfem edit photos/ --au 12=+1.5 --face all -o edited/[/]
    """
    from fgfem.aus import format_edits
    from fgfem.editor import check_mode, edit_file, load_target
    from fgfem.media import describe_path, iter_image_files, output_path_for
    from fgfem.presets import check_edit_sources, edits_from_options

    check_edit_sources(au, expression, target)
    edits = edits_from_options(au, expression)
    check_mode(mode)
    check_intensity(intensity)
    files = iter_image_files(source)
    if not files:
        raise FgfemError(f"{describe_path(source)} holds no images to edit")
    batch = source.is_dir()
    editor = load_editor(weights, device, backend, precision)
    spec = edits if edits is not None else load_target(editor, target)
    what = format_edits(edits) if edits else f"expression of {describe_path(target.name)}"
    if not batch:
        dest = output_path_for(files[0], out, is_batch=False)
        written, result = edit_file(editor, files[0], dest, spec, intensity=intensity, face=face, mode=mode,
                                    crop=crop, compare=compare, force=force)
        console.print(f"[green]wrote[/] {describe_path(dest)} ({len(result.faces)} face(s), {what}"
                      f"{f' x{intensity:g}' if intensity != 1 else ''})")
        for extra in written.all()[1:]:
            console.print(f"[green]wrote[/] {describe_path(extra)}")
        return
    failures: list[tuple[Path, str]] = []
    with Progress(TextColumn("[bold]edit"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  TextColumn("{task.fields[name]}"), console=err_console, transient=False) as progress:
        task = progress.add_task("edit", total=len(files), name="")
        for src in files:
            progress.update(task, name=describe_path(src.name))
            dest = output_path_for(src, out, is_batch=True, root=source)
            try:
                edit_file(editor, src, dest, spec, intensity=intensity, face=face, mode=mode,
                          crop=crop, compare=compare, force=force)
            except FgfemError as problem:
                failures.append((src, str(problem)))
                progress.console.print(f"[yellow]skipped[/] {describe_path(src)}: {describe_path(str(problem))}")
            progress.advance(task)
    done = len(files) - len(failures)
    folder = output_path_for(files[0], out, is_batch=True, root=source).parent
    console.print(f"edited {done} of {len(files)} photo(s) into {describe_path(folder)} ({what})"
                  + (f"; [red]{len(failures)} failed[/]" if failures else ""))
    if failures:
        raise typer.Exit(code=1)
