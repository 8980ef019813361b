"""One training iteration ("step"): a critic update, and on every ``critic_steps``-th step a generator update.

The reference trains G on iterations 0, 4, 8, ... The generator's edit G(x, r) is computed
once per step: detached for the critic, attached for the generator. What the generator
update minimises, the paper's terms and any extra ones, is ``GeneratorLoss``'s business:
the step only runs it. Everything random in a step comes from ``step_generator(seed,
step, rank)``, so a run resumed from a checkpoint computes exactly the losses the
uninterrupted run would have.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fgfem.errors import FgfemError
from fgfem.nets import Critic, Generator, NetConfig
from fgfem.train import distributed
from fgfem.train.config import TrainConfig
from fgfem.train.losses import CriticLoss, GeneratorLoss
from fgfem.train.pairs import PairSource
from fgfem.train.rig_front import resample

Autocast = Callable[[], AbstractContextManager[Any]]


@dataclass
class Nets:
    """The two networks (possibly DDP-wrapped), their unwrapped selves and their optimisers."""

    generator: torch.nn.Module
    critic: torch.nn.Module
    raw_generator: Generator
    raw_critic: Critic
    opt_g: torch.optim.Adam
    opt_d: torch.optim.Adam


def build_nets(net_cfg: NetConfig, cfg: TrainConfig, device: torch.device, dist_info: distributed.DistInfo) -> Nets:
    """Both networks on ``device`` (channels_last if asked), DDP-wrapped when distributed, with Adam."""
    raw_g, raw_d = Generator(net_cfg).to(device), Critic(net_cfg).to(device)
    if cfg.run.channels_last:
        raw_g = raw_g.to(memory_format=torch.channels_last)
        raw_d = raw_d.to(memory_format=torch.channels_last)
    betas = (cfg.optim.beta1, cfg.optim.beta2)
    opt_g = torch.optim.Adam(raw_g.parameters(), lr=cfg.optim.lr_g, betas=betas)
    opt_d = torch.optim.Adam(raw_d.parameters(), lr=cfg.optim.lr_d, betas=betas)
    return Nets(generator=distributed.wrap(raw_g, dist_info, device), critic=distributed.wrap(raw_d, dist_info, device),
                raw_generator=raw_g, raw_critic=raw_d, opt_g=opt_g, opt_d=opt_d)


def set_learning_rates(nets: Nets, cfg: TrainConfig, epoch: int) -> None:
    for opt, base in ((nets.opt_g, cfg.optim.lr_g), (nets.opt_d, cfg.optim.lr_d)):
        for group in opt.param_groups:
            group["lr"] = cfg.optim.learning_rate(base, epoch)


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The random source of one step's own draws (the gradient penalty's mixing weights, the terms' draws)."""
    state = np.random.SeedSequence([seed, 0x5EED, step, rank]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed((int(state[0]) << 31) ^ int(state[1]))


def train_step(nets: Nets, batch: dict[str, torch.Tensor], step: int, cfg: TrainConfig, critic_loss: CriticLoss,
               generator_loss: GeneratorLoss, device: torch.device, autocast: Autocast,
               pairs: PairSource | None = None) -> dict[str, float]:
    """One critic update, plus a generator update on every ``critic_steps``-th step; returns the logged terms.

    ``pairs`` is for the generator terms that need expression pairs (``fgfem.train.terms``).
    Behind the rig (``--rig``) the batch holds each face moved by the rig (``x_in``), which
    the generator edits, and the cycle's way back (``fgfem.train.rig_front.rigged_sample``).
    """
    memory = torch.channels_last if cfg.run.channels_last else torch.contiguous_format
    x = batch["x"].to(device, non_blocking=True).contiguous(memory_format=memory)
    a_x, a_t, rel = (batch[k].to(device, non_blocking=True) for k in ("a_x", "a_t", "rel"))
    train_g = step % cfg.optim.critic_steps == 0
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0

    x_in = x
    if "x_in" in batch:
        x_in = batch["x_in"].to(device, non_blocking=True).contiguous(memory_format=memory)
    with torch.set_grad_enabled(train_g), autocast():
        fake = nets.generator(x_in, rel)

    draws = step_generator(cfg.run.seed, step, rank)
    with autocast():
        d_total, terms = critic_loss(nets.critic, x, fake, a_x, step=step, generator=draws)
    nets.opt_d.zero_grad(set_to_none=True)
    d_total.backward()
    nets.opt_d.step()

    if train_g:
        # The critic is only a judge here: call it unwrapped (no DDP sync) and without weight gradients.
        nets.raw_critic.requires_grad_(False)
        with autocast():
            if "x_in" in batch and "back_grid" not in batch:
                raise FgfemError(f"step {step} updates the generator behind the rig, but its batch holds no "
                                 "way back for the cycle (the loader's generator_every differs from critic_steps)")
            back = (functools.partial(resample, grid=batch["back_grid"], warped=batch["back_warped"])
                    if "back_grid" in batch else None)
            g_total, g_terms = generator_loss(nets.generator, nets.raw_critic, x, fake, rel, a_t, batch=batch,
                                              draws=draws, pairs=pairs, back=back)
        nets.opt_g.zero_grad(set_to_none=True)
        g_total.backward()
        nets.opt_g.step()
        nets.raw_critic.requires_grad_(True)
        terms.update(g_terms)
    values = {key: float(value.detach()) for key, value in terms.items()}
    bad = [key for key, value in values.items() if not np.isfinite(value)]
    if bad:
        raise FgfemError(f"training diverged at step {step}: {', '.join(bad)} not finite; "
                         "lower --lr or train in fp32 (--no-bf16)")
    return values
