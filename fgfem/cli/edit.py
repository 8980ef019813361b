"""`fgfem edit`: change the expression of the faces in a photo (or a folder of photos).

The options are ``fgfem.cli.options``'s and the command's own; the work is ``fgfem.edit_files``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from fgfem.cli.app import app, console, err_console
from fgfem.cli.options import AU_OPTION, EDIT_OPTIONS, EXPRESSION_OPTION, TARGET_OPTION, Command, Shared, shared_options

if TYPE_CHECKING:
    from fgfem.edit_files import EditPlan
    from fgfem.editor import Editor, EditSpec

@app.command(cls=Command)
@shared_options(*EDIT_OPTIONS)
def edit(
    source: Path = typer.Argument(..., help="A photo, or a folder of photos.", show_default=False),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Output file (single photo) or folder; default NAME_edited.EXT beside the input.",
    ),
    au: list[str] | None = AU_OPTION,
    target: Path | None = TARGET_OPTION,
    expression: list[str] | None = EXPRESSION_OPTION,
    intensity: float = typer.Option(1.0, "--intensity", "-i", help="Scale the change (0 = unchanged, 1 = as asked)."),
    crop: bool = typer.Option(False, "--crop", help="Also save the edited aligned face crop(s) as OUT_crop.png."),
    compare: bool = typer.Option(False, "--compare", help="Also save before/after side by side as OUT_compare.EXT."),
    *,
    shared: Shared,
) -> None:
    """Edit facial expressions with Action Units; the output keeps the photo's size, format and EXIF.

    Examples:
      [bold]fgfem edit face.jpg --au 12=+1.0 --au 4=-0.5 -o smile.jpg[/]
      [bold]fgfem edit face.jpg --target other.jpg --compare -o transfer.jpg[/]
      [bold]fgfem edit face.jpg --expression happy=0.8 --au 9=+0 -o happy.jpg[/]
      [bold]fgfem edit photos/ --au 12=+1.5 --face all -o edited/[/]
    """
    from fgfem.edit_files import edit_file, plan_edit
    from fgfem.media import describe_path
    from fgfem.request import EditRequest

    request = EditRequest.from_options(au, expression, target)
    scaled, left = request.scaled(intensity)
    plan = plan_edit(source, out, force=shared.force)  # before the model loads: a read-only folder fails at once
    editor = shared.load_editor()
    spec = scaled.spec(editor)
    what = request.describe(intensity)
    options = {"intensity": left, "face": shared.face, "mode": shared.mode, "crop": crop, "compare": compare,
               "force": shared.force}
    if plan.folder:
        edit_folder(editor, plan, spec, what, options)
        return
    written, result = edit_file(editor, plan.files[0], plan.first, spec, **options)  # type: ignore[arg-type]
    console.print(f"[green]wrote[/] {describe_path(plan.first)} ({len(result.faces)} face(s), {what})")
    for extra in written.all()[1:]:
        console.print(f"[green]wrote[/] {describe_path(extra)}")


def edit_folder(editor: Editor, plan: EditPlan, spec: EditSpec, what: str, options: dict[str, object]) -> None:
    """``edit_files.edit_folder`` with a progress bar, a line per skipped file and a summary; exit 1 on failures."""
    from fgfem import edit_files
    from fgfem.media import describe_path

    with Progress(TextColumn("[bold]edit"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  TextColumn("{task.fields[name]}"), console=err_console, transient=False) as progress:
        task = progress.add_task("edit", total=len(plan.files), name="")

        def done(src: Path, reason: str | None) -> None:
            if reason is not None:
                progress.console.print(f"[yellow]skipped[/] {describe_path(src)}: {describe_path(reason)}")
            progress.advance(task)

        summary = edit_files.edit_folder(editor, plan, spec, on_done=done, **options,
                                         on_file=lambda src: progress.update(task, name=describe_path(src.name)))
    console.print(f"edited {summary.edited} of {summary.total} photo(s) into {describe_path(summary.folder)} ({what})"
                  + (f"; {summary.existing} skipped (exist; --force to redo)" if summary.existing else "")
                  + (f"; [red]{len(summary.failures)} failed[/]" if summary.failures else ""))
    if summary.failures:
        raise typer.Exit(code=1)
