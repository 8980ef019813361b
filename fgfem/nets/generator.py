"""The U-Net generator with Multi-Scale Fusion skip units (Ling et al., ECCV 2020).

``G(x, r)`` edits face crop ``x`` (B x 3 x H x W in [-1, 1]) by the relative AU vector
``r`` (B x 17, already divided by ``AU_SCALE``). Widths at 128 px for the paper preset
(conv_dim 64) are given next to each layer; any side that is a multiple of 16 works,
fgfem uses multiples of 64 so that the critic fits too.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fgfem.errors import FgfemError
from fgfem.nets.blocks import ConvNormAct, DownBlock, MSFSkipUnit, UpBlock, concat_aus, init_normal
from fgfem.nets.config import NetConfig

# Four stride-2 steps down to the bottleneck.
GENERATOR_SIZE_MULTIPLE = 16
# Initial spread of the last layer of a residual generator: a +1 AU edit starts as a faint (~0.01) change.
RESIDUAL_INIT_STD = 5e-3
# The warp's displacement field is averaged over blocks of this many pixels, then interpolated
# back: expressions move whole regions (a lip corner, a brow), never single pixels.
FLOW_BLOCK = 8


class Generator(nn.Module):
    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, b, n = cfg.conv_dim, cfg.bottleneck_dim, cfg.num_aus
        # Encoder.
        self.stem = ConvNormAct(3, c, 7, act="lrelu")  # 64 @ 128
        self.down1 = DownBlock(c, 2 * c)  # 128 @ 64
        self.down2 = DownBlock(2 * c, 4 * c)  # 256 @ 32
        self.down3 = DownBlock(4 * c, 8 * c)  # 512 @ 16
        self.down4 = DownBlock(8 * c, b)  # 512 @ 8
        film = n if cfg.au_film else 0
        self.bottleneck = ConvNormAct(b + n, b, 3, film_aus=film)  # 512 @ 8, sees the AUs
        # Skip units, run coarse to fine: each fuses an encoder map with the previous unit's output.
        self.skip3 = MSFSkipUnit(8 * c, b, 8 * c, n, film=cfg.au_film)  # 512 @ 16
        self.skip2 = MSFSkipUnit(4 * c, 8 * c, 4 * c, n, film=cfg.au_film)  # 256 @ 32
        self.skip1 = MSFSkipUnit(2 * c, 4 * c, 2 * c, n, film=cfg.au_film)  # 128 @ 64
        # Decoder with U-Net concatenation of the skip units' outputs.
        self.up4 = UpBlock(b, 8 * c)  # 512 @ 16
        self.up3 = UpBlock(16 * c, 4 * c)  # 256 @ 32
        self.up2 = UpBlock(8 * c, 2 * c)  # 128 @ 64
        self.up1 = UpBlock(4 * c, c)  # 64 @ 128
        # Residual: one RGB change per AU, weighted by the AUs asked for (see forward).
        self.to_rgb = nn.Conv2d(c, 3 * n if cfg.residual_output else 3, 7, padding=3, bias=False)
        # Warp: one (dx, dy) field per AU, zero at first so that training starts from the colour-only model.
        self.to_flow = nn.Conv2d(c, 2 * n, 7, padding=3, bias=False) if cfg.au_warp else None
        # Off when an AU rig moves the face before the generator (``fgfem.rig``): the geometry is
        # then the rig's, at the photo's resolution, and the generator adds only appearance.
        self.own_warp = True
        # How the residual heads run (the same function either way, see au_weighted_conv); the
        # benchmarks switch it off to time the original form as their baseline.
        self.per_face_kernels = True
        init_normal(self)
        if cfg.residual_output and not self.to_rgb.weight.is_meta:  # meta: see init_normal
            nn.init.normal_(self.to_rgb.weight, 0.0, RESIDUAL_INIT_STD)
        if self.to_flow is not None and not self.to_flow.weight.is_meta:
            nn.init.zeros_(self.to_flow.weight)

    def forward(self, x: torch.Tensor, rel_aus: torch.Tensor, *, return_flow: bool = False) -> Any:
        """The edited faces; with ``return_flow`` also the warp's displacement field (None without a warp),
        B x 2 x H x W in [-1, 1] image units, which training can compare with how landmarks move."""
        check_generator_inputs(x, rel_aus, self.cfg.num_aus)
        d1 = self.down1(self.stem(x))
        d2 = self.down2(d1)
        d3 = self.down3(d2)
        bottom = self.bottleneck(concat_aus(self.down4(d3), rel_aus), rel_aus)

        s3 = self.skip3(d3, bottom, rel_aus)
        s2 = self.skip2(d2, s3, rel_aus)
        s1 = self.skip1(d1, s2, rel_aus)

        y = self.up4(bottom)
        y = self.up3(torch.cat([y, s3], dim=1))
        y = self.up2(torch.cat([y, s2], dim=1))
        y = self.up1(torch.cat([y, s1], dim=1))
        flow = None
        if not self.cfg.residual_output:
            out = torch.tanh(self.to_rgb(y))
        else:
            per_face = self.per_face_kernels and y.device.type == "cpu"
            change = au_weighted_conv(self.to_rgb, y, rel_aus, per_face=per_face)
            if self.to_flow is not None and self.own_warp:
                flow = smooth_flow(au_weighted_conv(self.to_flow, y, rel_aus, per_face=per_face))
                change = change + warp_change(x, flow)
            out = (x + change).clamp(-1.0, 1.0)
        return (out, flow) if return_flow else out


def au_weighted_conv(conv: nn.Conv2d, y: torch.Tensor, rel_aus: torch.Tensor, *, per_face: bool) -> torch.Tensor:
    """``au_weighted_change(conv(y), rel_aus)``; with ``per_face`` as one small convolution per face.

    The sum over AUs of (relative AU) x (that AU's map) is linear in the kernels, so each face
    can be convolved once with its own AU-weighted kernel (C output channels) instead of with
    all 17 x C kernels. Why: the two 7x7 heads at full resolution were ~35 % of the `lite`
    generator's CPU time (measured with torch.profiler, batch 8, 128 px); per-face kernels cut
    them ~5x forward and ~4.5x forward + backward (a grouped convolution, the one-call form, was
    slower than the original on oneDNN). The generator asks for it on the CPU only: on a GPU the
    original form is the one measured. A zero edit gives zero kernels: the change stays exactly zero.
    """
    if not per_face or conv.bias is not None or conv.groups != 1:
        return au_weighted_change(conv(y), rel_aus)
    num_aus = rel_aus.shape[1]
    weight = conv.weight
    kernels = weight.view(num_aus, weight.shape[0] // num_aus, *weight.shape[1:])
    face_kernels = torch.einsum("bk,koihw->boihw", rel_aus.to(weight.dtype), kernels)
    return torch.cat([F.conv2d(y[i : i + 1], face_kernels[i], padding=conv.padding, stride=conv.stride,
                               dilation=conv.dilation) for i in range(y.shape[0])])


def au_weighted_change(per_au: torch.Tensor, rel_aus: torch.Tensor) -> torch.Tensor:
    """Sum over AUs of (relative AU) x (that AU's map): B x C*17 x H x W -> B x C x H x W.

    Why this form: the change is exactly zero for a zero edit, so identity is built in
    rather than learnt (an identity L1 on a near-zero output layer pins it at zero and
    no AU signal gets through: measured |G(x, r) - G(x, 0)| ~ 7e-6 after 100 generator
    steps), and each AU's gradient reaches its own maps from the first step. The maps
    still depend on the AUs through the conditioned layers, so edits need not be linear.
    """
    batch, channels, height, width = per_au.shape
    maps = per_au.view(batch, rel_aus.shape[1], channels // rel_aus.shape[1], height, width)
    return torch.einsum("bkchw,bk->bchw", maps, rel_aus.to(per_au.dtype))


def smooth_flow(flow: torch.Tensor) -> torch.Tensor:
    """The displacement field averaged over blocks of ``FLOW_BLOCK`` pixels and interpolated back."""
    return F.interpolate(F.avg_pool2d(flow, FLOW_BLOCK), size=flow.shape[-2:], mode="bilinear", align_corners=False)


def warp_change(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """What moving ``x``'s pixels by ``flow`` (B x 2 x H x W, in [-1, 1] image units) changes.

    Output pixel p shows the input at p + flow(p). Returned as a difference of two identical
    resamplings (moved minus unmoved) so that a zero field changes nothing, bit for bit: a
    zero edit stays the identity.
    """
    identity = torch.eye(2, 3, dtype=x.dtype, device=x.device).expand(x.shape[0], 2, 3)
    grid = F.affine_grid(identity, list(x.shape), align_corners=False)
    moved = F.grid_sample(x, grid + flow.permute(0, 2, 3, 1).to(x.dtype), mode="bilinear",
                          padding_mode="border", align_corners=False)
    still = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return moved - still


def check_generator_inputs(x: torch.Tensor, rel_aus: torch.Tensor, num_aus: int) -> None:
    """Fail with one clear line instead of a shape error deep inside a convolution."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise FgfemError(f"generator input must be B x 3 x H x W, got {tuple(x.shape)}")
    height, width = x.shape[-2:]
    if height % GENERATOR_SIZE_MULTIPLE or width % GENERATOR_SIZE_MULTIPLE:
        raise FgfemError(f"generator input {height}x{width} px: both sides must be multiples of "
                         f"{GENERATOR_SIZE_MULTIPLE}")
    if rel_aus.shape != (x.shape[0], num_aus):
        raise FgfemError(
            f"relative AUs must be B x {num_aus} (batch {x.shape[0]}), got {tuple(rel_aus.shape)}"
        )
