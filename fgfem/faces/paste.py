"""Paste-back: put edited face crops into the full-resolution original.

The default pastes the *change* (docs/design.md, "Paste-back")::

    out = original + mask * warp_back(G(x, r) - G(x, 0))

so a zero edit returns the photo bit for bit, the photo's own detail (skin, hair, the
sharpness of a 1024 px face) survives a 128 px model, and colour casts of the generator
cancel. ``mode="crop"`` pastes the crop itself, colour-matched to the photo inside the
mask, for comparison.

The mask is built in crop space (the convex hull of the landmarks, raised above the
brows to take in some forehead, dilated and blurred, and faded to zero before the
crop's border) and warped back with the crop. Only the bounding box of the mask's
support is read and written: every other pixel of the original is returned unchanged,
bit for bit, and a 4000 px photo costs no more than a small one.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from fgfem.errors import FgfemError
from fgfem.faces.align import AlignedBatch, landmarks_in_crop, sample, source_box, to_3x3
from fgfem.faces.base import as_rgb

MODES = ("delta", "crop")
FOREHEAD = 0.35
"""How far above the brows the mask reaches, as a fraction of the brow-to-nose-tip height."""
MASK_RESOLUTION = 64
"""Side (px) at which the mask is drawn and blurred before being resized to the crop."""
DILATE = 1.04
"""The hull is scaled by this about its centre so the blurred edge lies just outside the landmarks."""


def convex_hull(points: np.ndarray) -> np.ndarray:
    """Convex hull (counter-clockwise, Andrew's monotone chain) of 2-D points."""
    pts = sorted(map(tuple, np.asarray(points, dtype=np.float64)))

    def half(seq: list[tuple[float, float]]) -> list[tuple[float, float]]:
        out: list[tuple[float, float]] = []
        for p in seq:
            while len(out) >= 2 and ((out[-1][0] - out[-2][0]) * (p[1] - out[-2][1])
                                     - (out[-1][1] - out[-2][1]) * (p[0] - out[-2][0])) <= 0:
                out.pop()
            out.append(p)
        return out

    lower, upper = half(pts), half(pts[::-1])
    return np.array(lower[:-1] + upper[:-1])


def _gaussian_blur(mask: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur, zero outside the crop (which pulls the mask down at its border).

    Done as two small matrix products (``K @ mask @ K.T``), cheaper than a 1-channel
    ``conv2d`` with a long kernel on a CPU.
    """
    if sigma <= 0:
        return mask
    kernel = _blur_matrix(mask.shape[0], float(sigma))
    return kernel @ mask.astype(np.float32) @ kernel.T


@functools.lru_cache(maxsize=8)
def _blur_matrix(size: int, sigma: float) -> np.ndarray:
    offsets = np.arange(size, dtype=np.float64)
    kernel = np.exp(-0.5 * ((offsets[:, None] - offsets[None, :]) / sigma) ** 2)
    kernel /= np.sqrt(2 * np.pi) * sigma  # the full-line integral, so mass leaving the crop is lost
    return kernel.astype(np.float32)


def crop_mask(crop_landmarks: np.ndarray, size: int, feather: float = 0.05) -> np.ndarray:
    """Soft face mask (size x size float32 in [0, 1]) in crop space.

    ``feather`` is the blur's sigma as a fraction of the crop size. Crops are upright
    (aligned to the template), so "above the brows" is simply up.
    """
    points = np.asarray(crop_landmarks, dtype=np.float64)
    brows = points[17:27]
    lift = FOREHEAD * max(float(points[30, 1] - brows[:, 1].mean()), 0.0)
    outline = np.concatenate([points, brows - np.array([0.0, lift])])
    centre = outline.mean(0)
    hull = (convex_hull(outline) - centre) * DILATE + centre
    # The mask is smooth, so it is drawn and blurred at a coarse resolution and then resized:
    # the blur is two 64 x 64 matrix products however large the crop.
    work = min(size, MASK_RESOLUTION)
    zoom = work / size
    canvas = Image.new("L", (work, work), 0)
    # PIL polygons use pixel corners; our coordinates are pixel centres.
    ImageDraw.Draw(canvas).polygon([((x + 0.5) * zoom, (y + 0.5) * zoom) for x, y in hull.tolist()], fill=255)
    sigma = feather * size
    soft = _gaussian_blur(np.asarray(canvas, dtype=np.float32) / 255.0, sigma * zoom)
    if work != size:
        soft = np.asarray(Image.fromarray(soft, mode="F").resize((size, size), Image.Resampling.BILINEAR))
    # Fade to exactly zero before the crop border so the warped-back mask has no edge.
    ramp = np.clip((np.arange(size, dtype=np.float32) + 0.5) / max(2.0 * sigma, 1.0), 0.0, 1.0)
    ramp = np.minimum(ramp, ramp[::-1])
    soft = soft * ramp[None, :] * ramp[:, None]
    soft[soft < 1.0 / 512] = 0.0
    return np.clip(soft, 0.0, 1.0).astype(np.float32)


def _crop_mask_for(aligned: AlignedBatch, index: int, feather: float) -> np.ndarray:
    landmarks = landmarks_in_crop(aligned.faces[index], aligned.matrices[index])
    return crop_mask(landmarks, aligned.size, feather)


def _warp_back(aligned: AlignedBatch, index: int, channels: torch.Tensor, mask: np.ndarray
               ) -> tuple[tuple[int, int, int, int], torch.Tensor] | None:
    """Warp crop-space channels (C x s x s) into the image rectangle covered by the mask's support."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    box = source_box(aligned.inverse[index], (cols.min() - 1, rows.min() - 1, cols.max() + 1, rows.max() + 1),
                     aligned.image_shape, pad=1)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    height, width = y1 - y0, x1 - x0
    roi_to_crop = to_3x3(aligned.matrices[index]) @ np.array([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]])
    # A 128 px crop carries no detail finer than ~2 image pixels of a big face: sample it on a
    # grid `step` times coarser than the image and let a separable bilinear upsample fill in,
    # several times cheaper than grid_sample over every pixel of a 2000 px face.
    crop_per_pixel = float(np.sqrt(abs(np.linalg.det(aligned.matrices[index][:, :2]))))
    step = max(1, int(0.5 / crop_per_pixel))
    if step == 1:
        warped = sample(channels[None].float(), roi_to_crop[None], (height, width), padding_mode="zeros")
        return box, warped[0]
    coarse_h, coarse_w = -(-height // step), -(-width // step)
    # Coarse pixel j sits at image pixel (j + 0.5) * step - 0.5, as F.interpolate assumes.
    coarse_to_roi = np.array([[step, 0.0, 0.5 * step - 0.5], [0.0, step, 0.5 * step - 0.5], [0.0, 0.0, 1.0]])
    coarse = sample(channels[None].float(), (roi_to_crop @ coarse_to_roi)[None], (coarse_h, coarse_w),
                    padding_mode="zeros")
    fine = F.interpolate(coarse, size=(coarse_h * step, coarse_w * step), mode="bilinear", align_corners=False)
    return box, fine[0, :, :height, :width]


def face_mask(aligned: AlignedBatch, index: int, feather: float = 0.05) -> np.ndarray:
    """The paste mask of face ``index`` in the original image (H x W float32 in [0, 1])."""
    mask = _crop_mask_for(aligned, index, feather)
    full = np.zeros(aligned.image_shape, dtype=np.float32)
    placed = _warp_back(aligned, index, torch.from_numpy(mask)[None], mask)
    if placed is not None:
        (x0, y0, x1, y1), warped = placed
        full[y0:y1, x0:x1] = warped[0].numpy()
    return full


def _match_colours(edited: torch.Tensor, original: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-channel mean/std of ``edited`` moved to those of ``original``, both weighted by the mask."""
    total = weight.sum().clamp_min(1e-6)

    def stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = (x * weight).sum((1, 2), keepdim=True) / total
        std = (((x - mean) ** 2 * weight).sum((1, 2), keepdim=True) / total).sqrt()
        return mean, std

    mean_e, std_e = stats(edited)
    mean_o, std_o = stats(original)
    return (edited - mean_e) * (std_o / std_e.clamp_min(1e-6)) + mean_o


def paste_back(original_rgb: np.ndarray, edited: torch.Tensor, reference: torch.Tensor | None,
               aligned: AlignedBatch, *, mode: str = "delta", feather: float = 0.05,
               in_place: bool = False) -> np.ndarray:
    """The original photo with every aligned face replaced by its edit (H x W x 3 uint8).

    ``edited`` and ``reference`` are B x 3 x s x s in [-1, 1], one per face of
    ``aligned``; ``reference`` is G(x, 0) and is required by ``mode="delta"``.
    Faces are pasted in order, so where two masks overlap the later face wins.
    ``in_place`` may write into ``original_rgb`` itself (where it is a contiguous H x W x 3
    uint8 array): for the rig's freshly warped copy of a frame, one full-frame copy less.
    """
    if mode not in MODES:
        raise FgfemError(f"unknown paste mode {mode!r}; use {' or '.join(MODES)}")
    original = as_rgb(original_rgb)
    if original.shape[:2] != tuple(aligned.image_shape):
        raise FgfemError(f"paste-back image is {original.shape[1]}x{original.shape[0]} but the faces were "
                         f"aligned on a {aligned.image_shape[1]}x{aligned.image_shape[0]} image")
    expected = (len(aligned), 3, aligned.size, aligned.size)
    edited = edited.detach().to("cpu", torch.float32)
    if tuple(edited.shape) != expected:
        raise FgfemError(f"edited crops have shape {tuple(edited.shape)}, expected {expected}")
    if mode == "delta":
        if reference is None:
            raise FgfemError("paste mode 'delta' needs the reference crops G(x, 0)")
        reference = reference.detach().to("cpu", torch.float32)
        if tuple(reference.shape) != expected:
            raise FgfemError(f"reference crops have shape {tuple(reference.shape)}, expected {expected}")
    out = original if in_place else original.copy()
    for index in range(len(aligned)):
        mask = _crop_mask_for(aligned, index, feather)
        mask_t = torch.from_numpy(mask)
        if mode == "delta":
            payload = torch.nan_to_num((edited[index] - reference[index]) * 127.5)
        else:
            source = aligned.crops[index].detach().to("cpu", torch.float32)
            payload = torch.nan_to_num((_match_colours(edited[index], source, mask_t[None]) + 1.0) * 127.5)
        placed = _warp_back(aligned, index, torch.cat([mask_t[None], payload]), mask)
        if placed is None:
            continue
        (x0, y0, x1, y1), warped = placed
        alpha = warped[:1].clamp_(0.0, 1.0)
        blended = torch.from_numpy(out[y0:y1, x0:x1]).permute(2, 0, 1).float()
        if mode == "crop":
            blended.mul_(1.0 - alpha)
        # Where alpha is 0 this adds exactly 0.0 to integer-valued floats (and multiplies by
        # exactly 1.0), so those pixels come back bit-exact without a separate select.
        blended.addcmul_(alpha, warped[1:]).round_().clamp_(0, 255)
        out[y0:y1, x0:x1] = blended.to(torch.uint8).permute(1, 2, 0).numpy()
    return out
