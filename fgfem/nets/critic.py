"""The critic: a PatchGAN trunk with two heads (Ling et al., ECCV 2020; GANimation's critic).

The trunk halves the image ``critic_layers`` times with bias-free, norm-free strided
convolutions (WGAN-GP's gradient penalty is per-sample, which batch statistics would
break). One head scores realism per patch, the other regresses the 17 AUs (divided by
``AU_SCALE``) from the whole remaining map in a single kernel, which is why the
critic is built for one image size.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from fgfem.errors import FgfemError
from fgfem.nets.blocks import DownBlock, init_normal
from fgfem.nets.config import NetConfig


class Critic(nn.Module):
    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        widths = [cfg.critic_dim * 2**i for i in range(cfg.critic_layers)]
        steps = [DownBlock(3, widths[0], kernel=5, norm=False)]
        steps += [DownBlock(w_in, w_out, norm=False) for w_in, w_out in itertools.pairwise(widths)]
        self.trunk = nn.Sequential(*steps)
        self.patch_head = nn.Conv2d(widths[-1], 1, 3, padding=1, bias=False)
        self.au_head = nn.Conv2d(widths[-1], cfg.num_aus, cfg.au_kernel, bias=False)
        init_normal(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (patch scores B x 1 x h x w, AUs B x num_aus); h = w = image_size / 2**critic_layers."""
        size = self.cfg.image_size
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != size or x.shape[3] != size:
            raise FgfemError(f"critic input must be B x 3 x {size} x {size}, got {tuple(x.shape)}")
        features = self.trunk(x)
        return self.patch_head(features), self.au_head(features).flatten(1)
