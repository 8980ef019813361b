"""Preview grids: the same held-out faces under the same AU edits, so runs can be compared by eye.

Rows are faces; columns are the input, the zero edit (should look like the input) and
one-AU edits of +1 on the 0-5 scale (smile AU12, frown AU4, jaw drop AU26, lip corners
down AU15). A run behind the rig previews its edits behind the rig.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

from fgfem.atomic import atomic_path
from fgfem.aus import AU_SCALE, NUM_AUS, au_index
from fgfem.tensor_images import to_uint8

PREVIEW_EDITS: tuple[tuple[str, dict[str, float]], ...] = (
    ("zero", {}),
    ("AU12 +1", {"AU12": 1.0}),
    ("AU04 +1", {"AU04": 1.0}),
    ("AU26 +1", {"AU26": 1.0}),
    ("AU15 +1", {"AU15": 1.0}),
)
LABEL_HEIGHT = 14


def edit_vectors() -> torch.Tensor:
    """The preview edits as relative vectors on the networks' scale (E x 17)."""
    rows = torch.zeros(len(PREVIEW_EDITS), NUM_AUS)
    for row, (_, edits) in enumerate(PREVIEW_EDITS):
        for code, value in edits.items():
            rows[row, au_index(code)] = value / AU_SCALE
    return rows


@torch.no_grad()
def preview_grid(generator: nn.Module, faces: torch.Tensor, *,
                 autocast: contextlib.AbstractContextManager[object] | None = None,
                 geometry: Callable[[torch.Tensor], torch.Tensor] | None = None) -> np.ndarray:
    """An H x W x 3 uint8 grid: one row per face, columns input + each of ``PREVIEW_EDITS``.

    ``geometry`` (a run behind the rig, ``--rig``) gives the faces moved for a batch of
    relative vectors; the generator then edits those, as ``fgfem edit`` does.
    """
    device = next(generator.parameters()).device
    was_training = generator.training
    generator.eval()
    faces = faces.to(device)
    columns = [faces]
    for rel in edit_vectors().to(device):
        rows = rel.expand(faces.shape[0], -1)
        moved = faces if geometry is None else geometry(rows).to(device)
        with autocast or contextlib.nullcontext():
            columns.append(generator(moved, rows).float())
    generator.train(was_training)
    grid = torch.cat([torch.cat(list(col), dim=-1) for col in zip(*columns, strict=True)], dim=-2)  # rows of faces
    return to_uint8(grid)


def save_preview(path: Path, grid: np.ndarray, face_size: int) -> None:
    """Write ``grid`` with a label strip naming each column, atomically."""
    labels = ["input"] + [name for name, _ in PREVIEW_EDITS]
    canvas = Image.new("RGB", (grid.shape[1], grid.shape[0] + LABEL_HEIGHT), "white")
    canvas.paste(Image.fromarray(grid), (0, LABEL_HEIGHT))
    draw = ImageDraw.Draw(canvas)
    for column, label in enumerate(labels):
        draw.text((column * face_size + 2, 1), label, fill="black")
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
