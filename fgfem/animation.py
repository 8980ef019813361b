"""Pictures made of pictures: intensity schedules, face views, labelled strips and grids.

The layout helpers work on plain ``H x W x 3`` uint8 arrays and know nothing about
models, so ``fgfem interpolate`` and ``fgfem edit --compare`` share them and tests can
check them without a generator. Labels sit *under* each cell (as in the paper's
figures) and use PIL's built-in font, so nothing is downloaded or looked up at run time.
The last section turns an ``Editor`` into frames: an intensity sweep and the paper's
single-AU grid, both from one detection and batched forward passes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fgfem.errors import FgfemError

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
BACKGROUND = 255
TEXT_COLOUR = (20, 20, 20)


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


# --------------------------------------------------------------------------- face views
def face_view_box(
    points: np.ndarray, image_shape: tuple[int, ...], *, margin: float = 0.9
) -> tuple[int, int, int, int]:
    """A square ``(x0, y0, x1, y1)`` around ``points`` (landmarks or box corners), inside the image.

    ``margin`` widens the square by that fraction of the face size on each side, so the
    view shows hair and chin, not just the inner face the model sees. Near an edge the
    square slides inwards rather than shrinking, so every frame of an animation has the
    same shape.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    height, width = int(image_shape[0]), int(image_shape[1])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    centre = (lo + hi) / 2
    side = max(hi - lo) * (1 + 2 * margin)
    side = int(round(min(max(side, 16), width, height)))
    x0 = int(round(centre[0] - side / 2))
    y0 = int(round(centre[1] - side / 2))
    x0 = min(max(x0, 0), width - side)
    y0 = min(max(y0, 0), height - side)
    return x0, y0, x0 + side, y0 + side


def crop_view(rgb: np.ndarray, box: tuple[int, int, int, int], size: int | None = None) -> np.ndarray:
    """Cut ``box`` out of ``rgb`` and (optionally) resize it to ``size`` x ``size`` with a good filter."""
    x0, y0, x1, y1 = box
    view = np.ascontiguousarray(rgb[y0:y1, x0:x1])
    if size is None or view.shape[0] == size:
        return view
    return np.asarray(Image.fromarray(view).resize((size, size), Image.Resampling.LANCZOS))


def fit_within(rgb: np.ndarray, max_side: int | None) -> np.ndarray:
    """Shrink ``rgb`` so that its longer side is at most ``max_side`` (never enlarges)."""
    if max_side is None or max(rgb.shape[:2]) <= max_side:
        return rgb
    scale = max_side / max(rgb.shape[:2])
    size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))


# --------------------------------------------------------------------------- labels
@lru_cache(maxsize=8)
def label_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's built-in font at ``size`` px (scalable since Pillow 10.1; bitmap fallback before)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size bitmap font
        return ImageFont.load_default()


def label_size_for(cell_width: int) -> int:
    """A font size that fits a dozen characters under a cell of this width."""
    return int(min(max(cell_width // 10, 12), 48))


def labelled_cell(rgb: np.ndarray, label: str, *, font_size: int | None = None) -> np.ndarray:
    """``rgb`` with a white band underneath holding ``label``, centred."""
    height, width = rgb.shape[:2]
    font_size = font_size or label_size_for(width)
    band = int(round(font_size * 1.6))
    canvas = Image.new("RGB", (width, height + band), (BACKGROUND,) * 3)
    canvas.paste(Image.fromarray(np.ascontiguousarray(rgb[..., :3])), (0, 0))
    if label:
        draw = ImageDraw.Draw(canvas)
        font = label_font(font_size)
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        x = (width - (right - left)) / 2 - left
        y = height + (band - (bottom - top)) / 2 - top
        draw.text((x, y), label, fill=TEXT_COLOUR, font=font)
    return np.asarray(canvas)


def _same_shape(cells: Sequence[np.ndarray]) -> None:
    shapes = {c.shape for c in cells}
    if len(shapes) != 1:
        raise ValueError(f"cells must share one shape, got {sorted(shapes)}")


def strip(cells: Sequence[np.ndarray], labels: Sequence[str] | None = None, *, gap: int = 4) -> np.ndarray:
    """Cells side by side, each labelled underneath, separated by ``gap`` white pixels."""
    if not cells:
        raise ValueError("strip needs at least one cell")
    _same_shape(cells)
    labels = list(labels) if labels is not None else [""] * len(cells)
    if len(labels) != len(cells):
        raise ValueError(f"{len(cells)} cells but {len(labels)} labels")
    font_size = label_size_for(cells[0].shape[1])
    done = [labelled_cell(c, t, font_size=font_size) if any(labels) else c for c, t in zip(cells, labels, strict=True)]
    return _join(done, axis=1, gap=gap)


def grid(
    rows: Sequence[Sequence[np.ndarray]],
    labels: Sequence[Sequence[str]],
    *,
    gap: int = 4,
) -> np.ndarray:
    """A table of cells (``rows[r][c]``), each with its own label underneath."""
    if not rows or not rows[0]:
        raise ValueError("grid needs at least one cell")
    columns = len(rows[0])
    if any(len(r) != columns for r in rows) or len(labels) != len(rows):
        raise ValueError("every grid row needs the same number of cells and labels")
    return _join([strip(r, t, gap=gap) for r, t in zip(rows, labels, strict=True)], axis=0, gap=gap)


def side_by_side(before: np.ndarray, after: np.ndarray, labels: tuple[str, str] = ("before", "after")) -> np.ndarray:
    """The ``--compare`` picture: input and output next to each other, labelled."""
    return strip([before, after], list(labels), gap=max(4, before.shape[1] // 100))


def _join(images: Sequence[np.ndarray], *, axis: int, gap: int) -> np.ndarray:
    if len(images) == 1:
        return np.ascontiguousarray(images[0])
    shape = list(images[0].shape)
    shape[axis] = gap
    spacer = np.full(shape, BACKGROUND, dtype=np.uint8)
    parts: list[np.ndarray] = []
    for i, image in enumerate(images):
        if i:
            parts.append(spacer)
        parts.append(image)
    return np.ascontiguousarray(np.concatenate(parts, axis=axis))


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
