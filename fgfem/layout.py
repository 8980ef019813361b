"""Picture layout: face views, labelled cells, strips, grids and the before/after picture.

Plain ``H x W x 3`` uint8 arrays in and out, numpy and PIL only: no model, no editor, so
``fgfem interpolate`` (``fgfem.animation``), ``fgfem edit --compare`` (``fgfem.edit_files``)
and the web editor share one layout and tests check it without a generator. Labels sit
*under* each cell (as in the paper's figures) and use PIL's built-in font, so nothing is
downloaded or looked up at run time.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = 255
TEXT_COLOUR = (20, 20, 20)


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
