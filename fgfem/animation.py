"""Sweeps that drive an ``Editor``: intensity schedules, interpolation frames, the AU grid, their files.

An intensity sweep and the paper's single-AU grid each cost one detection and batched
forward passes. How the pictures are laid out (face views, labels, strips, grids) is
``fgfem.layout``, which knows nothing of models; this module is where the two meet.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fgfem.errors import FgfemError, NoFaceError
from fgfem.layout import crop_view, face_view_box, fit_within, grid, strip

if TYPE_CHECKING:
    from fgfem.editor import Editor, EditResult, EditSpec

# The paper's interpolation figure: 0, 0.5, 0.75, 1, 1.25 times the relative AU change.
DEFAULT_STEPS: tuple[float, ...] = (0.0, 0.5, 0.75, 1.0, 1.25)
# The paper's single-AU grid rows: brow lowerer, upper lid raiser, lid tightener,
# lip corner puller, lip corner depressor, lip stretcher.
DEFAULT_GRID_AUS: tuple[str, ...] = ("4", "5", "7", "12", "15", "20")
# Grid columns are relative changes on the 0-5 scale (what "+2" on a row means).
DEFAULT_GRID_STEPS: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0, 4.0)
MAX_FRAMES = 2000


# --------------------------------------------------------------------------- schedules
def parse_steps(text: str | Sequence[float]) -> list[float]:
    """``"0,0.5,1"`` -> ``[0.0, 0.5, 1.0]``; a clear error for anything else."""
    if not isinstance(text, str):
        values = [float(v) for v in text]
    else:
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if not parts:
            raise FgfemError(f"--steps {text!r}: give comma-separated intensities such as 0,0.5,0.75,1,1.25")
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise FgfemError(f"--steps {text!r}: every step must be a number, e.g. 0,0.5,0.75,1,1.25") from None
    if not values:
        raise FgfemError("--steps is empty; give at least one intensity")
    if not all(math.isfinite(v) for v in values):
        raise FgfemError(f"--steps {text!r}: steps must be finite numbers")
    if any(abs(v) > 10 for v in values):
        raise FgfemError(f"--steps {text!r}: an intensity beyond +-10 cannot mean anything on the 0-5 AU scale")
    return values


def intensity_schedule(steps: Sequence[float], *, frames: int | None = None, boomerang: bool = False) -> list[float]:
    """The intensity of every output frame, in order.

    ``frames`` replaces the steps by that many evenly spaced values from the first to
    the last step (a smooth animation); one frame is the full edit (intensity 1), not
    the first step, which is usually 0 and would show the photo unedited.
    ``boomerang`` plays the sequence back again without repeating its two ends, so a
    looping GIF does not stutter.
    """
    values = [float(s) for s in steps]
    if not values:
        raise FgfemError("no intensities to render; give --steps")
    if frames is not None:
        if frames < 1:
            raise FgfemError(f"--frames must be at least 1, got {frames}")
        if frames > MAX_FRAMES:
            raise FgfemError(f"--frames {frames} is more than {MAX_FRAMES}; nobody watches that many in a GIF")
        values = [1.0] if frames == 1 else [float(v) for v in np.linspace(values[0], values[-1], frames)]
    if boomerang and len(values) > 2:
        values = values + values[-2:0:-1]
    return values


def format_intensity(value: float) -> str:
    """``0.75`` -> ``"0.75"``, ``1.0`` -> ``"1"``: labels read like the command line."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


# --------------------------------------------------------------------------- with a model
@dataclass(frozen=True)
class Frame:
    """One picture of an animation, the intensity it shows and its caption."""

    rgb: np.ndarray
    intensity: float
    label: str


def step_label(spec: object, intensity: float) -> str:
    """Caption for one step: ``AU12 +0.5`` for a single relative ``--au``, else ``x0.5`` (times the change)."""
    from fgfem.aus import AUEdit

    if isinstance(spec, (list, tuple)) and len(spec) == 1 and isinstance(spec[0], AUEdit) and spec[0].relative:
        edit = spec[0]
        value = edit.value * intensity
        return f"{edit.code} {'+' if value >= 0 else '-'}{format_intensity(abs(value))}"
    return f"x{format_intensity(intensity)}"


def _views(result: EditResult, *, full: bool, size: int, max_side: int | None) -> list[np.ndarray]:
    if full:
        return [fit_within(image, max_side) for image in result.images]
    box = face_view_box(result.faces[0].landmarks, result.images[0].shape)
    return [crop_view(image, box, size) for image in result.images]


def interpolation_frames(
    editor: Editor,
    rgb: np.ndarray,
    spec: EditSpec,
    intensities: Sequence[float],
    *,
    face: str = "largest",
    mode: str = "delta",
    full: bool = False,
    size: int = 256,
    max_side: int | None = 1024,
) -> list[Frame]:
    """The photo at each intensity (repeats allowed, rendered once): a view around the first face or the whole photo.

    All distinct intensities go through the generator in one batched call, so a sweep
    costs one detection and one forward pass.
    """
    unique = sorted(set(float(a) for a in intensities))
    result = editor.edit_image(rgb, spec, intensities=unique, face=face, mode=mode)
    views = dict(zip(unique, _views(result, full=full, size=size, max_side=max_side), strict=True))
    return [Frame(views[float(a)], float(a), step_label(spec, float(a))) for a in intensities]


def expression_grid(
    editor: Editor,
    rgb: np.ndarray,
    aus: Sequence[str] = DEFAULT_GRID_AUS,
    steps: Sequence[float] = DEFAULT_GRID_STEPS,
    *,
    face: str = "largest",
    mode: str = "delta",
    full: bool = False,
    size: int = 256,
) -> np.ndarray:
    """The paper's single-AU figure: one row per AU, one column per relative change, labelled cells."""
    from fgfem.aus import AU_CODES, NUM_AUS, au_index

    indices = [au_index(a) for a in aus]
    faces = editor.find_faces(rgb, face)
    rows, labels = [], []
    for index in indices:
        unit = np.zeros(NUM_AUS, dtype=np.float32)
        unit[index] = 1.0
        result = editor.edit_image(rgb, unit, intensities=list(steps), faces=faces, mode=mode)
        rows.append(_views(result, full=full, size=size, max_side=512))
        labels.append([f"{AU_CODES[index]} {'+' if s >= 0 else '-'}{format_intensity(abs(s))}" for s in steps])
    return grid(rows, labels)


ANIMATION_SUFFIXES = (".gif", ".mp4", ".png")


def save_animation(frames: Sequence[Frame], out: Path, *, fps: float = 8.0, force: bool = False) -> Path:
    """Write ``frames`` by the output's suffix: ``.gif`` (looping), ``.mp4`` (H.264) or ``.png`` (a labelled strip)."""
    from fgfem.media import check_writable, save_image

    suffix = out.suffix.lower()
    if suffix not in ANIMATION_SUFFIXES:
        raise FgfemError(f"cannot write {out.name}: use .gif, .mp4 or .png (a labelled strip)")
    if not frames:
        raise FgfemError("no frames to write")
    if not (0 < fps <= 120):
        raise FgfemError(f"--fps {fps:g} must be between 0 and 120")
    check_writable(out, force=force)
    images = [f.rgb for f in frames]
    if suffix == ".png":
        return save_image(None, strip(images, [f.label for f in frames]), out, force=force)
    if suffix == ".gif" and len(images) == 1:
        return save_image(None, images[0], out, force=force)  # a one-frame GIF is a still picture
    from fgfem.video import write_gif, write_mp4

    if suffix == ".gif":
        write_gif(images, out, fps, loop=0, force=force)
    else:
        write_mp4(images, out, fps, force=force)
    return out


# --------------------------------------------------------------------------- fgfem interpolate
MAX_FPS = 120.0
MIN_VIEW, MAX_VIEW = 16, 2048
GRID_SUFFIXES = (".png", ".jpg", ".jpeg")


def check_view(*, fps: float, size: int) -> None:
    """``--fps`` and ``--size``, refused before the model loads (no player shows a GIF at 0 fps)."""
    if not (0 < fps <= MAX_FPS):
        raise FgfemError(f"--fps {fps:g} must be greater than 0 and at most {MAX_FPS:g}")
    if not MIN_VIEW <= size <= MAX_VIEW:
        raise FgfemError(f"--size {size} must be between {MIN_VIEW} and {MAX_VIEW} pixels")


def sweep_schedule(steps: str | None, *, frames: int | None, boomerang: bool) -> list[float]:
    """The intensities ``--steps``/``--frames``/``--boomerang`` ask for (default: the paper's five)."""
    return intensity_schedule(parse_steps(steps) if steps else DEFAULT_STEPS, frames=frames, boomerang=boomerang)


def grid_plan(out: Path, grid_aus: str, steps: str | None, *, edit_given: bool) -> tuple[list[str], list[float]]:
    """The rows (``--grid-aus``) and columns (``--steps``, AU changes) of ``--grid``, checked.

    The grid picks its own single-AU edits, so an ``--au``, ``--expression`` or ``--target``
    is a mistake, and it is one picture, so the output must be one.
    """
    from fgfem.aus import au_index

    if edit_given:
        raise FgfemError("--grid draws its own rows of AUs (--grid-aus); leave out --au, --expression and --target")
    if out.suffix.lower() not in GRID_SUFFIXES:
        raise FgfemError(f"--grid writes a picture: name the output .png (got {out.name})")
    rows = [part.strip() for part in grid_aus.split(",") if part.strip()]
    for row in rows:
        au_index(row)
    return rows, parse_steps(steps) if steps else list(DEFAULT_GRID_STEPS)


def write_grid(editor: Editor, source: Path, out: Path, rows: Sequence[str], columns: Sequence[float], *,
               face: str = "largest", mode: str = "delta", full: bool = False, size: int = 256,
               force: bool = False) -> Path:
    """The paper's AU x change figure of the photo file ``source``, written to ``out``."""
    from fgfem.media import load_image, save_image

    picture = expression_grid(editor, load_image(source).rgb, rows, columns, face=face, mode=mode, full=full,
                              size=size)
    return save_image(None, picture, out, force=force)


def write_sweep(editor: Editor, source: Path, out: Path, spec: EditSpec, schedule: Sequence[float], *,
                face: str = "largest", mode: str = "delta", full: bool = False, size: int = 256, fps: float = 8.0,
                force: bool = False) -> list[Frame]:
    """The photo file ``source`` at every intensity of ``schedule``, written as an animation or strip to ``out``.

    A photo without a face says why (rotated, or its faces too small for its size).
    """
    from fgfem.media import load_image
    from fgfem.request import explain_no_face

    rgb = load_image(source).rgb
    try:
        frames = interpolation_frames(editor, rgb, spec, schedule, face=face, mode=mode, full=full, size=size)
    except NoFaceError as problem:
        raise explain_no_face(problem, editor, lambda: rgb) from None
    save_animation(frames, out, fps=fps, force=force)
    return frames
