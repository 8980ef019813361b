"""A dense, smooth, local displacement field from moved landmarks, and its inverse.

The rig says where the 68 landmarks go; pixels in between must follow smoothly while
everything an AU does not own stays exactly where it is. The field is a Gaussian radial
basis interpolation of the landmark motion, with zero-motion anchors:

- every landmark the edit does not move (the eyes while the mouth smiles, the face
  outline unless the jaw drops) is a zero constraint, which keeps the motion local;
- a ring of anchors around the face (forehead, temples, cheeks' edges, below the chin)
  and a window that fades the field to exactly zero beyond that ring keep hair, ears
  and background still;
- the Jacobian of the forward map is checked on the grid: where an extreme edit would
  fold the image over itself, the whole motion is scaled down until it does not (the
  scale is returned so that the caller can say so).

All of this runs on a small grid in the aligned crop's frame (a 128 px grid covers the
face); the field is smooth, so ``fgfem.rig.warp`` carries it to the photo's full
resolution by interpolation and resamples the photo once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

SIGMA_IOD = 0.15
"""Width of the Gaussian kernel in inter-ocular distances: wide enough to carry the cheeks
with the lip corners, narrow enough that a brow moving leaves the eye below it alone."""
RIDGE = 0.03
"""Tikhonov term of the interpolation: near-coincident landmarks asked to move apart (the
inner lips of a closed mouth) get a smooth compromise instead of huge opposing weights."""
ANCHOR_RING = 1.35
"""The anchor ring lies on the landmark hull scaled by this about the face centre."""
CHIN_EXTRA = 0.4
"""Straight below the face the ring lies this much farther out (``ring_factor``)."""
FOREHEAD_IOD = 0.7
"""Forehead anchors sit this far above the brows (the brows may rise ~0.1 IOD)."""
MERGE_IOD = 0.05
"""Control points closer than this (inter-ocular units) are merged (``merge_close``)."""
MIN_JACOBIAN = 0.2
"""The forward map's Jacobian determinant may shrink an area to a fifth, never fold it."""
GRID = 64
"""Cells of the field's grid across the crop: the field is smooth (a Gaussian of 0.15 IOD, ~8 crop px),
so 2 crop px per cell lose nothing and cost a quarter of a 128 grid per video frame."""
TORN_GRID = 128
"""Parted lips need the finer grid: the tear and the cavity's edge are sharp."""
MARGIN = 0.375
"""The field's grid reaches this fraction of the crop beyond each of its edges.

Why: the aligned crop ends just below the chin (the chin sits ~5 crop px above its border),
while the anchor ring, where a dropping jaw's motion fades out over the neck, lies up to
~45 px below it. A grid that stopped at the crop cut the field there: every jaw edit left
a hard edge across the neck, the width of the crop."""
INVERSE_STEPS = 6


class GeometryLimitWarning(UserWarning):
    """An edit asked more motion than the face can take without folding; ``key`` groups repeats."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class CropField:
    """The inverse (sampling) field of one face in its crop frame.

    ``inverse[:, v, u]`` is how far (crop pixels, x then y) the content shown at crop pixel
    (u, v) has moved: the output at p shows the input at ``p - inverse(p)``. ``grid`` is the
    side of the field's grid, which spans the ``size`` px crop. ``scale`` < 1 when the motion
    had to be reduced to avoid a fold-over.
    """

    inverse: torch.Tensor
    size: int
    scale: float
    max_motion: float
    origin: float
    """Crop px of the grid's left and top edge (``-MARGIN * size``: the grid reaches beyond the crop)."""
    span: float
    """Crop px the grid covers along each side (``(1 + 2 * MARGIN) * size``)."""
    cavity: torch.Tensor | None = None
    """G x G in [0, 1]: where parted lips open onto the inside of the mouth (None: they do not part)."""

    @property
    def grid(self) -> int:
        return int(self.inverse.shape[-1])

    @property
    def spacing(self) -> float:
        """Crop px per grid cell."""
        return self.span / self.grid

    def normalised(self, crop_points: torch.Tensor) -> torch.Tensor:
        """Crop px (x, y; pixel centres) -> ``grid_sample``'s [-1, 1] over this field's grid."""
        return (crop_points + 0.5 - self.origin) * (2.0 / self.span) - 1.0


def anchor_points(crop_landmarks: np.ndarray) -> np.ndarray:
    """Zero-motion anchors around the face: a ring outside the landmark hull and the forehead."""
    points = np.asarray(crop_landmarks, dtype=np.float64)
    iod = _iod(points)
    centre = points[:, :].mean(axis=0)
    angles = np.linspace(0.0, 2.0 * np.pi, 28, endpoint=False)
    radius = _hull_radii(points - centre, angles) * ring_factor(angles)
    ring = centre + radius[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    forehead = points[17:27] - np.array([0.0, FOREHEAD_IOD * iod])
    return np.concatenate([ring, forehead])


def ring_factor(angles: np.ndarray) -> np.ndarray:
    """How far out the anchor ring lies in each direction (y down): farther below the chin.

    A dropping or rising jaw drags the skin of the chin and neck with it; anchors just
    below the chin would squeeze that skin into a visible seam against the collar.
    """
    return ANCHOR_RING + CHIN_EXTRA * np.clip(np.sin(angles), 0.0, None) ** 2


def _iod(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[42:48].mean(0) - points[36:42].mean(0)))


def _hull_radii(rel: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """How far the landmark cloud reaches from its centre in each direction of ``angles`` (cones of 25 deg).

    All directions at once: the field is rebuilt every video frame, and one matrix product
    over the angles costs a tenth of a loop over them.
    """
    directions = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    along = rel @ directions.T
    across = np.abs(rel @ np.stack([-directions[:, 1], directions[:, 0]], axis=0))
    inside = (along > 0) & (across < np.tan(np.radians(25)) * along)
    fallback = float(np.linalg.norm(rel, axis=1).max())
    reach = np.where(inside, along, -np.inf).max(axis=0)
    return np.where(inside.any(axis=0), reach, fallback)


def landmark_field(crop_landmarks: np.ndarray, crop_motion: np.ndarray, size: int, *,
                   grid: int = GRID) -> CropField | None:
    """The sampling field that moves ``crop_landmarks`` by ``crop_motion`` (both 68 x 2 crop px).

    None when nothing moves (a zero edit must stay the photo bit for bit, so it is not
    resampled at all). Where the edit parts lips that touch (``lips_part``), the field tears
    along the lip line: the upper lip follows one smooth field, the lower lip another, and
    the gap between them is the mouth's inside (``CropField.cavity``).

    BLAS runs single-threaded here: the systems are ~100 x 100, and a threaded solve of that
    size spends 25x longer waking threads than solving (benchmarks/README.md).
    """
    from fgfem.pipeline import blas_single_thread

    with blas_single_thread():
        return _landmark_field(crop_landmarks, crop_motion, size, grid)


def _landmark_field(crop_landmarks: np.ndarray, crop_motion: np.ndarray, size: int, grid: int) -> CropField | None:
    motion = np.asarray(crop_motion, dtype=np.float64)
    if not np.any(np.abs(motion) > 1e-6):
        return None
    points = np.asarray(crop_landmarks, dtype=np.float64)
    parting = lips_part(points, motion)
    grid = max(grid, TORN_GRID) if parting else grid
    origin, span = -MARGIN * size, (1.0 + 2.0 * MARGIN) * size
    cells = int(round(grid * (1.0 + 2.0 * MARGIN)))
    spacing = span / cells
    coords = _grid_coords(origin, span, cells)
    if not parting:
        forward = _smooth_forward(points, motion, coords)
        scale, inverse = _fold_free_scale(forward, spacing, span)
        return CropField(inverse=inverse, size=size, scale=scale, max_motion=float(np.abs(motion).max() * scale),
                         origin=origin, span=span)
    upper, lower = motion.copy(), motion.copy()
    upper[list(LOWER_INNER)] = motion[list(UPPER_INNER)][::-1]
    lower[list(UPPER_INNER)] = motion[list(LOWER_INNER)][::-1]
    forward_up = _smooth_forward(points, upper, coords)
    forward_down = _smooth_forward(points, lower, coords)

    def torn(scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        return _torn_field(points, upper * scale, lower * scale, forward_up * scale, forward_down * scale,
                           coords, span)

    def fold_free(scale: float) -> bool:
        # Each half is checked only where it is used: the upper field pulls the lower inner
        # lip up into the upper lip (a fold there, but that half is never shown below the tear).
        inverse, cavity = torn(scale)
        sampling = -inverse.permute(1, 2, 0).numpy().astype(np.float64)
        det = jacobian_determinant(sampling, spacing)
        seam = F.max_pool2d(cavity[None, None], 5, stride=1, padding=2)[0, 0].numpy() > 0
        return bool(det[~seam].min() >= MIN_JACOBIAN)

    scale = _largest_scale(fold_free)
    inverse, cavity = torn(scale)
    return CropField(inverse=inverse, size=size, scale=scale, max_motion=float(np.abs(motion).max() * scale),
                     origin=origin, span=span, cavity=cavity)


def _torn_field(points: np.ndarray, upper: np.ndarray, lower: np.ndarray, forward_up: np.ndarray,
                forward_down: np.ndarray, coords: np.ndarray, span: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The sampling field that follows the upper lip above the parting line and the lower lip below,
    and the cavity (G x G in [0, 1]) between the two moved inner-lip lines."""
    inverse_up = invert_field(_as_tensor(forward_up), span)
    inverse_down = invert_field(_as_tensor(forward_down), span)
    top = _lip_line(points, upper, (60, 61, 62, 63, 64), coords)
    bottom = _lip_line(points, lower, (60, 67, 66, 65, 64), coords)
    y = torch.from_numpy(coords[..., 1].astype(np.float32))
    corners = points[[60, 64]] + 0.5 * (upper + lower)[[60, 64]]
    inside = torch.isfinite(top) & torch.isfinite(bottom)
    middle = torch.where(inside, 0.5 * (top + bottom), torch.tensor(float(corners[:, 1].mean())))
    inverse = torch.where((y < middle)[None], inverse_up, inverse_down)
    # Soft by about a crop pixel at each lip, so the photo-resolution edge is antialiased.
    cavity = ((y - top + 0.5).clamp(0, 1) * (bottom - y + 0.5).clamp(0, 1)) * (bottom > top + 0.5)
    return inverse, cavity.float()


UPPER_INNER = (61, 62, 63)
LOWER_INNER = (67, 66, 65)
"""Inner-lip points, paired: 61 sits on 67, 62 on 66, 63 on 65 when the mouth is closed."""
PART_PX = 0.75
"""The lips part when the lower inner lip is asked to move this many crop pixels further down."""


def lips_part(points: np.ndarray, motion: np.ndarray) -> bool:
    """Does this motion open lips that now touch (or nearly: less than ``MERGE_IOD`` apart)?"""
    iod = _iod(points)
    gap = (points[list(LOWER_INNER), 1] - points[list(UPPER_INNER), 1]).mean()
    opening = (motion[list(LOWER_INNER), 1] - motion[list(UPPER_INNER), 1]).mean()
    return bool(gap < MERGE_IOD * iod and opening > PART_PX)


def _smooth_forward(points: np.ndarray, motion: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """The Gaussian-RBF forward motion on the grid, windowed to zero beyond the anchor ring."""
    iod = _iod(points)
    anchors = anchor_points(points)
    controls, targets = merge_close(np.concatenate([points, anchors]),
                                    np.concatenate([motion, np.zeros_like(anchors)]), MERGE_IOD * iod)
    sigma = SIGMA_IOD * iod
    weights = _rbf_weights(controls, targets, sigma)
    return _rbf_eval(coords, controls, weights, sigma) * _window(coords, points, anchors)[..., None]


def _as_tensor(forward: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(forward.transpose(2, 0, 1).astype(np.float32))


def _lip_line(points: np.ndarray, motion: np.ndarray, chain: tuple[int, ...], coords: np.ndarray) -> torch.Tensor:
    """G x G: the y of the moved lip line (through ``chain``) above each grid column; +-inf outside the mouth.

    Evaluated once per column and broadcast down it: the fold-free search rebuilds the torn
    field ~10 times per face and frame, and the curve over every cell cost 20x one row.
    """
    moved = points[list(chain)] + motion[list(chain)]
    order = np.argsort(moved[:, 0])
    xs, ys = moved[order, 0], moved[order, 1]
    columns = coords[0, :, 0]
    line = smooth_line(xs, ys, columns)
    outside = (columns < xs[0]) | (columns > xs[-1])
    line = np.where(outside, np.inf if chain[1] == 61 else -np.inf, line)
    return torch.from_numpy(np.broadcast_to(line.astype(np.float32), coords.shape[:2]).copy())


def smooth_line(xs: np.ndarray, ys: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The curve through the points (``xs`` increasing) at ``at``: piecewise cubic, shape-preserving.

    Why not straight segments: five points per lip drew an opened mouth as a diamond, its
    corners at the landmarks. Fritsch-Carlson slopes (monotone cubic Hermite) round it into a
    lip's curve without overshooting the points (a spline through them can bulge past a
    corner and close the mouth there). Outside ``xs`` the ends are held.
    """
    xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    width = np.maximum(np.diff(xs), 1e-9)
    secant = np.diff(ys) / width
    slope = np.zeros_like(ys)
    inner = secant[:-1] * secant[1:] > 0
    w1, w2 = 2 * width[1:] + width[:-1], width[1:] + 2 * width[:-1]
    slope[1:-1] = np.where(inner, (w1 + w2) / (w1 / np.where(inner, secant[:-1], 1.0)
                                               + w2 / np.where(inner, secant[1:], 1.0)), 0.0)
    slope[0], slope[-1] = _end_slope(width[0], width[1], secant[0], secant[1]), \
        _end_slope(width[-1], width[-2], secant[-1], secant[-2])
    at = np.clip(at, xs[0], xs[-1])
    k = np.clip(np.searchsorted(xs, at, side="right") - 1, 0, len(xs) - 2)
    t = (at - xs[k]) / width[k]
    h00, h10 = (1 + 2 * t) * (1 - t) ** 2, t * (1 - t) ** 2
    h01, h11 = t * t * (3 - 2 * t), t * t * (t - 1)
    return h00 * ys[k] + h10 * width[k] * slope[k] + h01 * ys[k + 1] + h11 * width[k] * slope[k + 1]


def _end_slope(h0: float, h1: float, s0: float, s1: float) -> float:
    """The one-sided three-point slope at an end of ``smooth_line``, kept from overshooting."""
    slope = ((2 * h0 + h1) * s0 - h0 * s1) / (h0 + h1)
    if np.sign(slope) != np.sign(s0):
        return 0.0
    if np.sign(s0) != np.sign(s1) and abs(slope) > abs(3 * s0):
        return 3 * s0
    return float(slope)


def merge_close(controls: np.ndarray, targets: np.ndarray, distance: float) -> tuple[np.ndarray, np.ndarray]:
    """Control points closer than ``distance`` merged into one (mean position, mean motion).

    Why: the inner lips of a closed mouth lie a fraction of a pixel apart; asked to move
    differently, an interpolating field must tear there, and a smooth one overshoots and
    folds instead. One merged point moves both lips by their mean, and the lips part by the
    motion of the points around them.
    """
    groups = list(range(len(controls)))

    def root(i: int) -> int:
        while groups[i] != i:
            groups[i] = groups[groups[i]]
            i = groups[i]
        return i

    d2 = ((controls[:, None, :] - controls[None, :, :]) ** 2).sum(-1)
    for i, j in zip(*np.nonzero(np.triu(d2 < distance**2, k=1)), strict=True):
        groups[root(int(i))] = root(int(j))
    labels = np.array([root(i) for i in range(len(controls))])
    _, group, counts = np.unique(labels, return_inverse=True, return_counts=True)
    merged = np.zeros((len(counts), controls.shape[1]))
    moved = np.zeros((len(counts), targets.shape[1]))
    np.add.at(merged, group, controls)
    np.add.at(moved, group, targets)
    return merged / counts[:, None], moved / counts[:, None]


def _rbf_weights(controls: np.ndarray, targets: np.ndarray, sigma: float) -> np.ndarray:
    d2 = ((controls[:, None, :] - controls[None, :, :]) ** 2).sum(-1)
    kernel = np.exp(-0.5 * d2 / sigma**2)
    return np.linalg.solve(kernel + RIDGE * np.eye(len(controls)), targets)


def _rbf_eval(coords: np.ndarray, controls: np.ndarray, weights: np.ndarray, sigma: float) -> np.ndarray:
    """The interpolated motion at every point of the regular grid ``coords`` (G x G x 2, from ``_grid_coords``).

    The Gaussian factors into x and y, so on a grid the G x G x C kernel is the outer product
    of two G x C tables: per output axis one product ``(E_y * w) @ E_x.T``, 2 G C exponentials
    instead of G^2 C (a video frame rebuilds this field; it was a third of the rig's geometry).
    """
    xs, ys = coords[0, :, 0], coords[:, 0, 1]
    scale = -0.5 / sigma**2
    along_x = np.exp(scale * (xs[:, None] - controls[None, :, 0]) ** 2)
    along_y = np.exp(scale * (ys[:, None] - controls[None, :, 1]) ** 2)
    return np.stack([(along_y * weights[None, :, axis]) @ along_x.T for axis in range(weights.shape[1])], axis=-1)


@functools.lru_cache(maxsize=8)
def _grid_coords_cached(origin: float, span: float, grid: int) -> np.ndarray:
    step = span / grid
    centres = origin + (np.arange(grid) + 0.5) * step - 0.5
    xs, ys = np.meshgrid(centres, centres)
    coords = np.stack([xs, ys], axis=-1)
    coords.setflags(write=False)
    return coords


def _grid_coords(origin: float, span: float, grid: int) -> np.ndarray:
    """Crop-pixel coordinates (x, y) of the centres of a ``grid`` x ``grid`` field whose square covers
    ``span`` crop px from ``origin`` (its edge; pixel centres are whole numbers)."""
    return _grid_coords_cached(float(origin), float(span), int(grid))


def _window(coords: np.ndarray, points: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """1 inside the landmark hull, falling smoothly to exactly 0 at the anchor ring and beyond."""
    centre = points.mean(axis=0)
    rel = coords - centre
    angle = np.arctan2(rel[..., 1], rel[..., 0])
    table = np.linspace(-np.pi, np.pi, 73)
    inner = _hull_radii(points - centre, table)
    inner = np.maximum(inner, 1e-6)
    outer = inner * ring_factor(table)
    r_in = np.interp(angle, table, inner)
    r_out = np.interp(angle, table, outer)
    t = np.clip((np.hypot(rel[..., 0], rel[..., 1]) - r_in) / np.maximum(r_out - r_in, 1e-6), 0.0, 1.0)
    return 0.5 * (1.0 + np.cos(np.pi * t))


def jacobian_determinant(forward: np.ndarray, spacing: float) -> np.ndarray:
    """det(I + grad u) of the forward map on the grid (``forward``: G x G x 2 in crop px)."""
    du_dy, du_dx = np.gradient(forward[..., 0], spacing)
    dv_dy, dv_dx = np.gradient(forward[..., 1], spacing)
    return (1.0 + du_dx) * (1.0 + dv_dy) - du_dy * dv_dx


def _fold_free_scale(forward: np.ndarray, spacing: float, span: float) -> tuple[float, torch.Tensor]:
    """The largest s in (0, 1] for which s * forward, and the sampling map inverted from it, never fold;
    and that inverted map (computed once per tried scale, kept for the one chosen).

    Both are checked: the forward map's Jacobian must stay >= ``MIN_JACOBIAN``, and so must
    that of the sampling map ``p - v(p)`` the photo is resampled with (the fixed-point
    inversion stops converging where a large edit stretches skin more than it moves it).
    """
    inverses: dict[float, torch.Tensor] = {}

    def fold_free(scale: float) -> bool:
        scaled = forward * scale
        if jacobian_determinant(scaled, spacing).min() < MIN_JACOBIAN:
            return False
        inverses[scale] = invert_field(_as_tensor(scaled), span)
        sampling = -inverses[scale].permute(1, 2, 0).numpy().astype(np.float64)
        return bool(jacobian_determinant(sampling, spacing).min() >= MIN_JACOBIAN)

    scale = _largest_scale(fold_free)
    inverse = inverses.get(scale)
    return scale, inverse if inverse is not None else invert_field(_as_tensor(forward * scale), span)


def _largest_scale(fold_free: Callable[[float], bool]) -> float:
    """The largest s in (0, 1] with ``fold_free(s)``, by bisection (1.0 when the whole motion is fine)."""
    if fold_free(1.0):
        return 1.0
    low, high = 0.0, 1.0
    for _ in range(14):
        mid = 0.5 * (low + high)
        if fold_free(mid):
            low = mid
        else:
            high = mid
    return low


def invert_field(forward: torch.Tensor, span: float) -> torch.Tensor:
    """The sampling field v with v(p) = u(p - v(p)), by fixed-point iteration (2 x G x G).

    A content point q moves to q + u(q); to draw the output at p we need the q with
    q + u(q) = p, i.e. q = p - v(p). The iteration converges because the forward map's
    Jacobian stays well away from zero (``MIN_JACOBIAN``) and the motion is smooth.
    """
    grid = forward.shape[-1]
    base = _base_grid(grid)
    inverse = forward.clone()
    field = forward[None]
    for _ in range(INVERSE_STEPS):
        # p - v(p) in grid_sample's normalised coordinates of the grid (``span`` crop px across).
        shift = inverse.permute(1, 2, 0)[None] * (2.0 / span)
        inverse = F.grid_sample(field, base - shift, mode="bilinear", padding_mode="border",
                                align_corners=False)[0]
    return inverse


@functools.lru_cache(maxsize=4)
def _base_grid(grid: int) -> torch.Tensor:
    identity = torch.eye(2, 3).unsqueeze(0)
    return F.affine_grid(identity, [1, 2, grid, grid], align_corners=False)


def sampling_grid(field: CropField, size: int) -> torch.Tensor:
    """1 x s x s x 2: where ``grid_sample`` (``align_corners=False``) reads each pixel of the warped s px crop."""
    base = _base_grid(size)
    # The field at every crop pixel: its grid reaches beyond the crop (``MARGIN``).
    where = field.normalised((base + 1.0) * (0.5 * size) - 0.5)
    offsets = F.grid_sample(field.inverse[None], where, mode="bilinear", padding_mode="zeros", align_corners=False)
    return base - offsets.permute(0, 2, 3, 1) * (2.0 / size)


def warp_crops(crops: torch.Tensor, fields: list[CropField | None]) -> torch.Tensor:
    """Each crop (B x 3 x s x s) resampled by its field; crops without a field are returned as they are."""
    out = crops.clone()
    for index, field in enumerate(fields):
        if field is None:
            continue
        grid = sampling_grid(field, crops.shape[-1]).to(crops.dtype)
        out[index] = F.grid_sample(crops[index : index + 1], grid, mode="bicubic", padding_mode="border",
                                   align_corners=False)[0].clamp(-1.0, 1.0)
    return out
