"""What an edit asks for, checked before any model loads: the part ``edit``, ``interpolate`` and ``render`` share.

A request is ``--au`` and/or ``--expression`` edits, or the expression of a ``--target``
photo (``render`` also takes a ``--driver`` video). Everything that can be refused from
the options alone is refused here, at once, so a typo never waits for the model to load;
what needs the model (a target's AUs need the face backend) happens in ``EditRequest.spec``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fgfem.errors import FgfemError, NoFaceError

if TYPE_CHECKING:
    import numpy as np

    from fgfem.aus import AUEdit
    from fgfem.editor import Editor, EditSpec, TargetExpression

# What ``Editor.find_faces`` and ``Editor.edit_image`` say when a photo has no face.
PLAIN_NO_FACE = ("no face found in the image (try a larger, frontal, well-lit face, or --backend fan)",
                 "no face found in the image")


def check_intensity(value: float) -> float:
    """``--intensity`` scales the AU change: NaN or infinity would silently write a garbage photo."""
    if not math.isfinite(value) or abs(value) > 10:
        raise FgfemError(f"--intensity {value:g}: give a finite number between -10 and 10 (1 = the change as asked)")
    return value


def check_one_source(au: Sequence[str] | None, **others: object) -> None:
    """Exactly one way of saying what to change: ``--au`` or one of ``others`` (``--target``, ``--driver``)."""
    given = (["--au"] if au else []) + [f"--{name}" for name, value in others.items() if value]
    names = " or ".join(["--au", *(f"--{n}" for n in others)])
    if not given:
        raise FgfemError(f"say what to change: give {names} (e.g. --au 12=+1.0)")
    if len(given) > 1:
        raise FgfemError(f"give only one of {names}, not {' and '.join(given)}")


def load_target(editor: Editor, path: Path) -> TargetExpression:
    """The expression of the largest face in the image file ``path`` (for ``--target``)."""
    from fgfem.media import load_image

    return editor.target_expression(load_image(path).rgb, label=f"target image {Path(path).name}")


def explain_no_face(problem: NoFaceError, editor: Editor, rgb: Callable[[], np.ndarray]) -> NoFaceError:
    """The editor's plain "no face found" made specific: a rotated photo, or the smallest face findable here.

    Other "no face" errors (a ``--target`` image's, or one already made specific) pass through;
    ``rgb`` is only called for the plain one.
    """
    from fgfem.faces import no_face_message

    if str(problem) not in PLAIN_NO_FACE:
        return problem
    return NoFaceError(no_face_message(editor.backend, rgb()))


@dataclass(frozen=True)
class EditRequest:
    """``--au``/``--expression`` edits, the expression of a ``--target`` photo, or a ``--driver`` video's changes."""

    edits: list[AUEdit] | None = None
    target: Path | None = None
    driver: Path | None = None
    driver_neutral: int = 0

    @classmethod
    def from_options(cls, au: Sequence[str] | None, expression: Sequence[str] | None,
                     target: Path | None) -> EditRequest:
        """``--au`` and ``--expression`` together, or ``--target`` alone; parsed and checked."""
        from fgfem.presets import check_edit_sources, edits_from_options

        check_edit_sources(au, expression, target)
        return cls(edits=edits_from_options(au, expression), target=target)

    @classmethod
    def for_video(cls, au: Sequence[str] | None, *, driver: Path | None, target: Path | None,
                  driver_neutral: int = 0) -> EditRequest:
        """``render``'s: ``--au``, ``--driver`` or ``--target``, exactly one."""
        from fgfem.aus import parse_au_specs

        check_one_source(au, driver=driver, target=target)
        return cls(edits=parse_au_specs(au) if au else None, target=target, driver=driver,
                   driver_neutral=driver_neutral)

    def scaled(self, intensity: float) -> tuple[EditRequest, float]:
        """``--intensity`` folded into the ``--au`` edits, and the intensity left to apply (1, or a target's).

        Folding it in lets the 0-5 clamp see the change really applied, so the combined
        change is checked as a whole; ``--target`` keeps its intensity.
        """
        from fgfem.aus import scaled_edits

        check_intensity(intensity)
        if not self.edits:
            return self, intensity
        self.check_intensities([intensity])
        return dataclasses.replace(self, edits=scaled_edits(self.edits, intensity)), 1.0

    def check_intensities(self, intensities: Iterable[float], option: str = "--intensity") -> None:
        """Refuse a relative change that some intensity (``--steps``, a sweep) scales beyond the model's range."""
        from fgfem.aus import check_combined_change

        if self.edits:
            check_combined_change(self.edits, intensities, option=option)

    def describe(self, intensity: float = 1.0) -> str:
        """What the summary line says was asked: ``AU12 +1.00 x0.5`` or ``expression of other.jpg``."""
        from fgfem.aus import format_edits
        from fgfem.media import describe_path

        what = format_edits(self.edits) if self.edits else f"expression of {describe_path(self.target.name)}"
        return what + (f" x{intensity:g}" if intensity != 1 else "")

    def spec(self, editor: Editor) -> EditSpec:
        """What ``Editor.edit_image`` takes: the edits, or the target photo's AUs (read with ``editor``)."""
        if self.edits is not None:
            return self.edits
        if self.target is None:
            raise FgfemError("say what to change: give --au, --expression or --target")
        return load_target(editor, self.target)

    def video_spec(self, editor: Editor) -> EditSpec | Callable[[int], EditSpec]:
        """What ``fgfem.render.render_video`` takes: ``spec``'s, or a driver's change at each frame index.

        A driver is measured frame by frame here (the slow part before a driven render);
        beyond its last frame its last change holds.
        """
        if self.driver is None:
            return self.spec(editor)
        from fgfem.render import driver_changes

        changes = driver_changes(editor, self.driver, neutral=self.driver_neutral)
        return lambda index: changes[min(index, len(changes) - 1)]


def check_render(source: Path, out: Path, *, driver: Path | None, intensity: float, batch: int, redetect: int,
                 encoder_preset: str | None, force: bool) -> None:
    """Everything ``fgfem render`` can refuse before the model loads: inputs, output name and format, settings.

    These sit here rather than in ``fgfem.render`` so that the render pipeline module stays
    about frames; they are the command's promise to fail at once, not a property of rendering.
    """
    from fgfem.media import check_writable, describe_path, is_video
    from fgfem.video import WRITABLE_SUFFIXES, X264_PRESETS, writable_suffixes_text

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
