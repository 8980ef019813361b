"""Pictures and text the page shows: face views, numbered face boxes, the AU readout.

Small images keep a slider update cheap: the browser gets a view around the face and a
photo no larger than ``PREVIEW_SIDE``; the full-resolution photo only travels on "download".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from fgfem.aus import ACTION_UNITS
from fgfem.layout import crop_view, face_view_box, fit_within, label_font

if TYPE_CHECKING:
    from fgfem.faces import Face

PREVIEW_SIDE = 1024
VIEW_SIDE = 384
# FACS groups the eye region and brows as the upper face; the nose wrinkle and the mouth as the lower face.
UPPER_FACE = ("AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU45")
LOWER_FACE = ("AU09", "AU10", "AU12", "AU14", "AU15", "AU17", "AU20", "AU23", "AU25", "AU26")


def au_label(code: str) -> str:
    """``AU12 lip corner puller``: code and name, as the slider's label."""
    unit = next(au for au in ACTION_UNITS if au.code == code)
    return f"{code} {unit.name.replace('_', ' ')}"


def face_view(rgb: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
    """A square around the first face (as ``fgfem interpolate`` shows it); the whole photo for several faces."""
    if len(faces) != 1:
        return fit_within(rgb, VIEW_SIDE * 2)
    box = face_view_box(faces[0].landmarks, rgb.shape)
    return crop_view(rgb, box, VIEW_SIDE)


def preview(rgb: np.ndarray) -> np.ndarray:
    return fit_within(rgb, PREVIEW_SIDE)


def numbered_faces(rgb: np.ndarray, faces: Sequence[Face], side: int = 640) -> np.ndarray:
    """The photo with a numbered box on each face, numbered left to right like ``--face N``."""
    scale = min(1.0, side / max(rgb.shape[:2]))
    image = Image.fromarray(fit_within(rgb, side)).convert("RGB")
    draw = ImageDraw.Draw(image)
    font = label_font(max(14, round(max(image.size) / 22)))
    for number, face in enumerate(faces):
        x0, y0, x1, y1 = (float(v) * scale for v in face.box)
        width = max(2, round(max(image.size) / 320))
        draw.rectangle((x0, y0, x1, y1), outline=(255, 200, 0), width=width)
        text = str(number)
        left, top, right, bottom = draw.textbbox((x0, y0), text, font=font)
        draw.rectangle((left - 3, top - 3, right + 3, bottom + 3), fill=(255, 200, 0))
        draw.text((x0, y0), text, fill=(0, 0, 0), font=font)
    return np.asarray(image)


def readout_markdown(aus: np.ndarray, what: str = "") -> str:
    """The source face's AUs (0-5, fgfem's landmark estimator) on one wrapped line."""
    values = " · ".join(f"{au.code} {float(v):.2f}" for au, v in zip(ACTION_UNITS, aus, strict=True))
    return f"**Source face AUs**{f' ({what})' if what else ''}, 0-5: {values}"
