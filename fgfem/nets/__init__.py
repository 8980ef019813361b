"""The networks: config presets, the MSF U-Net generator and the PatchGAN + AU critic."""

from __future__ import annotations

from torch import nn

from fgfem.nets.blocks import TinyMapConv2d
from fgfem.nets.config import PRESETS, NetConfig, get_preset
from fgfem.nets.critic import Critic
from fgfem.nets.generator import Generator

__all__ = ["PRESETS", "Critic", "Generator", "NetConfig", "count_parameters", "get_preset", "use_cpu_rewrites"]


def count_parameters(module: nn.Module) -> int:
    """Number of scalars in ``module``'s parameters (the figure quoted for each preset)."""
    return sum(p.numel() for p in module.parameters())


def use_cpu_rewrites(model: nn.Module, enabled: bool) -> None:
    """Switch the CPU-only rewrites of ``model``'s layers on (the default) or off.

    They compute the same functions with the same parameters, only faster on a CPU: the
    residual heads as per-face AU-weighted kernels (``Generator.per_face_kernels``) and
    tiny-map convolutions as one matrix product (``TinyMapConv2d``). The benchmarks switch
    them off to time the reference's form as their baseline.
    """
    for module in model.modules():
        if isinstance(module, TinyMapConv2d):
            module.matmul_on_cpu = enabled
        if isinstance(module, Generator):
            module.per_face_kernels = enabled
