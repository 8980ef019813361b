"""Move a photo's pixels by the rig's field, at the photo's own resolution.

The field lives in each face's aligned crop frame (``fgfem.rig.field``). It is smooth, so
it is carried back through the alignment instead of the pixels: every photo pixel near the
face looks up its offset in the crop-frame field, turns it into image pixels with the
alignment's inverse, and the photo is resampled once from itself. A 1024 px face keeps its
pores and eyelashes; only their positions change. Pixels where the field is zero are copied,
bit for bit, and only the field's support is read or written.

Two kernels (``RESAMPLE``): photos are resampled with Lanczos (8 x 8 taps), video frames with
bicubic (4 x 4). Every fractional shift low-passes an image; bicubic takes off much more of the
finest detail than Lanczos: on two official portraits from face_recognition's test images
(faces 244 and 286 px jaw to jaw) the variance of the Laplacian inside the face after AU04 +1
fell to 0.89-0.98 of the photo's with bicubic and 0.94-1.00 with Lanczos (AU12: 0.92-0.95 ->
0.96-0.98). Lanczos costs 3x bicubic (4.3 against 1.4 ms for a 213 px face in a 720p frame),
which a render would pay on every frame, of frames that a video codec has already smoothed.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from fgfem.faces.align import AlignedBatch, source_box, to_3x3
from fgfem.rig.field import CropField

SUPPORT_PX = 0.02
"""Crop-frame offsets below this (in crop pixels) count as no motion when bounding the field."""
CAVITY_SHADE = 0.45
"""The inside of the mouth is this much darker than the darkest part of the closed lips' line."""
STILL_PX = 1e-3
"""Image offsets below this are treated as exactly zero: those pixels are copied, not resampled."""
RESAMPLE = {"lanczos": cv2.INTER_LANCZOS4, "cubic": cv2.INTER_CUBIC}
"""The resampling kernels by name: ``lanczos`` for photos, ``cubic`` for video frames (module docstring)."""


def warp_photo(rgb: np.ndarray, aligned: AlignedBatch, fields: Sequence[CropField | None], *,
               resample: str = "lanczos") -> np.ndarray:
    """``rgb`` (H x W x 3 uint8) with each face's pixels moved by its field (None: unchanged).

    ``resample``: a ``RESAMPLE`` kernel name.
    """
    if resample not in RESAMPLE:
        raise ValueError(f"resample {resample!r}: choose one of {', '.join(RESAMPLE)}")
    out = np.array(rgb, copy=True)
    for index, field in enumerate(fields):
        if field is not None:
            _warp_face(out, aligned, index, field, RESAMPLE[resample])
    return out


def _box_to_grid(aligned: AlignedBatch, index: int, field: CropField, box: tuple[int, int, int, int]) -> np.ndarray:
    """2 x 3: image pixel (j, i) of ``box`` -> its position in the field's grid (grid cells, pixel centres).

    Composed of the alignment (image -> crop px) and the crop-to-grid step, so that one
    ``cv2.warpAffine`` samples the field at every pixel of the box.
    """
    x0, y0 = box[:2]
    to_crop = to_3x3(np.asarray(aligned.matrices[index], dtype=np.float64))
    cells = 1.0 / field.spacing  # grid cells per crop pixel; cell j's centre at (u + 0.5 - origin) * cells - 0.5
    offset = (0.5 - field.origin) * cells - 0.5
    to_grid = np.array([[cells, 0.0, offset], [0.0, cells, offset], [0.0, 0.0, 1.0]])
    shift = np.array([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]])
    return (to_grid @ to_crop @ shift)[:2]


def _sample_grid(values: np.ndarray, box_to_grid: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """``values`` (G x G or G x G x C float32, on the field's grid) bilinearly sampled at each pixel of
    ``box``, zero outside the grid (what ``grid_sample`` with zero padding gives)."""
    x0, y0, x1, y1 = box
    return cv2.warpAffine(values, box_to_grid, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def image_offsets(aligned: AlignedBatch, index: int, field: CropField, box: tuple[int, int, int, int],
                  box_to_grid: np.ndarray | None = None) -> np.ndarray:
    """h x w x 2 float32: how far (image px) the content shown at each pixel of ``box`` has moved."""
    box_to_grid = _box_to_grid(aligned, index, field, box) if box_to_grid is None else box_to_grid
    crop_offsets = _sample_grid(np.ascontiguousarray(field.inverse.permute(1, 2, 0).numpy()), box_to_grid, box)
    back = np.asarray(aligned.inverse[index], dtype=np.float32)[:, :2]
    return cv2.transform(crop_offsets, back)  # the 2 x 2 per pixel, ~10x a matmul over a last axis of 2


def field_box(aligned: AlignedBatch, index: int, field: CropField) -> tuple[int, int, int, int] | None:
    """The image rectangle where this face's field moves anything."""
    magnitude = field.inverse.abs().amax(dim=0).numpy()
    rows, cols = np.nonzero(magnitude > SUPPORT_PX)
    if rows.size == 0:
        return None
    cell, edge = field.spacing, field.origin - 0.5
    crop_box = (edge + cols.min() * cell - 1, edge + rows.min() * cell - 1, edge + (cols.max() + 1) * cell + 1,
                edge + (rows.max() + 1) * cell + 1)
    return source_box(aligned.inverse[index], crop_box, aligned.image_shape, pad=2)


def _warp_face(out: np.ndarray, aligned: AlignedBatch, index: int, field: CropField, kernel: int) -> None:
    """Resample this face's box of ``out`` in place with ``kernel`` (OpenCV's), from the photo itself, on uint8.

    OpenCV's remap works on the uint8 pixels directly (its bicubic is the same Keys kernel,
    a = -0.75, as torch's; positions to 1/32 px): ~5x cheaper than converting the box to
    float for ``grid_sample`` and back, and this runs on every frame of a render.
    """
    box = field_box(aligned, index, field)
    if box is None:
        return
    x0, y0, x1, y1 = box
    box_to_grid = _box_to_grid(aligned, index, field, box)
    offsets = image_offsets(aligned, index, field, box, box_to_grid)
    # Per pixel the larger of |dx| and |dy|, as two elementwise maxima: numpy's reduction over
    # a last axis of 2 costs ~2 ms on a 720p frame's face, more than the bicubic resample.
    magnitude = np.maximum(np.abs(offsets[..., 0]), np.abs(offsets[..., 1]))
    reach = int(np.ceil(float(magnitude.max()))) + 5  # Lanczos reads 4 px either side
    height, width = out.shape[:2]
    rx0, ry0 = max(x0 - reach, 0), max(y0 - reach, 0)
    rx1, ry1 = min(x1 + reach, width), min(y1 + reach, height)
    source = np.ascontiguousarray(out[ry0:ry1, rx0:rx1])
    map_x = np.arange(x0 - rx0, x1 - rx0, dtype=np.float32)[None, :] - offsets[..., 0]
    map_y = np.arange(y0 - ry0, y1 - ry0, dtype=np.float32)[:, None] - offsets[..., 1]
    warped = cv2.remap(source, map_x, map_y, kernel, borderMode=cv2.BORDER_REPLICATE)
    still = magnitude < STILL_PX
    region = out[y0:y1, x0:x1]
    if field.cavity is not None:
        colour = mouth_colour(region, aligned.faces[index].landmarks, (x0, y0))  # the photo, still unwarped
        alpha = _sample_grid(np.ascontiguousarray(field.cavity.numpy()), box_to_grid, box)
        inside = alpha > 0
        warped = warped.astype(np.float32)
        warped[inside] = warped[inside] * (1 - alpha[inside, None]) + colour * alpha[inside, None]
        warped = np.clip(np.round(warped), 0, 255).astype(np.uint8)
        still &= ~inside
    # In place through the view (rows strided, pixels contiguous): ~50x np.copyto with a broadcast mask.
    cv2.copyTo(warped, (~still).view(np.uint8), region)


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

