"""`fgfem edit`: change the expression of the faces in a photo (or a folder of photos).

The shared options (``--au``, ``--target``, ``--weights``, ``--device``, ``--backend``)
are defined here once and reused by ``interpolate`` and ``render``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from fgfem.cli.app import app, console, err_console
from fgfem.cli.options import PRECISION_OPTION
from fgfem.errors import FgfemError, NoFaceError

if TYPE_CHECKING:
    import numpy as np

    from fgfem.aus import AUEdit
    from fgfem.edit_files import FileOutputs
    from fgfem.editor import Editor, EditResult, EditSpec

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
WEIGHTS_OPTION = typer.Option(
    None, "--weights", "-w",
    help="Model: a .safetensors file, a checkpoint of fgfem train, or its run folder; default: the shipped model.",
)
DEVICE_OPTION = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps.")
BACKEND_OPTION = typer.Option("auto", "--backend", help="Face landmark backend: auto, dlib or fan.")
FACE_OPTION = typer.Option(
    "largest", "--face",
    help="Which faces: largest, all, or N; faces are numbered 0, 1, ... left to right, as fgfem aus lists them.",
)
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
    """Load the model once, with a status line (it is the slow part of a single edit).

    ``weights`` may be a run folder or a checkpoint of ``fgfem train``: it is resolved to the file here.
    """
    from fgfem.cli.options import check_precision
    from fgfem.editor import Editor
    from fgfem.weights import resolve_weights

    precision = check_precision(precision)
    path = resolve_weights(weights) if weights is not None else None
    with console.status("loading the model"):
        return Editor.from_weights(path, device=device, backend=backend, precision=precision)


def scaled_spec(edits: list[AUEdit] | None, intensity: float) -> tuple[list[AUEdit] | None, float]:
    """``--au`` edits with ``--intensity`` folded in (and intensity 1 left to apply), checked as a whole.

    Folding it in lets the 0-5 clamp see the change really applied; ``--target`` keeps its intensity.
    """
    from fgfem.aus import check_combined_change, scaled_edits

    if not edits:
        return edits, intensity
    check_combined_change(edits, [intensity])
    return scaled_edits(edits, intensity), 1.0


def explain_no_face(problem: NoFaceError, editor: Editor, rgb: Callable[[], np.ndarray]) -> NoFaceError:
    """The editor's plain "no face found" made specific: a rotated photo, or the smallest face findable here.

    Other "no face" errors (a ``--target`` image's, or one already made specific) pass through;
    ``rgb`` is only called for the plain one.
    """
    from fgfem.prep.faces import no_face_message

    if str(problem) not in PLAIN_NO_FACE:
        return problem
    return NoFaceError(no_face_message(editor.backend, rgb()))


# What ``Editor.find_faces`` and ``Editor.edit_image`` say when a photo has no face.
PLAIN_NO_FACE = ("no face found in the image (try a larger, frontal, well-lit face, or --backend fan)",
                 "no face found in the image")


def edit_one(editor: Editor, src: Path, dest: Path, spec: EditSpec, **options: object) -> tuple[FileOutputs,
                                                                                               EditResult]:
    """``edit_file``, with a "no face" error that says why."""
    from fgfem.edit_files import edit_file
    from fgfem.media import load_image

    try:
        return edit_file(editor, src, dest, spec, **options)  # type: ignore[arg-type]
    except NoFaceError as problem:
        raise explain_no_face(problem, editor, lambda: load_image(src).rgb) from None


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
    from fgfem.editor import check_mode
    from fgfem.media import check_folder_writable, check_writable, describe_path, iter_image_files, output_path_for
    from fgfem.presets import check_edit_sources, edits_from_options
    from fgfem.request import load_target

    check_edit_sources(au, expression, target)
    edits = edits_from_options(au, expression)
    check_mode(mode)
    check_intensity(intensity)
    scaled, left = scaled_spec(edits, intensity)
    files = iter_image_files(source)
    if not files:
        raise FgfemError(f"{describe_path(source)} holds no images to edit")
    batch = source.is_dir()
    # Where the outputs go is checked before the model loads: a read-only folder fails at once.
    dest = output_path_for(files[0], out, is_batch=batch, root=source if batch else None)
    if batch:
        check_folder_writable(dest.parent)
    else:
        check_writable(dest, force=force)
    editor = load_editor(weights, device, backend, precision)
    spec = scaled if scaled is not None else load_target(editor, target)
    what = format_edits(edits) if edits else f"expression of {describe_path(target.name)}"
    what += f" x{intensity:g}" if intensity != 1 else ""
    options = {"intensity": left, "face": face, "mode": mode, "crop": crop, "compare": compare, "force": force}
    if not batch:
        written, result = edit_one(editor, files[0], dest, spec, **options)
        console.print(f"[green]wrote[/] {describe_path(dest)} ({len(result.faces)} face(s), {what})")
        for extra in written.all()[1:]:
            console.print(f"[green]wrote[/] {describe_path(extra)}")
        return
    edit_folder(editor, files, source, out, spec, what, options)


def edit_folder(editor: Editor, files: list[Path], source: Path, out: Path | None, spec: EditSpec, what: str,
                options: dict[str, object]) -> None:
    """Edit every photo of a folder with a progress bar; a bad file is skipped with its reason.

    Outputs that exist already are kept and counted apart (a rerun is not a failure); exit 1
    only when some photo could not be edited.
    """
    from fgfem.media import describe_path, output_path_for

    failures: list[tuple[Path, str]] = []
    existing = 0
    with Progress(TextColumn("[bold]edit"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  TextColumn("{task.fields[name]}"), console=err_console, transient=False) as progress:
        task = progress.add_task("edit", total=len(files), name="")
        for src in files:
            progress.update(task, name=describe_path(src.name))
            dest = output_path_for(src, out, is_batch=True, root=source)
            if dest.exists() and not options["force"]:
                existing += 1
            else:
                try:
                    edit_one(editor, src, dest, spec, **options)
                except FgfemError as problem:
                    failures.append((src, str(problem)))
                    progress.console.print(f"[yellow]skipped[/] {describe_path(src)}: {describe_path(str(problem))}")
            progress.advance(task)
    done = len(files) - len(failures) - existing
    folder = output_path_for(files[0], out, is_batch=True, root=source).parent
    console.print(f"edited {done} of {len(files)} photo(s) into {describe_path(folder)} ({what})"
                  + (f"; {existing} skipped (exist; --force to redo)" if existing else "")
                  + (f"; [red]{len(failures)} failed[/]" if failures else ""))
    if failures:
        raise typer.Exit(code=1)
