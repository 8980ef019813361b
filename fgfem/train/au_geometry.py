"""The landmark AU estimator as differentiable torch code, for the warp's AU loss.

``fgfem.au_reading.estimator`` reads AUs from 68 landmarks with a clipped linear map. The
warp moves those landmarks by a known field, so where a face's landmarks land after an
edit, and therefore which AUs the edit shows, is a differentiable function of the
generator's output. This module is that function; the feature formulas are the
estimator's own (``feature_columns``), only the canonical frame and the linear map are
written again in torch.
"""

from __future__ import annotations

import torch

from fgfem.au_reading import calibration as cal
from fgfem.au_reading.estimator import FEATURE_NAMES, feature_columns, landmark_weights, weight_matrix
from fgfem.aus import AU_MAX, AU_MIN

# iBUG-68 index of each landmark's mirror image: a horizontally flipped face's point i is
# the original's point MIRROR_68[i] (jaw, brows, nose wings, eyes and lips swap sides).
MIRROR_68: tuple[int, ...] = (
    *range(16, -1, -1),  # jaw 0..16
    *range(26, 16, -1),  # brows 17..26
    27, 28, 29, 30,  # nose bridge
    35, 34, 33, 32, 31,  # nostrils
    45, 44, 43, 42, 47, 46,  # right eye <- left eye
    39, 38, 37, 36, 41, 40,  # left eye <- right eye
    54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55,  # outer lips
    64, 63, 62, 61, 60, 67, 66, 65,  # inner lips
)


def mirror_points(points: torch.Tensor, width: int) -> torch.Tensor:
    """68 x 2 (or N x 68 x 2) pixel landmarks of the face flipped left-right in an image ``width`` wide.

    Both the coordinates and the order change: without the reordering the "right eye"
    of a flipped face would sit on the left and the estimator's frame would turn upside down.
    """
    flipped = points[..., list(MIRROR_68), :]  # advanced indexing: already a copy
    flipped[..., 0] = width - 1 - flipped[..., 0]
    return flipped


def canonical_points(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(xs, ys)`` of N x 68 x 2 landmarks in the estimator's frame: eye centres at (+-0.5, 0)."""
    right = points[:, 36:42].mean(1)
    left = points[:, 42:48].mean(1)
    axis = left - right
    iod = axis.norm(dim=1).clamp_min(1e-6)
    cos, sin = (axis[:, 0] / iod)[:, None], (axis[:, 1] / iod)[:, None]
    rel = points - ((left + right) / 2)[:, None, :]
    xs = (rel[..., 0] * cos + rel[..., 1] * sin) / iod[:, None]
    ys = (-rel[..., 0] * sin + rel[..., 1] * cos) / iod[:, None]
    return xs, ys


def raw_aus(points: torch.Tensor) -> torch.Tensor:
    """N x 17 AU intensities of N x 68 x 2 landmarks *before* the 0-5 clip (``AU_CODES`` order)."""
    xs, ys = canonical_points(points.float())
    columns = feature_columns(xs, ys)
    features = torch.stack([columns[name] for name in FEATURE_NAMES], dim=1)
    center = torch.tensor(cal.FEATURE_CENTER, dtype=features.dtype, device=features.device)
    scale = torch.tensor(cal.FEATURE_SCALE, dtype=features.dtype, device=features.device)
    weights = torch.as_tensor(weight_matrix(), dtype=features.dtype, device=features.device)
    bias = torch.tensor(cal.BIAS, dtype=features.dtype, device=features.device)
    direct, direct_center = (torch.as_tensor(a, dtype=features.dtype, device=features.device)
                             for a in landmark_weights())
    coords = torch.stack([xs, ys], dim=-1).reshape(len(xs), -1)
    return ((features - center) / scale) @ weights.T + (coords - direct_center) @ direct.T + bias


def estimated_aus(points: torch.Tensor) -> torch.Tensor:
    """``raw_aus`` clipped to 0-5: what ``fgfem.au_reading.estimator.estimate_aus`` says, in torch."""
    return raw_aus(points).clamp(AU_MIN, AU_MAX)
