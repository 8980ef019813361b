"""The generator's extra terms (not in the paper): each says what data it needs and computes its loss.

Why objects: the loop used to branch on every term's weight, and the run's setup preloaded
landmarks and pairs for them. Now a term is built when its weight is above 0
(``extra_terms``), declares the data it reads (``needs``), and ``GeneratorLoss`` adds each
one times its weight; the setup (``fgfem.train.setup``) builds only what the terms need.

``TERMS`` is in the order the terms join the total. The order matters: the pair and warp-AU
terms draw from the step's random source, so a run is reproducible only in this order
(``tests/train/test_train_same_losses.py`` holds the losses logged before the terms were objects).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, ClassVar

import torch

from fgfem.train.losses import GeneratorStep, changed_au_error, landmark_flow_l1, pair_l1, single_au_probes, warp_au_l1

if TYPE_CHECKING:
    from fgfem.train.config import LossConfig

# What a term may need besides the batch's faces and AUs.
FACE_LANDMARKS = "face landmarks"  # every training face's 68 landmarks in the batch (``points``), moved with it
PAIRS = "pairs"  # photos of one person with two expressions (``--pair-pattern``)
PAIR_LANDMARKS = "pair landmarks"  # the pairs' 68 landmarks
LANDMARKS = frozenset({FACE_LANDMARKS, PAIR_LANDMARKS})  # both are read from a fgfem prep folder's journal


class ExtraTerm:
    """A weighted generator term; subclasses name it, its weight setting and its needs, and compute it."""

    name: ClassVar[str]  # the logged key
    setting: ClassVar[str]  # the LossConfig setting that weighs it (off at 0)
    needs: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, weight: float) -> None:
        self.weight = weight

    def __call__(self, step: GeneratorStep) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.weight:g})"


class ChangedAUCondition(ExtraTerm):
    """The AU condition again, each AU weighted by how far the target moves it (``changed_au_error``).

    Tried after stage 4 and not shipped (weights/MODEL_CARD.md): no gain for AU04 or AU15.
    """

    name = "g_cond_changed"
    setting = "lambda_cond_changed"

    def __call__(self, step: GeneratorStep) -> torch.Tensor:
        return changed_au_error(step.pred_aus.float(), step.target_aus, step.rel)


class PairL1(ExtraTerm):
    """L1 between G(source, AUs(target) - AUs(source)) and the real target photo (``fgfem.train.pairs``)."""

    name = "g_pair"
    setting = "lambda_pair"
    needs = frozenset({PAIRS})

    def __call__(self, step: GeneratorStep) -> torch.Tensor:
        edit = step.pair_edit()
        return pair_l1(edit.edited, edit.pair.target.to(step.real.device))


class LandmarkFlow(ExtraTerm):
    """The warp's field against how the pairs' landmarks really move (``landmark_flow_l1``, pixels)."""

    name = "g_flow"
    setting = "lambda_flow"
    needs = frozenset({PAIRS, PAIR_LANDMARKS})

    def __call__(self, step: GeneratorStep) -> torch.Tensor:
        edit = step.pair_edit()
        pair = edit.pair
        assert edit.flow is not None and pair.source_points is not None  # a warp generator, pairs with landmarks
        assert pair.target_points is not None
        return landmark_flow_l1(edit.flow, pair.source_points, pair.target_points)


class WarpAU(ExtraTerm):
    """Each face's landmarks moved by the warp for a single-AU probe, read by the landmark AU estimator
    (``warp_au_l1``). Tried after stage 3 and not shipped (weights/MODEL_CARD.md): it cost cycle PSNR."""

    name = "g_warp_au"
    setting = "lambda_warp_au"
    needs = frozenset({FACE_LANDMARKS})

    def __call__(self, step: GeneratorStep) -> torch.Tensor:
        assert step.draws is not None  # the loop always passes the step's random source
        probes = single_au_probes(step.real.shape[0], step.draws).to(step.real.device)
        _, flow = step.generator(step.real, probes, return_flow=True)
        assert flow is not None  # TrainConfig checks for a warp generator
        return warp_au_l1(flow, step.batch["points"], probes)


TERMS: tuple[type[ExtraTerm], ...] = (ChangedAUCondition, PairL1, LandmarkFlow, WarpAU)


def extra_terms(loss: LossConfig) -> list[ExtraTerm]:
    """The terms a run trains with: those whose weight is above 0, in ``TERMS`` order."""
    return [term(weight) for term in TERMS if (weight := getattr(loss, term.setting)) > 0]


def needs_of(terms: Iterable[ExtraTerm]) -> frozenset[str]:
    """Everything the terms need, together."""
    return frozenset().union(*(term.needs for term in terms))
