"""Alignment: a similarity transform from a face's 68 landmarks to one canonical template, and the crop.

Every crop the model sees (training, AU estimation, editing) is made here, so they all
frame the face the same way. The frame is ``TEMPLATE_VERSION``; weights record it in
their metadata, and a change of template is a change of version.

How the template was made (once, offline; the numbers are below): dlib 68-point
landmarks of 85 neutral frontal faces (Taiwanese database expression "a" and the
``emotions/neutral`` folder), generalised Procrustes analysis, the mean made exactly
left-right symmetric by averaging it with its mirror image. The crop is a square of
half-side 1.5 RMS landmark radii around the landmark centroid, raised by 0.03: that is
the framing measured on GANimation's EmotioNet crops and the vipermu frames (the jaw
reaches the crop sides, brows at 16 % and chin at 93 % of the height), so a model
trained on those crops sees ours the same way.

Coordinates: image and crop pixels have integer centres (dlib/FAN convention); a
template point ``t`` in unit coordinates lies at crop pixel ``t * size - 0.5``. Matrices
are 2 x 3, ``[u, v] = M @ [x, y, 1]`` maps image pixels to crop pixels. Warps run as
``F.affine_grid`` + ``F.grid_sample`` (bilinear, ``align_corners=False``, which is the
same pixel-centre convention), batched over faces, on a region of interest only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from fgfem.errors import FgfemError
from fgfem.faces.base import Face, as_rgb

TEMPLATE_VERSION = "fgfem-crop-v1"
SIZES = (64, 128, 256)  # 64: models trained at low resolution on a CPU (delta paste keeps photo detail)

TEMPLATE_68 = np.array([
    (0.0002, 0.2860), (0.0116, 0.4009), (0.0299, 0.5098), (0.0550, 0.6183), (0.0998, 0.7182), (0.1738, 0.8022),
    (0.2703, 0.8667), (0.3767, 0.9163), (0.5000, 0.9297), (0.6233, 0.9163), (0.7297, 0.8667), (0.8262, 0.8022),
    (0.9002, 0.7182), (0.9450, 0.6183), (0.9701, 0.5098), (0.9884, 0.4009), (0.9998, 0.2860), (0.0833, 0.2247),
    (0.1527, 0.1746), (0.2435, 0.1637), (0.3342, 0.1777), (0.4230, 0.2075), (0.5770, 0.2075), (0.6658, 0.1777),
    (0.7565, 0.1637), (0.8473, 0.1746), (0.9167, 0.2247), (0.5000, 0.2875), (0.5000, 0.3548), (0.5000, 0.4199),
    (0.5000, 0.4884), (0.4023, 0.5460), (0.4505, 0.5549), (0.5000, 0.5637), (0.5495, 0.5549), (0.5977, 0.5460),
    (0.1903, 0.3009), (0.2459, 0.2802), (0.3056, 0.2804), (0.3606, 0.3126), (0.3033, 0.3199), (0.2425, 0.3193),
    (0.6394, 0.3126), (0.6944, 0.2804), (0.7541, 0.2802), (0.8097, 0.3009), (0.7575, 0.3193), (0.6967, 0.3199),
    (0.3199, 0.6801), (0.3884, 0.6516), (0.4525, 0.6339), (0.5000, 0.6450), (0.5475, 0.6339), (0.6116, 0.6516),
    (0.6801, 0.6801), (0.6134, 0.7203), (0.5501, 0.7375), (0.5000, 0.7415), (0.4499, 0.7375), (0.3866, 0.7203),
    (0.3474, 0.6811), (0.4518, 0.6763), (0.5000, 0.6799), (0.5482, 0.6763), (0.6526, 0.6811), (0.5486, 0.6804),
    (0.5000, 0.6849), (0.4514, 0.6804),
], dtype=np.float64)
"""Mean 68-point iBUG face shape in unit crop coordinates (x right, y down, both in [0, 1])."""


def template_points(size: int) -> np.ndarray:
    """The template in crop pixel coordinates for a ``size`` x ``size`` crop."""
    return TEMPLATE_68 * float(size) - 0.5


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) taking ``src`` onto ``dst``.

    Umeyama (1991): the closed-form optimum, with the reflection case excluded, so a
    mirrored or degenerate landmark set can never flip the face.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_src, mu_dst = src.mean(0), dst.mean(0)
    a, b = src - mu_src, dst - mu_dst
    var_src = (a**2).sum() / len(src)
    if not np.isfinite(var_src) or var_src < 1e-12:
        raise FgfemError("cannot align a face whose landmarks all sit on one point")
    cov = b.T @ a / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0
    rotation = u @ np.diag(d) @ vt
    scale = float((s * d).sum() / var_src)
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = mu_dst - scale * rotation @ mu_src
    return matrix


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """The exact inverse of a 2 x 3 affine matrix (or a stack of them)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    linear = np.linalg.inv(matrix[..., :2])
    shift = -np.einsum("...ij,...j->...i", linear, matrix[..., 2])
    return np.concatenate([linear, shift[..., None]], axis=-1)


def to_3x3(matrix: np.ndarray) -> np.ndarray:
    out = np.zeros(matrix.shape[:-2] + (3, 3))
    out[..., :2, :] = matrix
    out[..., 2, 2] = 1.0
    return out


def crop_matrix(landmarks: np.ndarray, size: int = 128) -> np.ndarray:
    """2 x 3 matrix taking image pixels to the ``size`` px crop of the face with these landmarks."""
    if size not in SIZES:
        raise FgfemError(f"crop size {size} is not supported; use one of {', '.join(map(str, SIZES))}")
    return umeyama(np.asarray(landmarks, dtype=np.float64).reshape(68, 2), template_points(size))


def landmarks_in_crop(face: Face, matrix: np.ndarray) -> np.ndarray:
    """The face's 68 landmarks in crop pixel coordinates (68 x 2 float32)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    return (face.landmarks.astype(np.float64) @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def pixel_to_normalized(width: int, height: int) -> np.ndarray:
    """3 x 3 map from pixel coordinates to grid_sample's [-1, 1] (``align_corners=False``)."""
    return np.array([[2.0 / width, 0.0, 1.0 / width - 1.0],
                     [0.0, 2.0 / height, 1.0 / height - 1.0],
                     [0.0, 0.0, 1.0]])


def sample(source: torch.Tensor, out_to_source: np.ndarray, out_hw: tuple[int, int],
           padding_mode: str = "zeros") -> torch.Tensor:
    """Batched bilinear warp: ``out[b, :, v, u] = source[b, :, y, x]`` with ``[x, y, 1] = T_b @ [u, v, 1]``.

    ``out_to_source`` is B x 3 x 3 (or B x 2 x 3) in pixel coordinates of the output and
    of ``source``; it is converted to the normalised ``theta`` of ``F.affine_grid``.
    """
    batch, _, src_h, src_w = source.shape
    out_h, out_w = out_hw
    pixel = to_3x3(np.asarray(out_to_source, dtype=np.float64).reshape(batch, -1, 3)[:, :2])
    theta = pixel_to_normalized(src_w, src_h) @ pixel @ np.linalg.inv(pixel_to_normalized(out_w, out_h))
    theta_t = torch.as_tensor(theta[:, :2], dtype=source.dtype, device=source.device)
    grid = F.affine_grid(theta_t, [batch, source.shape[1], out_h, out_w], align_corners=False)
    return F.grid_sample(source, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def source_box(inverse: np.ndarray, crop_box: Sequence[float], image_hw: tuple[int, int],
               pad: int = 2) -> tuple[int, int, int, int] | None:
    """Integer image rectangle (x0, y0, x1, y1, exclusive) covering a crop-space box mapped back.

    This is the only part of the full-resolution image a warp needs to read or write,
    which keeps 4000 px photos as fast as small ones. None when it misses the image.
    """
    u0, v0, u1, v1 = crop_box
    corners = np.array([[u0, v0], [u1, v0], [u0, v1], [u1, v1]], dtype=np.float64)
    points = corners @ inverse[:, :2].T + inverse[:, 2]
    x0, y0 = np.floor(points.min(0)).astype(int) - pad
    x1, y1 = np.ceil(points.max(0)).astype(int) + pad + 1
    height, width = image_hw
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x1 <= x0 or y1 <= y0:
        return None
    return int(x0), int(y0), int(x1), int(y1)


@dataclass
class AlignedBatch:
    """Aligned crops of the faces of one image, and what is needed to put them back."""

    crops: torch.Tensor
    """B x 3 x size x size float32 in [-1, 1]."""
    matrices: np.ndarray
    """B x 2 x 3, image pixels -> crop pixels."""
    inverse: np.ndarray
    """B x 2 x 3, crop pixels -> image pixels (exact inverse of ``matrices``)."""
    size: int
    image_shape: tuple[int, int]
    """(H, W) of the image the crops came from."""
    faces: list[Face] = field(default_factory=list)
    template_version: str = TEMPLATE_VERSION

    def __len__(self) -> int:
        return len(self.faces)


def align_faces(rgb: np.ndarray, faces: Sequence[Face], size: int = 128, *,
                device: torch.device | str | None = None) -> AlignedBatch:
    """Crop every face to the canonical ``size`` px frame, as one batch in [-1, 1].

    Only each face's region of the image is read. Where the crop is smaller than the
    face (a 1000 px face into 128 px), that region is first shrunk with an antialiased
    resize to the crop's scale, so the crop is not aliased; the remaining warp (rotation,
    sub-pixel shift) is one batched ``grid_sample``. Crops reaching past the image edge
    repeat the edge pixels rather than showing black.
    """
    rgb = as_rgb(rgb)
    height, width = rgb.shape[:2]
    faces = list(faces)
    matrices = np.stack([crop_matrix(f.landmarks, size) for f in faces]) if faces else np.zeros((0, 2, 3))
    inverse = invert_affine(matrices) if faces else np.zeros((0, 2, 3))
    rois, transforms = [], []
    for inv in inverse:
        box = source_box(inv, (-0.5, -0.5, size - 0.5, size - 0.5), (height, width))
        if box is None:
            raise FgfemError("a face lies entirely outside the image; nothing to crop")
        x0, y0, x1, y1 = box
        roi = torch.from_numpy(np.array(rgb[y0:y1, x0:x1])).permute(2, 0, 1)[None].float()
        crop_per_source = float(np.sqrt(abs(np.linalg.det(inv[:, :2])))) ** -1
        out_to_roi = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]]) @ to_3x3(inv)
        if crop_per_source < 1.0:
            new_h = max(1, round((y1 - y0) * crop_per_source))
            new_w = max(1, round((x1 - x0) * crop_per_source))
            sx, sy = new_w / (x1 - x0), new_h / (y1 - y0)
            roi = F.interpolate(roi, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
            # F.interpolate maps source pixel x to (x + 0.5) * s - 0.5 (align_corners=False).
            shrink = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
            out_to_roi = shrink @ out_to_roi
        rois.append(roi[0])
        transforms.append(out_to_roi)
    if rois:
        pad_h, pad_w = max(r.shape[1] for r in rois), max(r.shape[2] for r in rois)
        batch = torch.stack([F.pad(r[None], (0, pad_w - r.shape[2], 0, pad_h - r.shape[1]), mode="replicate")[0]
                             for r in rois])
        crops = sample(batch, np.stack(transforms), (size, size), padding_mode="border") / 127.5 - 1.0
    else:
        crops = torch.zeros((0, 3, size, size))
    if device is not None:
        crops = crops.to(device)
    return AlignedBatch(crops=crops.clamp(-1.0, 1.0), matrices=matrices, inverse=inverse, size=size,
                        image_shape=(height, width), faces=faces)
