"""Action-Unit intensities from 68 facial landmarks, offline and explainable.

No AU model of any installed package works without a download, so fgfem measures
AUs itself from the iBUG-68 landmarks every face backend already gives. The model
is deliberately tiny:

1. remove the similarity transform (translation, roll, scale) so that the eye
   centres sit at (-0.5, 0) and (0.5, 0): every distance is then in units of the
   inter-ocular distance and independent of image size and in-plane rotation;
2. measure a handful of named distances (brow height over the eye corners, eye
   aperture, lip-corner height, mouth width, lip gap, jaw drop, ...);
3. per AU, a clipped linear map of *its own* features only (``AU_FEATURES``), with
   the sign of every weight fixed by anatomy, so AU12 can never be read from the
   brows, plus a linear map of the canonical coordinates of the landmarks its region
   owns (``fgfem.rig.regions.AU_REGIONS``: the mouth for AU12, the brows for AU04).
   The numbers live in ``fgfem.au_reading.calibration`` and were fitted by
   ``benchmarks/fit_rig.py`` together with the rig (``fgfem.rig``), the inverse
   direction, on real OpenFace labels (within-person variation), posed-expression
   margins and the same-person motion of posed photos and video frames, with the zero
   point at the median neutral face of the training performers.

Landmarks only see shape, not texture: AUs that are mostly wrinkles or skin bulges
(``LOW_CONFIDENCE_AUS``) are estimated from weak geometric proxies and flagged.
Out-of-plane head rotation (yaw, pitch) is not removed and biases the estimates.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fgfem.au_reading import calibration as cal
from fgfem.aus import AU_CODES, AU_MAX, AU_MIN, NUM_AUS
from fgfem.errors import FgfemError

NUM_LANDMARKS = 68
CALIBRATION_FILE = Path(cal.__file__).resolve()
"""Where the fitted constants live: ``benchmarks/fit_rig.py --write`` rewrites this file and the presets
hash it, so both follow the module wherever it is, instead of spelling its path again."""

# iBUG-68 indices used below (0-based).
_RIGHT_EYE = slice(36, 42)  # the subject's right eye, on the image's left
_LEFT_EYE = slice(42, 48)

FEATURE_NAMES: tuple[str, ...] = (
    "brow_inner",  # inner brow ends above the inner eye corners
    "brow_outer",  # outer brow ends above the outer eye corners
    "brow_gap",  # horizontal gap between the inner brow ends
    "eye_open",  # lid aperture, mean of both eyes
    "eye_upper",  # upper lids above the eye-corner line
    "eye_lower",  # lower lids below the eye-corner line (a raised cheek lifts them)
    "corner_up",  # lip corners above the lip centre
    "mouth_w",  # distance between the lip corners
    "lip_gap",  # inner-lip opening
    "jaw",  # chin below the nose base
    "chin_lip",  # chin below the lower lip
    "nose_root",  # nose base below the eye line (shortens when the nose wrinkles)
    "lip_nose",  # upper lip below the nose base
    "lip_th",  # red-lip thickness, upper + lower
    "nose_w",  # nostril width (the alae flare and lift when the nose wrinkles)
    "lip_lift",  # lip corners below the upper-lip centre (the upper lip rises above them)
)

# Each AU reads only these features; the sign is the anatomical direction of the
# movement (+1: the feature grows as the AU grows). The fit may not flip a sign.
AU_FEATURES: dict[str, tuple[tuple[str, int], ...]] = {
    "AU01": (("brow_inner", +1),),
    "AU02": (("brow_outer", +1), ("brow_inner", +1)),
    "AU04": (("brow_inner", -1), ("brow_gap", -1)),
    "AU05": (("eye_upper", +1), ("eye_open", +1)),
    "AU06": (("corner_up", +1), ("mouth_w", +1), ("eye_lower", -1), ("eye_open", -1)),
    "AU07": (("eye_open", -1), ("eye_lower", -1)),
    "AU09": (("nose_root", -1), ("lip_nose", -1), ("nose_w", +1)),
    "AU10": (("lip_nose", -1), ("lip_lift", +1)),
    "AU12": (("corner_up", +1), ("mouth_w", +1)),
    "AU14": (("mouth_w", +1),),
    "AU15": (("corner_up", -1),),
    "AU17": (("chin_lip", -1),),
    "AU20": (("mouth_w", +1), ("corner_up", -1)),
    "AU23": (("lip_th", -1), ("mouth_w", -1)),
    "AU25": (("lip_gap", +1),),
    "AU26": (("jaw", +1), ("lip_gap", +1)),
    "AU45": (("eye_open", -1),),
}

# AUs that landmarks see poorly (texture, not shape; or their proxy is shared with
# another AU): measured correlations with OpenFace are weak or borrowed.
LOW_CONFIDENCE_AUS: tuple[str, ...] = ("AU06", "AU07", "AU09", "AU14", "AU17", "AU23")
LOW_CONFIDENCE_MASK: np.ndarray = np.array([code in LOW_CONFIDENCE_AUS for code in AU_CODES])


@dataclass(frozen=True)
class AUEstimate:
    """AU intensities (0-5, ``AU_CODES`` order) and which of them are weak guesses."""

    values: np.ndarray
    low_confidence: np.ndarray

    def as_dict(self) -> dict[str, float]:
        return {code: float(v) for code, v in zip(AU_CODES, self.values, strict=True)}


def _check_landmarks(landmarks: np.ndarray) -> tuple[np.ndarray, bool]:
    points = np.asarray(landmarks, dtype=np.float64)
    single = points.ndim == 2
    if single:
        points = points[None]
    if points.ndim != 3 or points.shape[1:] != (NUM_LANDMARKS, 2):
        raise FgfemError(f"landmarks must be 68x2 or Nx68x2 (iBUG order), got shape {np.shape(landmarks)}")
    if not np.isfinite(points).all():
        raise FgfemError("landmarks contain NaN or infinite coordinates; the face was not located")
    return points, single


def canonical_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """Landmarks with translation, roll and scale removed: eye centres at (+-0.5, 0), y down.

    Why the eyes: they are the most reliably located points and move least with
    expression, so the frame stays put while the brows, lids and mouth move in it.
    """
    points, single = _check_landmarks(landmarks)
    right = points[:, _RIGHT_EYE].mean(axis=1)
    left = points[:, _LEFT_EYE].mean(axis=1)
    axis = left - right
    iod = np.linalg.norm(axis, axis=1)
    if np.any(iod < 1e-6):
        raise FgfemError("degenerate landmarks: both eyes are at the same place")
    cos, sin = axis[:, 0] / iod, axis[:, 1] / iod
    rel = points - ((left + right) / 2)[:, None, :]
    x = (rel[..., 0] * cos[:, None] + rel[..., 1] * sin[:, None]) / iod[:, None]
    y = (-rel[..., 0] * sin[:, None] + rel[..., 1] * cos[:, None]) / iod[:, None]
    out = np.stack([x, y], axis=-1)
    return out[0] if single else out


def geometry_features(landmarks: np.ndarray) -> np.ndarray:
    """The ``FEATURE_NAMES`` distances (inter-ocular units) of 68x2 or Nx68x2 landmarks."""
    points, single = _check_landmarks(landmarks)
    canon = canonical_landmarks(points)
    columns = feature_columns(canon[..., 0], canon[..., 1])
    features = np.stack([columns[name] for name in FEATURE_NAMES], axis=1)
    return features[0] if single else features


def feature_columns(xs: Any, ys: Any) -> dict[str, Any]:
    """Each named feature of N canonical faces (``xs``, ``ys``: N x 68, numpy or torch).

    Written with indexing, arithmetic and ``mean(1)`` only, so that the numpy estimator and
    the differentiable torch copy the warp loss uses (``fgfem.train.au_geometry``) share
    one definition and cannot drift apart.
    """

    def y_mean(*idx: int) -> Any:
        return ys[:, list(idx)].mean(1)

    eye_corners = y_mean(36, 39, 42, 45)
    upper_lids = y_mean(37, 38, 43, 44)
    lower_lids = y_mean(40, 41, 46, 47)
    lip_centre = y_mean(51, 57, 62, 66)
    return {
        "brow_inner": y_mean(39, 42) - y_mean(21, 22),
        "brow_outer": y_mean(36, 45) - y_mean(17, 26),
        "brow_gap": xs[:, 22] - xs[:, 21],
        "eye_open": lower_lids - upper_lids,
        "eye_upper": eye_corners - upper_lids,
        "eye_lower": lower_lids - eye_corners,
        "corner_up": lip_centre - y_mean(48, 54),
        "mouth_w": xs[:, 54] - xs[:, 48],
        "lip_gap": ys[:, 66] - ys[:, 62],
        # The chin as three points: a jaw drops as a whole, and the rig fitted to read one point
        # back moved that point alone (a V-shaped chin).
        "jaw": y_mean(7, 8, 9) - ys[:, 33],
        "chin_lip": y_mean(7, 8, 9) - ys[:, 57],
        "nose_root": ys[:, 33] - eye_corners,
        "lip_nose": ys[:, 51] - ys[:, 33],
        "lip_th": (ys[:, 62] - ys[:, 51]) + (ys[:, 57] - ys[:, 66]),
        "nose_w": xs[:, 35] - xs[:, 31],
        "lip_lift": y_mean(48, 54) - ys[:, 51],
    }


def weight_matrix() -> np.ndarray:
    """The calibrated 17xF weights on standardised features (zero where an AU may not look)."""
    weights = np.asarray(cal.WEIGHTS, dtype=np.float64)
    names = tuple(getattr(cal, "FEATURE_NAMES", FEATURE_NAMES))
    if names != FEATURE_NAMES or weights.shape != (NUM_AUS, len(FEATURE_NAMES)):
        raise FgfemError("fgfem.au_reading.calibration does not match the feature list; re-run the --fit benchmark")
    return weights


def landmark_weights() -> tuple[np.ndarray, np.ndarray]:
    """(17 x 136 weights on the canonical coordinates x0, y0, x1, ..., their 136 centre values).

    Zero outside each AU's region; all zero for a calibration without landmark terms.
    """
    weights = np.asarray(getattr(cal, "LANDMARK_WEIGHTS", np.zeros((NUM_AUS, 2 * NUM_LANDMARKS))),
                         dtype=np.float64)
    center = np.asarray(getattr(cal, "LANDMARK_CENTER", np.zeros(2 * NUM_LANDMARKS)), dtype=np.float64)
    if weights.shape != (NUM_AUS, 2 * NUM_LANDMARKS) or center.shape != (2 * NUM_LANDMARKS,):
        raise FgfemError("fgfem.au_reading.calibration's landmark terms have the wrong shape; re-run the fit")
    return weights, center


def raw_aus(landmarks: np.ndarray) -> np.ndarray:
    """AU intensities *before* the 0-5 clip (float64): 68x2 -> (17,), Nx68x2 -> (N, 17).

    The editor needs them: a face whose AU12 reads below zero (clipped to 0) must move
    further than one whose AU12 is exactly 0 for ``fgfem aus`` to read the same target.
    """
    points, single = _check_landmarks(landmarks)
    canon = canonical_landmarks(points)
    columns = feature_columns(canon[..., 0], canon[..., 1])
    features = np.stack([columns[name] for name in FEATURE_NAMES], axis=1)
    z = (features - np.asarray(cal.FEATURE_CENTER)) / np.asarray(cal.FEATURE_SCALE)
    weights, center = landmark_weights()
    raw = z @ weight_matrix().T + (canon.reshape(len(canon), -1) - center) @ weights.T + np.asarray(cal.BIAS)
    return raw[0] if single else raw


def aus_from_features(features: np.ndarray) -> np.ndarray:
    """Clipped linear map from ``geometry_features`` to 0-5 intensities: the feature terms only.

    Kept for the feature-only reports of ``benchmarks/bench_au_estimator.py``; the estimator
    itself (``estimate_aus``) adds the landmark terms.
    """
    feats = np.atleast_2d(features)
    z = (feats - np.asarray(cal.FEATURE_CENTER)) / np.asarray(cal.FEATURE_SCALE)
    raw = z @ weight_matrix().T + np.asarray(cal.BIAS)
    out = np.clip(raw, AU_MIN, AU_MAX).astype(np.float32)
    return out[0] if np.ndim(features) == 1 else out


def estimate_aus(landmarks: np.ndarray) -> np.ndarray:
    """AU intensities (float32, 0-5, ``AU_CODES`` order) for 68x2 -> (17,) or Nx68x2 -> (N, 17).

    Landmarks may be in any pixel frame; only their shape matters.
    """
    return np.clip(raw_aus(landmarks), AU_MIN, AU_MAX).astype(np.float32)


def estimate(landmarks: np.ndarray) -> AUEstimate:
    """``estimate_aus`` for one face, with the low-confidence flags for display."""
    values = estimate_aus(landmarks)
    if values.ndim != 1:
        raise FgfemError("estimate() takes one face (68x2); use estimate_aus() for a batch")
    return AUEstimate(values=values, low_confidence=LOW_CONFIDENCE_MASK.copy())
