"""Move a photo's pixels by the rig's field, at the photo's own resolution.

The field lives in each face's aligned crop frame (``fgfem.rig.field``). It is smooth, so
it is carried back through the alignment instead of the pixels: every photo pixel near the
face looks up its offset in the crop-frame field, turns it into image pixels with the
alignment's inverse, and the photo is resampled once (bicubic) from itself. A 1024 px face
keeps its pores and eyelashes; only their positions change. Pixels where the field is zero
are copied, bit for bit, and only the field's support is read or written.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fgfem.faces.align import AlignedBatch, source_box
from fgfem.rig.field import CropField

SUPPORT_PX = 0.02
"""Crop-frame offsets below this (in crop pixels) count as no motion when bounding the field."""
CAVITY_SHADE = 0.45
"""The inside of the mouth is this much darker than the darkest part of the closed lips' line."""
STILL_PX = 1e-3
"""Image offsets below this are treated as exactly zero: those pixels are copied, not resampled."""


def warp_photo(rgb: np.ndarray, aligned: AlignedBatch, fields: Sequence[CropField | None]) -> np.ndarray:
    """``rgb`` (H x W x 3 uint8) with each face's pixels moved by its field (None: unchanged)."""
    out = np.array(rgb, copy=True)
    for index, field in enumerate(fields):
        if field is not None:
            _warp_face(out, aligned, index, field)
    return out


def _crop_grid(aligned: AlignedBatch, index: int, field: CropField, box: tuple[int, int, int, int]) -> torch.Tensor:
    """1 x h x w x 2: where each image pixel of ``box`` falls in the field's grid (grid_sample units).

    Built by broadcasting a row and a column (float32 is ample: 1e-4 px at 4000 px), because a
    float64 meshgrid over a large face's box cost more than the resampling itself.
    """
    x0, y0, x1, y1 = box
    matrix = torch.as_tensor(np.asarray(aligned.matrices[index], dtype=np.float64), dtype=torch.float32)
    xs = torch.arange(x0, x1, dtype=torch.float32)[None, :]
    ys = torch.arange(y0, y1, dtype=torch.float32)[:, None]
    scale = 2.0 / field.size
    u = (matrix[0, 0] * xs + matrix[0, 1] * ys + (matrix[0, 2] + 0.5)) * scale - 1
    v = (matrix[1, 0] * xs + matrix[1, 1] * ys + (matrix[1, 2] + 0.5)) * scale - 1
    return torch.stack([u, v], dim=-1)[None]


def image_offsets(aligned: AlignedBatch, index: int, field: CropField, box: tuple[int, int, int, int],
                  grid: torch.Tensor | None = None) -> torch.Tensor:
    """2 x h x w: how far (image px) the content shown at each pixel of ``box`` has moved."""
    grid = _crop_grid(aligned, index, field, box) if grid is None else grid
    crop_offsets = F.grid_sample(field.inverse[None], grid, mode="bilinear", padding_mode="zeros",
                                 align_corners=False)[0]
    back = torch.as_tensor(np.asarray(aligned.inverse[index], dtype=np.float64)[:, :2], dtype=torch.float32)
    return torch.einsum("ij,jhw->ihw", back, crop_offsets)


def field_box(aligned: AlignedBatch, index: int, field: CropField) -> tuple[int, int, int, int] | None:
    """The image rectangle where this face's field moves anything."""
    magnitude = field.inverse.abs().amax(dim=0).numpy()
    rows, cols = np.nonzero(magnitude > SUPPORT_PX)
    if rows.size == 0:
        return None
    cell = field.size / field.grid
    crop_box = (cols.min() * cell - 1, rows.min() * cell - 1, (cols.max() + 1) * cell, (rows.max() + 1) * cell)
    return source_box(aligned.inverse[index], crop_box, aligned.image_shape, pad=2)


def _warp_face(out: np.ndarray, aligned: AlignedBatch, index: int, field: CropField) -> None:
    box = field_box(aligned, index, field)
    if box is None:
        return
    x0, y0, x1, y1 = box
    grid_in_crop = _crop_grid(aligned, index, field, box)
    offsets = image_offsets(aligned, index, field, box, grid_in_crop)
    reach = int(np.ceil(float(offsets.abs().max()))) + 3
    height, width = out.shape[:2]
    rx0, ry0 = max(x0 - reach, 0), max(y0 - reach, 0)
    rx1, ry1 = min(x1 + reach, width), min(y1 + reach, height)
    source = torch.from_numpy(np.ascontiguousarray(out[ry0:ry1, rx0:rx1])).permute(2, 0, 1)[None].float()
    xs = torch.arange(x0 - rx0, x1 - rx0, dtype=torch.float32)[None, :]
    ys = torch.arange(y0 - ry0, y1 - ry0, dtype=torch.float32)[:, None]
    gx = (xs - offsets[0] + 0.5) * (2.0 / (rx1 - rx0)) - 1
    gy = (ys - offsets[1] + 0.5) * (2.0 / (ry1 - ry0)) - 1
    warped = F.grid_sample(source, torch.stack([gx, gy], dim=-1)[None], mode="bicubic", padding_mode="border",
                           align_corners=False)[0]
    warped = warped.round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    still = (offsets.abs().amax(dim=0) < STILL_PX).numpy()
    region = out[y0:y1, x0:x1]
    if field.cavity is not None:
        colour = mouth_colour(region, aligned.faces[index].landmarks, (x0, y0))  # the photo, still unwarped
        alpha = F.grid_sample(field.cavity[None, None], grid_in_crop,
                              mode="bilinear", padding_mode="zeros", align_corners=False)[0, 0].numpy()
        inside = alpha > 0
        warped = warped.astype(np.float32)
        warped[inside] = warped[inside] * (1 - alpha[inside, None]) + colour * alpha[inside, None]
        warped = np.clip(np.round(warped), 0, 255).astype(np.uint8)
        still &= ~inside
    np.copyto(region, warped, where=~still[..., None])


def mouth_colour(region: np.ndarray, landmarks: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
    """The colour the inside of an opening mouth shows: the lips' own dark line, darkened further.

    Sampled from the photo itself along the inner-lip line (where the lips meet, the darkest
    part of a closed mouth), so a warm-lit or a grey photo gets a cavity of its own tones.
    """
    x0, y0 = origin
    line = np.asarray(landmarks, dtype=np.float64)[[60, 61, 62, 63, 64]] - (x0, y0)
    samples = []
    for a, b in zip(line[:-1], line[1:], strict=True):
        for t in np.linspace(0.0, 1.0, 8):
            x, y = np.round(a + t * (b - a)).astype(int)
            if 0 <= y < region.shape[0] and 0 <= x < region.shape[1]:
                samples.append(region[y, x, :3].astype(np.float32))
    if not samples:
        return np.array([40.0, 20.0, 20.0], dtype=np.float32)
    values = np.stack(samples)
    darkest = values[np.argsort(values.sum(1))[: max(1, len(values) // 4)]].mean(0)
    return (darkest * CAVITY_SHADE).astype(np.float32)

