"""The paper's losses, each a small callable whose weights are fixed in ``__init__`` (NVlabs/edm style).

Each call returns ``(total, terms)``: the scalar to back-propagate and a dict of the
unweighted named terms for the log. Conventions follow the reference implementation
(junleen/Expression-manipulator ``fine_grained_gan.py``): WGAN means over the patch map,
MSE over the AU vector (0-1 scale), L1 means over pixels, total variation as a sum.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from fgfem.aus import AU_MAX, AU_MIN, AU_SCALE, NUM_AUS
from fgfem.train.au_geometry import estimated_aus, raw_aus

if TYPE_CHECKING:
    from fgfem.train.config import LossConfig
    from fgfem.train.pairs import PairEdit, PairSource

Terms = dict[str, torch.Tensor]
CriticFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Sum of absolute differences between neighbouring pixels (the reference's smoothness term)."""
    across = (images[..., :, 1:] - images[..., :, :-1]).abs().sum()
    down = (images[..., 1:, :] - images[..., :-1, :]).abs().sum()
    return across + down


def input_gradient_norm2(critic: CriticFn, images: torch.Tensor) -> torch.Tensor:
    """Per-sample squared norm of d(sum of patch scores)/d(images), kept differentiable (double backward)."""
    images = images.detach().requires_grad_(True)
    scores, _ = critic(images)
    (grad,) = torch.autograd.grad(scores.float().sum(), images, create_graph=True)
    return grad.float().flatten(1).square().sum(dim=1)


class CriticLoss:
    """WGAN critic loss + AU regression on real faces + a regulariser.

    ``wgan-gp``: lambda_gp * E[(|grad D(x_hat)| - 1)^2] on random real/fake interpolations,
    every step (the paper). ``r1``: gamma / 2 * E[|grad D(x)|^2] on real faces, computed only
    every ``r1_every`` steps and scaled by it (lazy regularisation, StyleGAN2): about half the
    critic's cost on the steps without it, which matters on a CPU.
    """

    def __init__(self, *, lambda_cond: float = 150.0, regularizer: str = "wgan-gp", lambda_gp: float = 10.0,
                 r1_gamma: float = 10.0, r1_every: int = 16) -> None:
        self.lambda_cond = lambda_cond
        self.regularizer = regularizer
        self.lambda_gp = lambda_gp
        self.r1_gamma = r1_gamma
        self.r1_every = r1_every
        self.mse = nn.MSELoss()

    @classmethod
    def from_config(cls, loss: LossConfig) -> CriticLoss:
        return cls(lambda_cond=loss.lambda_d_cond, regularizer=loss.regularizer, lambda_gp=loss.lambda_gp,
                   r1_gamma=loss.r1_gamma, r1_every=loss.r1_every)

    def regularizes(self, step: int) -> bool:
        return self.regularizer == "wgan-gp" or step % self.r1_every == 0

    def __call__(self, critic: CriticFn, real: torch.Tensor, fake: torch.Tensor, real_aus: torch.Tensor, *,
                 step: int, generator: torch.Generator) -> tuple[torch.Tensor, Terms]:
        fake = fake.detach()
        real_scores, real_pred_aus = critic(real)
        fake_scores, _ = critic(fake)
        terms: Terms = {
            "d_real": -real_scores.float().mean(),
            "d_fake": fake_scores.float().mean(),
            "d_cond": self.mse(real_pred_aus.float(), real_aus),
        }
        total = terms["d_real"] + terms["d_fake"] + self.lambda_cond * terms["d_cond"]
        if self.regularizes(step):
            if self.regularizer == "wgan-gp":
                # alpha from our own generator so that a resumed run draws the same values.
                alpha = torch.rand(real.shape[0], 1, 1, 1, generator=generator).to(real.device, real.dtype)
                mixed = alpha * real.detach() + (1.0 - alpha) * fake
                norm = input_gradient_norm2(critic, mixed).add(1e-12).sqrt()
                terms["d_gp"] = (norm - 1.0).square().mean()
                total = total + self.lambda_gp * terms["d_gp"]
            else:
                terms["d_r1"] = input_gradient_norm2(critic, real).mean()
                total = total + 0.5 * self.r1_gamma * self.r1_every * terms["d_r1"]
        terms["d_total"] = total
        return total, terms


@dataclass
class GeneratorStep:
    """What one generator step has computed and holds, for the extra terms (``fgfem.train.terms``) to read.

    ``pred_aus`` is the critic's AU reading of ``fake`` (the paper's condition term computed it);
    ``pairs`` is there when a term needs expression pairs, and the pairs' edit is made once per
    step, on first use, however many terms read it (the pair L1 and the landmark flow share it).
    """

    generator: Callable[..., Any]
    critic: CriticFn
    real: torch.Tensor
    fake: torch.Tensor
    rel: torch.Tensor
    target_aus: torch.Tensor
    pred_aus: torch.Tensor
    batch: Mapping[str, torch.Tensor]
    draws: torch.Generator | None = None
    pairs: PairSource | None = None
    _pair_edit: PairEdit | None = None

    def pair_edit(self) -> PairEdit:
        if self._pair_edit is None:
            if self.pairs is None or self.draws is None:
                raise RuntimeError("a pair term ran in a step without pairs (the loop builds them for it)")
            self._pair_edit = self.pairs.edit(self.generator, self.draws, self.real.device)
        return self._pair_edit


class ExtraTerm(Protocol):
    """A generator term beyond the paper's: its log name, its weight and its unweighted value."""

    name: str
    weight: float

    def __call__(self, step: GeneratorStep) -> torch.Tensor: ...


class GeneratorLoss:
    """Adversarial + AU condition on the edit + identity L1 + cycle L1 + total variation, then ``extra``.

    The extra terms join the total in their order, each times its weight; they may draw from the
    step's random source, so the order is part of a run's reproducibility (``fgfem.train.terms``).
    """

    def __init__(self, *, lambda_cond: float = 150.0, lambda_idt: float = 30.0, lambda_cyc: float = 30.0,
                 lambda_tv: float = 1e-5, extra: Sequence[ExtraTerm] = ()) -> None:
        self.lambda_cond = lambda_cond
        self.lambda_idt = lambda_idt
        self.lambda_cyc = lambda_cyc
        self.lambda_tv = lambda_tv
        self.extra = tuple(extra)
        self.mse = nn.MSELoss()

    @classmethod
    def from_config(cls, loss: LossConfig, extra: Sequence[ExtraTerm] = ()) -> GeneratorLoss:
        return cls(lambda_cond=loss.lambda_g_cond, lambda_idt=loss.lambda_idt, lambda_cyc=loss.lambda_cyc,
                   lambda_tv=loss.lambda_tv, extra=extra)

    def __call__(self, generator: Callable[..., Any], critic: CriticFn, real: torch.Tensor, fake: torch.Tensor,
                 rel: torch.Tensor, target_aus: torch.Tensor, *, batch: Mapping[str, torch.Tensor] | None = None,
                 draws: torch.Generator | None = None, pairs: PairSource | None = None,
                 back: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[torch.Tensor, Terms]:
        """``fake`` = G(real, rel), computed by the caller (it also fed the critic step) and still attached.

        ``batch``, ``draws`` (the step's random source) and ``pairs`` are for the extra terms.
        ``back`` takes the edit back to the cycle's input when geometry comes before the
        generator (``fgfem.train.rig_front``): the cycle is then G(back(fake), -rel).
        """
        scores, pred_aus = critic(fake)
        identity = generator(real, torch.zeros_like(rel))
        cycle = generator(fake if back is None else back(fake), -rel)
        terms: Terms = {
            "g_adv": -scores.float().mean(),
            "g_cond": self.mse(pred_aus.float(), target_aus),
            "g_idt": (identity.float() - real).abs().mean(),
            "g_cyc": (cycle.float() - real).abs().mean(),
            "g_tv": total_variation(fake.float()),
        }
        total = (terms["g_adv"] + self.lambda_cond * terms["g_cond"] + self.lambda_idt * terms["g_idt"]
                 + self.lambda_cyc * terms["g_cyc"] + self.lambda_tv * terms["g_tv"])
        if self.extra:
            step = GeneratorStep(generator=generator, critic=critic, real=real, fake=fake, rel=rel,
                                 target_aus=target_aus, pred_aus=pred_aus, batch=batch or {}, draws=draws,
                                 pairs=pairs)
            for term in self.extra:
                terms[term.name] = term(step)
                total = total + term.weight * terms[term.name]
        terms["g_total"] = total
        return total, terms


def changed_au_error(pred_aus: torch.Tensor, target_aus: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
    """Squared AU error of each edit averaged over its AUs weighted by how far each was asked to move.

    Why: the paper's MSE averages over all 17 AUs, so when a target moves one AU (a
    ``--single-au-targets`` draw, or a user's ``--au 4=+1``) its error weighs 1/17 next to
    sixteen AUs that were asked to stay; the shipped model delivers about a third of a +1 AU04
    by the critic's own reading. Weighted by ``|rel|``, a single-AU edit's term is exactly that
    AU's squared error, and an edit that asks for nothing adds nothing.
    """
    weights = rel.detach().float().abs()
    per_edit = (weights * (pred_aus - target_aus).square()).sum(dim=1) / weights.sum(dim=1).clamp_min(1e-8)
    return per_edit.mean()


def pair_l1(edited: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean L1 between G(source, rel) and the real photo of that expression (fgfem/train/pairs.py)."""
    return (edited.float() - target).abs().mean()


def flow_at(flow: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """B x 68 x 2 displacement (pixels) of ``flow`` (B x 2 x H x W, image units) at pixel ``points``.

    Landmarks are dlib pixel indices (pixel centres), hence ``align_corners=False``; NaN
    points read as 0 and are for the caller to mask.
    """
    height, width = flow.shape[-2:]
    size = torch.tensor([width, height], dtype=torch.float32, device=flow.device)
    grid = ((2 * points.to(flow.device).float() + 1) / size - 1).to(flow.dtype)
    sampled = F.grid_sample(flow, torch.nan_to_num(grid)[:, None], mode="bilinear", padding_mode="border",
                            align_corners=False)[:, :, 0].permute(0, 2, 1).float()
    return sampled * size / 2


def landmark_flow_l1(flow: torch.Tensor, source_points: torch.Tensor, target_points: torch.Tensor) -> torch.Tensor:
    """Mean distance (pixels, |dx| + |dy|) between where the warp takes each target landmark from and
    where that landmark really was on the source face.

    Why: the pair L1 tells the warp what the result should look like, but its gradient only
    reaches a displacement through local image gradients, which on two photos that are not
    pixel-registered mostly cancel (measured: under a pixel after 50 generator steps). How
    the 68 landmarks move between a person's neutral and posed photo *is* the displacement
    an expression needs, so it is asked for directly. The output at p shows the input at
    p + flow(p), so at a target landmark t the flow must point back to its source s: s - t.
    NaN points (no landmarks) are skipped.
    """
    source_points, target_points = source_points.to(flow.device), target_points.to(flow.device)
    valid = torch.isfinite(target_points).all(-1) & torch.isfinite(source_points).all(-1)
    if not valid.any():
        return flow.sum() * 0.0
    wanted = (source_points - target_points).float()
    error = (flow_at(flow, target_points) - wanted).abs().sum(-1)
    return error[valid].mean()


def moved_landmarks(flow: torch.Tensor, points: torch.Tensor, *, iterations: int = 2) -> torch.Tensor:
    """Where the warp puts each landmark of the input: the p with p + flow(p) = q, by fixed-point steps.

    The flow is smooth (8 px blocks), so two steps from p = q - flow(q) are well inside a
    tenth of a pixel for the few-pixel motions of an expression.
    """
    points = points.to(flow.device).float()
    moved = points
    for _ in range(iterations):
        moved = points - flow_at(flow, moved)
    return moved


def single_au_probes(count: int, generator: torch.Generator, *, largest: float = 2.0) -> torch.Tensor:
    """``count`` relative AU vectors (networks' scale) that each move one random AU by +-U(0.25, largest).

    Why not the batch's own relative vectors: they are differences between real faces, and
    in real photos most AUs rarely move (AU04 is ~0 on most UTKFace faces), so their fields
    would hardly ever be asked for. One AU at a time is also exactly how a user edits.
    """
    which = torch.randint(0, NUM_AUS, (count,), generator=generator)
    size = 0.25 + torch.rand(count, generator=generator) * (largest - 0.25)
    sign = torch.where(torch.rand(count, generator=generator) < 0.5, -1.0, 1.0)
    probes = torch.zeros(count, NUM_AUS)
    probes[torch.arange(count), which] = sign * size / AU_SCALE
    return probes


def warp_au_l1(flow: torch.Tensor, points: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
    """How far the AUs the moved landmarks show are from those asked for (0-5 units), mean over faces
    with landmarks: the full error of every AU asked for (``rel`` != 0) plus the mean error of the rest.

    Why: the critic's AU head and the pair losses reach the warp only indirectly, and the
    pairs tie AUs that posed expressions move together (AU04 with AU07 and AU09), so one
    AU's field borrows another's motion. Here a face's own landmarks, moved by the field
    the generator made for ``rel``, are read by the landmark AU estimator. The AUs not asked
    for count as one mean, not one each: the estimator reads some features for several AUs
    (raised lip corners are also AU06 and AU14), so that leakage cannot reach zero, and
    summed over 16 AUs it would pay the warp to make the asked-for AU move less. The target
    is the estimator's clipped reading plus ``rel``, clipped to 0-5; where it is 0 (or 5) the
    moved face only has to reach the clip, as a face already at 0 shows 0 however far below.
    """
    points = points.to(flow.device).float()
    valid = torch.isfinite(points).all(-1).all(-1)
    if not valid.any():
        return flow.sum() * 0.0
    flow, points, rel = flow[valid], points[valid], rel[valid].to(flow.device).float()
    with torch.no_grad():
        wanted = (estimated_aus(points) + rel * AU_SCALE).clamp(AU_MIN, AU_MAX)
        asked = rel != 0
        weight = torch.where(asked, 1.0, 1.0 / (~asked).sum(-1, keepdim=True).clamp_min(1))
    error = raw_aus(moved_landmarks(flow, points)) - wanted
    error = torch.where(wanted <= AU_MIN, error.clamp_min(0.0),
                        torch.where(wanted >= AU_MAX, (-error).clamp_min(0.0), error.abs()))
    return (error * weight).sum(-1).mean()
