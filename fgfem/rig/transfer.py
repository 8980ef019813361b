"""Expression transfer through the rig: the AU change whose landmark motion best matches a target face.

``--target`` asks for the target's expression on the source face. Reading both faces with the
AU estimator and applying the difference loses most of the motion: the estimator sees AU04,
AU15 or AU20 only faintly, and every AU it reads low the rig plays low. The rig is the better
inverse: it says how the landmarks move per AU, so the AU change that moves the source's
landmarks closest to the target's (least squares over the 51 inner landmarks, in the canonical
frame) reproduces far more of the real motion. The estimator's difference stays as a weak prior,
which keeps the solution near what ``fgfem aus`` reads where the landmarks leave it free.

Two photos of different people differ in shape as well as in expression; the fit reads part of
that shape as AUs, as the estimator does. ``PRIOR_WEIGHT`` and the bounds keep it in the range
the rig can play.
"""

from __future__ import annotations

import numpy as np

from fgfem.aus import AU_SCALE, NUM_AUS
from fgfem.rig.model import AURig
from fgfem.rig.regions import NUM_LANDMARKS

INNER = np.arange(17, NUM_LANDMARKS)
"""Brows, nose, eyes and mouth: the face outline is located least reliably and carries identity."""
PRIOR_WEIGHT = 0.1
"""Pull towards the estimator's AU difference, relative to the mean per-AU landmark response."""
TRUST = 1.5
"""How far (0-5 scale) the fit may leave the estimator's difference: two people's faces differ in
shape, and without a bound the fit plays a long chin as a jaw drop of 2.5."""


def fit_expression_change(rig: AURig, source_canon: np.ndarray, target_canon: np.ndarray,
                          prior: np.ndarray, *, source_raw: np.ndarray | None = None,
                          prior_weight: float = PRIOR_WEIGHT, trust: float = TRUST) -> np.ndarray:
    """F x 17 AU changes (0-5 scale) moving each source face's landmarks towards the target's.

    ``source_canon`` F x 68 x 2 and ``target_canon`` 68 x 2 (or F x 68 x 2) are canonical
    landmarks (``fgfem.au_reading.estimator.canonical_landmarks``); ``prior`` F x 17 is the
    estimator's reading of the target minus the source's. Solves, per face,
    ``min |A d - (target - source)|^2 + w^2 |d - prior|^2`` with A the rig's patterns on the
    inner points and ``w`` = ``prior_weight`` times A's root-mean-square column norm, within
    bounds: at most ``trust`` from the prior, and, given ``source_raw`` (the source's unclipped
    reading), no AU below 0 (an AU reading 0 cannot relax further) or above 5.
    """
    source = np.asarray(source_canon, dtype=np.float64).reshape(-1, NUM_LANDMARKS, 2)
    target = np.broadcast_to(np.asarray(target_canon, dtype=np.float64).reshape(-1, NUM_LANDMARKS, 2),
                             source.shape)
    prior = np.asarray(prior, dtype=np.float64).reshape(len(source), NUM_AUS)
    design = rig.patterns.astype(np.float64)[:, INNER].reshape(NUM_AUS, -1).T  # (2 * 51) x 17
    gram = design.T @ design
    weight = (prior_weight ** 2) * max(float(np.trace(gram)) / NUM_AUS, 1e-12)
    system = gram + weight * np.eye(NUM_AUS)
    motion = (target - source)[:, INNER].reshape(len(source), -1)
    rhs = motion @ design + weight * prior
    low, high = prior - trust, prior + trust
    if source_raw is not None:
        raw = np.asarray(source_raw, dtype=np.float64).reshape(len(source), NUM_AUS)
        low = np.maximum(low, np.minimum(-np.maximum(raw, 0.0), prior))
        high = np.minimum(high, np.maximum(AU_SCALE - raw, prior))
    from fgfem.pipeline import blas_single_thread

    with blas_single_thread():  # 17 x 17 systems: BLAS threads would only wake up
        return np.stack([_bounded_solve(system, rhs[i], low[i], high[i]) for i in range(len(source))])


def _bounded_solve(system: np.ndarray, rhs: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """argmin 0.5 d'Sd - rhs'd within [low, high] (S positive definite), by an active set.

    17 unknowns: solve, pin the variables that leave their bounds at the bound, solve for the
    rest, release a pinned one whose gradient points back inside; a few rounds at most.
    """
    count = len(rhs)
    pinned = np.zeros(count, dtype=bool)
    value = np.zeros(count)
    for _ in range(4 * count):
        free = ~pinned
        value_free = np.linalg.solve(system[np.ix_(free, free)],
                                     rhs[free] - system[np.ix_(free, pinned)] @ value[pinned])
        value[free] = value_free
        outside = free & ((value < low - 1e-12) | (value > high + 1e-12))
        if outside.any():
            value = np.clip(value, low, high)
            pinned |= outside
            continue
        gradient = system @ value - rhs  # release a pinned bound the objective pulls away from
        release = pinned & (((value <= low + 1e-12) & (gradient < 0)) | ((value >= high - 1e-12) & (gradient > 0)))
        if not release.any():
            break
        pinned &= ~release
    return np.clip(value, low, high)
