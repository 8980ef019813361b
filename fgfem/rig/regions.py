"""Where each Action Unit may move the face, and how FACS says it moves (the rig's prior).

The rig (``fgfem.rig.model``) maps a change of AUs to a motion of the 68 iBUG landmarks in
the canonical face frame of ``fgfem.au_reading.estimator.canonical_landmarks`` (eye centres at
(+-0.5, 0), x to the image's right, y down, inter-ocular units). Two facts constrain it,
both from the FACS manual rather than from data:

- ``AU_REGIONS``: the landmarks an AU owns. An AU's motion is exactly zero on every other
  landmark, so AU12 can never move a brow, and the dense field built from the landmarks
  leaves hair, ears and background alone.
- ``facs_prior``: the direction of each AU's motion, per landmark. Where the data has too
  little of an AU (``fgfem.rig.fit`` weighs the prior by how much data each AU has), the
  fitted pattern stays close to this; the model card says which AUs those are.

Every pattern is left-right symmetric: the 17 OpenFace AUs are bilateral, and a symmetric
motion keeps both eye centres level, so the estimator's frame does not tilt under an edit.
"""

from __future__ import annotations

import numpy as np

from fgfem.aus import AU_CODES, NUM_AUS

NUM_LANDMARKS = 68

JAW = tuple(range(0, 17))
BROWS = tuple(range(17, 27))
NOSE = tuple(range(27, 36))
NOSTRILS = tuple(range(31, 36))
EYES = tuple(range(36, 48))
UPPER_LIDS = (37, 38, 43, 44)
LOWER_LIDS = (40, 41, 46, 47)
MOUTH = tuple(range(48, 68))
UPPER_LIP = (48, 49, 50, 51, 52, 53, 54, 60, 61, 62, 63, 64)
LOWER_LIP = (54, 55, 56, 57, 58, 59, 48, 64, 65, 66, 67, 60)
LOWER_JAW = tuple(range(4, 13))

AU_REGIONS: dict[str, tuple[int, ...]] = {
    "AU01": BROWS,
    "AU02": BROWS,
    "AU04": BROWS,
    "AU05": UPPER_LIDS,
    "AU06": LOWER_LIDS + (36, 39, 42, 45),
    "AU07": UPPER_LIDS + LOWER_LIDS,
    "AU09": NOSTRILS + (29, 30) + UPPER_LIP,
    "AU10": UPPER_LIP + NOSTRILS,
    "AU12": MOUTH,
    "AU14": MOUTH,
    "AU15": MOUTH,
    "AU17": LOWER_LIP + (6, 7, 8, 9, 10),
    "AU20": MOUTH,
    "AU23": MOUTH,
    "AU25": MOUTH,
    "AU26": MOUTH + LOWER_JAW,
    "AU45": UPPER_LIDS + LOWER_LIDS,
}

# iBUG-68 left-right pairs (the subject's right <-> left); the points on the midline map to themselves.
_PAIRS = (
    [(i, 16 - i) for i in range(8)]
    + [(17 + i, 26 - i) for i in range(5)]
    + [(31, 35), (32, 34)]
    + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]
    + [(48, 54), (49, 53), (50, 52), (59, 55), (58, 56), (60, 64), (61, 63), (67, 65)]
)
MIRROR = np.arange(NUM_LANDMARKS)
for _a, _b in _PAIRS:
    MIRROR[_a], MIRROR[_b] = _b, _a


def region_mask() -> np.ndarray:
    """17 x 68 booleans: True where an AU may move a landmark."""
    mask = np.zeros((NUM_AUS, NUM_LANDMARKS), dtype=bool)
    for k, code in enumerate(AU_CODES):
        mask[k, list(AU_REGIONS[code])] = True
    return mask


def symmetrise(patterns: np.ndarray) -> np.ndarray:
    """The left-right symmetric part of 17 x 68 x 2 (or 68 x 2) motion patterns.

    Mirroring swaps each landmark with its partner and negates x; the average of a
    pattern and its mirror image is the closest symmetric pattern.
    """
    mirrored = np.array(patterns, dtype=np.float64)[..., MIRROR, :]
    mirrored[..., 0] *= -1.0
    return 0.5 * (np.asarray(patterns, dtype=np.float64) + mirrored)


def _set(pattern: np.ndarray, points: tuple[int, ...], dx: float, dy: float) -> None:
    """Move ``points`` by (dx, dy) on the subject's right (x < 0) side; ``symmetrise`` mirrors it.

    ``dx`` > 0 means outwards (away from the midline), ``dy`` > 0 downwards.
    """
    for p in points:
        pattern[p] = (-dx, dy)


def facs_prior() -> np.ndarray:
    """17 x 68 x 2: FACS's direction of each AU's motion, about one OpenFace unit, in IOD.

    The sizes are rough (a posed prototype AU reads ~2-3 in OpenFace and moves its region by
    ~0.05-0.2 IOD, docs/design.md, "Measured expression geometry"); ``fgfem.rig.fit`` rescales
    each pattern so that the estimator reads it back as exactly one unit.
    """
    prior = np.zeros((NUM_AUS, NUM_LANDMARKS, 2))

    def au(code: str) -> np.ndarray:
        return prior[AU_CODES.index(code)]

    # Points on the subject's right side only; symmetrise() makes the left side.
    _set(au("AU01"), (21,), -0.004, -0.040)
    _set(au("AU01"), (20,), -0.002, -0.032)
    _set(au("AU01"), (19,), 0.0, -0.018)
    _set(au("AU01"), (18,), 0.0, -0.008)
    _set(au("AU02"), (17,), 0.004, -0.030)
    _set(au("AU02"), (18,), 0.002, -0.036)
    _set(au("AU02"), (19,), 0.0, -0.026)
    _set(au("AU02"), (20,), 0.0, -0.012)
    _set(au("AU04"), (21,), -0.024, 0.028)
    _set(au("AU04"), (20,), -0.015, 0.024)
    _set(au("AU04"), (19,), -0.006, 0.014)
    _set(au("AU04"), (18,), 0.0, 0.006)
    _set(au("AU05"), (37, 38), 0.0, -0.018)
    _set(au("AU06"), (40, 41), 0.0, -0.010)
    _set(au("AU06"), (36,), 0.0, -0.004)
    _set(au("AU07"), (40, 41), 0.0, -0.012)
    _set(au("AU07"), (37, 38), 0.0, 0.005)
    _set(au("AU09"), (31,), 0.008, -0.018)
    _set(au("AU09"), (32,), 0.004, -0.018)
    _set(au("AU09"), (30, 29), 0.0, -0.010)
    _set(au("AU09"), (50, 51, 61, 62), 0.0, -0.014)
    _set(au("AU09"), (49,), 0.0, -0.010)
    _set(au("AU10"), (50, 51, 61, 62), 0.0, -0.028)
    _set(au("AU10"), (49,), 0.0, -0.022)
    _set(au("AU10"), (48, 60), 0.0, -0.008)
    _set(au("AU10"), (31, 32), 0.0, -0.006)
    _set(au("AU12"), (48,), 0.036, -0.045)
    _set(au("AU12"), (60,), 0.030, -0.036)
    _set(au("AU12"), (49, 59), 0.018, -0.022)
    _set(au("AU12"), (61, 67), 0.012, -0.012)
    _set(au("AU12"), (50, 58), 0.008, -0.010)
    _set(au("AU14"), (48, 60), 0.020, -0.004)
    _set(au("AU14"), (49, 59), 0.008, 0.0)
    _set(au("AU15"), (48,), 0.004, 0.040)
    _set(au("AU15"), (60,), 0.003, 0.030)
    _set(au("AU15"), (59, 49), 0.0, 0.018)
    _set(au("AU15"), (58,), 0.0, 0.008)
    _set(au("AU17"), (57, 58, 66, 67), 0.0, -0.025)
    _set(au("AU17"), (59,), 0.0, -0.012)
    _set(au("AU17"), (8, 7), 0.0, -0.015)
    _set(au("AU20"), (48, 60), 0.040, 0.008)
    _set(au("AU20"), (49, 59, 61, 67), 0.020, 0.004)
    _set(au("AU23"), (50, 51), 0.0, 0.012)
    _set(au("AU23"), (57, 58), 0.0, -0.012)
    _set(au("AU23"), (48, 60), -0.010, 0.0)
    _set(au("AU25"), (57, 58), 0.0, 0.030)
    _set(au("AU25"), (66, 67), 0.0, 0.040)
    _set(au("AU25"), (59,), 0.0, 0.015)
    _set(au("AU25"), (61, 62), 0.0, -0.008)
    _set(au("AU26"), (57, 58, 66, 67), 0.0, 0.070)
    _set(au("AU26"), (59,), 0.0, 0.045)
    _set(au("AU26"), (48, 60), 0.0, 0.020)
    _set(au("AU26"), (8, 7), 0.0, 0.060)
    _set(au("AU26"), (6,), 0.0, 0.045)
    _set(au("AU26"), (5,), 0.0, 0.025)
    _set(au("AU26"), (4,), 0.0, 0.010)
    _set(au("AU45"), (37, 38), 0.0, 0.017)
    _set(au("AU45"), (40, 41), 0.0, -0.003)
    return mirror_fill(prior) * region_mask()[..., None]


def drawn_patterns() -> np.ndarray:
    """17 x 68 x 2: hand-drawn FACS patterns for the AUs whose shape is drawn, not fitted; zero for the others.

    Unlike ``facs_prior`` (a rough direction the fit pulls towards), these are the shape itself:
    the data has too little of these AUs, or the estimator reads them from too few points, for a
    fit to shape them. AU17 (``fgfem.rig.fit.PRIOR_ONLY``) ships as drawn, one OpenFace unit;
    AU25 and AU26 (``fgfem.rig.fit.DRAWN_SHAPE``) keep only their shape: the fit scales it to read
    one unit, and the loop gain to read one unit after dlib re-detects the edited photo.
    """
    drawn = np.zeros((NUM_AUS, NUM_LANDMARKS, 2))
    au25 = drawn[AU_CODES.index("AU25")]
    # AU25 parts the lips along their whole length, the middle most, into a lens: the lower lip
    # drops (outer edge with it, so its red keeps its height), the upper lip rises a little, the
    # corners sink a little. Fitted, AU25 moved the two middle points alone (the estimator reads the
    # lip gap at 62/66 only): the upper lip's middle rose 0.08 IOD while its neighbours 61/63
    # dropped, and the opening was a four-pointed star. The corners sink so that the lip centre
    # does not rise against them (which reads as AU12).
    _set(au25, (62,), 0.0, -0.022)
    _set(au25, (61,), 0.0, -0.018)
    _set(au25, (66,), 0.0, 0.080)
    _set(au25, (67,), 0.0, 0.068)
    _set(au25, (60,), 0.0, 0.010)
    _set(au25, (51,), 0.0, -0.010)
    _set(au25, (50,), 0.0, -0.008)
    _set(au25, (49,), 0.0, -0.004)
    _set(au25, (57,), 0.0, 0.074)
    _set(au25, (58,), 0.0, 0.064)
    _set(au25, (59,), 0.0, 0.040)
    _set(au25, (48,), 0.0, 0.016)
    au26 = drawn[AU_CODES.index("AU26")]
    # AU26 drops the jaw: chin, lower lip and its inner edge go down together (the inner edge a U,
    # the middle most), the mouth corners half as far and a little inwards, the upper lip stays
    # (its inner edge an arch from the sunk corners). Fitted, the upper lip's inner edge sank at its
    # sides (61/63 0.066 IOD) but not at its middle (62 0.017): the opening was a diamond.
    _set(au26, (8, 7), 0.0, 0.200)
    _set(au26, (6,), 0.0, 0.125)
    _set(au26, (5,), 0.0, 0.075)
    _set(au26, (4,), 0.0, 0.036)
    _set(au26, (57,), 0.0, 0.180)
    _set(au26, (58,), 0.0, 0.165)
    _set(au26, (59,), 0.0, 0.120)
    _set(au26, (66,), 0.0, 0.160)
    _set(au26, (67,), 0.0, 0.136)
    _set(au26, (48,), -0.010, 0.060)
    _set(au26, (60,), -0.010, 0.060)
    _set(au26, (61,), 0.0, 0.028)
    _set(au26, (62,), 0.0, 0.012)
    _set(au26, (49,), 0.0, 0.015)
    _set(au26, (50,), 0.0, 0.006)
    _set(au26, (51,), 0.0, 0.004)
    au17 = drawn[AU_CODES.index("AU17")]
    # AU17 pushes the whole lower lip up against the upper one, the centre most: its outer edge
    # rises more than its inner edge (the red of the lip shortens), the corners dip a little (the
    # mouth bows down) and the chin boss rises. 0.07 IOD at the lip's middle: visible at +1 on the
    # held-out faces, and below the size where dlib loses the lower lip (at 0.09 it reads it rising
    # less than at 0.07, at 0.1 the lip's red is squeezed away against the upper lip).
    _set(au17, (57,), 0.0, -0.070)
    _set(au17, (58,), 0.0, -0.060)
    _set(au17, (59,), 0.0, -0.035)
    _set(au17, (66,), 0.0, -0.042)
    _set(au17, (67,), 0.0, -0.035)
    _set(au17, (48, 60), 0.0, 0.007)
    _set(au17, (8, 7), 0.0, -0.042)
    _set(au17, (6,), 0.0, -0.014)
    return mirror_fill(drawn) * region_mask()[..., None]


def mirror_fill(patterns: np.ndarray) -> np.ndarray:
    """Patterns given on one side of the face completed on the other by mirroring.

    A point and its partner both end up with the mirrored values of whichever of them was
    set; a midline point keeps its own y and loses any x (it cannot move sideways).
    """
    mirrored = np.array(patterns, dtype=np.float64)[..., MIRROR, :]
    mirrored[..., 0] *= -1.0
    filled = np.asarray(patterns, dtype=np.float64) + mirrored
    midline = np.arange(NUM_LANDMARKS) == MIRROR
    filled[..., midline, :] *= 0.5
    return filled
