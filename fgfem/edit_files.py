"""Editing photo files: ``fgfem edit`` on one photo or a folder, as ``fgfem.render`` is for a video.

The editor works on arrays; this module reads the files, writes the results with the
input's size, format and EXIF (plus the optional aligned crops and before/after picture),
and walks a folder. Where the outputs go is checked before any model loads
(``plan_edit``), so an existing output or a read-only folder fails at once, and no output
is ever replaced without ``force``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fgfem.errors import FgfemError, NoFaceError

if TYPE_CHECKING:
    from fgfem.editor import Editor, EditResult, EditSpec


@dataclass
class FileOutputs:
    """Where ``edit_file`` writes: the edit, and optionally the crops and the before/after picture."""

    edited: Path
    crops: list[Path] = field(default_factory=list)
    compare: Path | None = None

    def all(self) -> list[Path]:
        return [self.edited, *self.crops, *([self.compare] if self.compare else [])]


def outputs_for(out: Path, *, faces: int, crop: bool, compare: bool) -> FileOutputs:
    """``out`` plus ``out_crop.png`` (``_crop1``, ``_crop2``... for several faces) and ``out_compare.ext``."""
    crops = []
    if crop:
        names = ["_crop"] if faces == 1 else [f"_crop{i + 1}" for i in range(faces)]
        crops = [out.with_name(f"{out.stem}{name}.png") for name in names]
    compare_path = out.with_name(f"{out.stem}_compare{out.suffix}") if compare else None
    return FileOutputs(edited=out, crops=crops, compare=compare_path)


def edit_file(
    editor: Editor,
    src: Path,
    out: Path,
    spec: EditSpec,
    *,
    intensity: float = 1.0,
    face: str = "largest",
    mode: str = "delta",
    crop: bool = False,
    compare: bool = False,
    force: bool = False,
) -> tuple[FileOutputs, EditResult]:
    """Edit one photo file and write the result with the input's size, format and EXIF.

    Existing outputs are refused (before any work is done) unless ``force``; a photo
    without a face says why (rotated, or its faces too small for this photo's size).
    """
    from fgfem.layout import side_by_side
    from fgfem.media import check_writable, load_image, save_image
    from fgfem.request import explain_no_face

    check_writable(out, force=force)
    for extra in outputs_for(out, faces=1, crop=False, compare=compare).all()[1:]:
        check_writable(extra, force=force)
    loaded = load_image(src)
    try:
        result = editor.edit_image(loaded.rgb, spec, intensities=[intensity], face=face, mode=mode)
    except NoFaceError as problem:
        raise explain_no_face(problem, editor, lambda: loaded.rgb) from None
    written = outputs_for(out, faces=len(result.faces), crop=crop, compare=compare)
    for path in written.crops:
        check_writable(path, force=force)
    save_image(loaded, result.images[0], out, force=force)
    for path, image in zip(written.crops, result.crops[0] if crop else [], strict=True):
        save_image(None, image, path, force=force)
    if written.compare is not None:
        save_image(None, side_by_side(loaded.rgb, result.images[0]), written.compare, force=force)
    return written, result


@dataclass(frozen=True)
class EditPlan:
    """The photos one ``fgfem edit`` reads and where their results go (``plan_edit`` checks them)."""

    source: Path
    out: Path | None
    files: list[Path]

    @property
    def folder(self) -> bool:
        """A folder run: every photo below ``source``, into a folder of results."""
        return self.source.is_dir()

    def destination(self, src: Path) -> Path:
        """Where the result for ``src`` goes (``fgfem.media.output_path_for``)."""
        from fgfem.media import output_path_for

        return output_path_for(src, self.out, is_batch=self.folder, root=self.source if self.folder else None)

    @property
    def first(self) -> Path:
        """The first photo's result: the output of a single-photo run."""
        return self.destination(self.files[0])


def plan_edit(source: Path, out: Path | None, *, force: bool) -> EditPlan:
    """The photos of ``source`` (a photo or a folder) and their outputs; refuses what cannot be written.

    A single photo's output must not exist (unless ``force``); a folder's results go into a
    folder that must accept new files (existing results are kept and counted, see ``edit_folder``).
    """
    from fgfem.media import check_folder_writable, check_writable, describe_path, iter_image_files

    files = iter_image_files(source)
    if not files:
        raise FgfemError(f"{describe_path(source)} holds no images to edit")
    plan = EditPlan(source=source, out=out, files=files)
    if plan.folder:
        check_folder_writable(plan.first.parent)
    else:
        check_writable(plan.first, force=force)
    return plan


@dataclass
class FolderSummary:
    """What ``edit_folder`` did: results kept because they exist, files that failed and why."""

    total: int
    folder: Path
    existing: int = 0
    failures: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def edited(self) -> int:
        return self.total - self.existing - len(self.failures)


def edit_folder(
    editor: Editor,
    plan: EditPlan,
    spec: EditSpec,
    *,
    on_file: Callable[[Path], None] | None = None,
    on_done: Callable[[Path, str | None], None] | None = None,
    **options: object,
) -> FolderSummary:
    """Edit every photo of a folder plan; a bad file is skipped with its reason, not fatal.

    Results that exist already are kept and counted apart (a rerun is not a failure) unless
    ``force``. ``on_file(src)`` is called before each photo and ``on_done(src, reason)``
    after it (``reason`` is None unless it failed), for a progress display. ``options``
    are ``edit_file``'s.
    """
    summary = FolderSummary(total=len(plan.files), folder=plan.first.parent)
    for src in plan.files:
        if on_file is not None:
            on_file(src)
        dest = plan.destination(src)
        reason: str | None = None
        if dest.exists() and not options.get("force"):
            summary.existing += 1
        else:
            try:
                edit_file(editor, src, dest, spec, **options)  # type: ignore[arg-type]
            except FgfemError as problem:
                reason = str(problem)
                summary.failures.append((src, reason))
        if on_done is not None:
            on_done(src, reason)
    return summary
