"""The networks: config presets, the MSF U-Net generator and the PatchGAN + AU critic."""

from __future__ import annotations

from torch import nn

from fgfem.nets.config import PRESETS, NetConfig, get_preset
from fgfem.nets.critic import Critic
from fgfem.nets.generator import Generator

__all__ = ["PRESETS", "Critic", "Generator", "NetConfig", "count_parameters", "get_preset"]


def count_parameters(module: nn.Module) -> int:
    """Number of scalars in ``module``'s parameters (the figure quoted for each preset)."""
    return sum(p.numel() for p in module.parameters())
