"""The building blocks of the generator and critic, each one small enough to read at a glance.

Every convolution here is bias-free: in the generator an affine InstanceNorm follows
and would cancel a bias, and the reference critic has none either. Padding is always
``(kernel - 1) // 2``, which keeps the size for stride 1 and exactly halves (doubles,
for the transposed 4x4) it for stride 2.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Activation = Literal["relu", "lrelu", "none"]
# The reference uses PyTorch's default LeakyReLU slope everywhere.
LEAKY_SLOPE = 0.01
# Output maps up to this many pixels are computed as one matrix product on the CPU (TinyMapConv2d).
TINY_MAP_PIXELS = 16


class TinyMapConv2d(nn.Conv2d):
    """A convolution that runs as unfold + one matrix product where its output map is tiny.

    Why: the critic's last strided convolutions (4x4 -> 2x2 and 8x8 -> 4x4, the widest layers)
    run far below the CPU's matrix speed in oneDNN; as im2col + GEMM they are faster forward,
    backward and through the gradient penalty's double backward (bigger maps are slower this
    way, so they keep oneDNN; figures in ``benchmarks/README.md``, "Measured after the CPU layer
    rewrites"). The same function and parameters either way; GPUs keep the ordinary path.
    """

    # Off: always the ordinary path (the benchmarks' baseline, see fgfem.nets.use_cpu_rewrites).
    matmul_on_cpu = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.matmul_on_cpu or x.device.type != "cpu" or self.groups != 1 or self.bias is not None or x.ndim != 4:
            return super().forward(x)
        kernel, stride, padding, dilation = self.kernel_size, self.stride, self.padding, self.dilation
        if isinstance(padding, str):
            return super().forward(x)
        out_h = (x.shape[2] + 2 * padding[0] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
        out_w = (x.shape[3] + 2 * padding[1] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
        if out_h * out_w > TINY_MAP_PIXELS:
            return super().forward(x)
        batch, pixels = x.shape[0], out_h * out_w
        columns = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)  # B x C*k*k x pixels
        # Plain 2-D products in every direction (a batched product against the shared weight is
        # what autograd would otherwise build, and it ran ~2x slower in the backward).
        rows = columns.transpose(1, 2).reshape(batch * pixels, -1)
        out = rows @ self.weight.flatten(1).to(rows.dtype).t()
        return out.view(batch, pixels, self.out_channels).transpose(1, 2).reshape(batch, self.out_channels,
                                                                                  out_h, out_w)


def make_activation(kind: Activation) -> nn.Module:
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "lrelu":
        return nn.LeakyReLU(LEAKY_SLOPE, inplace=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown activation {kind!r}")


def tile_aus(aus: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a B x C AU vector to a B x C x H x W map matching ``like``'s spatial size."""
    return aus[:, :, None, None].expand(-1, -1, like.shape[2], like.shape[3])


def concat_aus(features: torch.Tensor, aus: torch.Tensor) -> torch.Tensor:
    """Append the AU condition as extra constant channels (how every conditioned layer sees it)."""
    return torch.cat([features, tile_aus(aus.to(features.dtype), features)], dim=1)


class ConvNormAct(nn.Module):
    """Convolution (or 4x4 transposed convolution), optional affine InstanceNorm, activation."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        *,
        stride: int = 1,
        act: Activation = "relu",
        norm: bool = True,
        transpose: bool = False,
        film_aus: int = 0,
    ) -> None:
        super().__init__()
        conv_type = nn.ConvTranspose2d if transpose else TinyMapConv2d
        self.conv = conv_type(in_ch, out_ch, kernel, stride=stride, padding=(kernel - 1) // 2, bias=False)
        self.norm = nn.InstanceNorm2d(out_ch, affine=True) if norm else nn.Identity()
        self.act = make_activation(act)
        self.film = AUModulation(film_aus, out_ch) if film_aus else None

    def forward(self, x: torch.Tensor, aus: torch.Tensor | None = None) -> torch.Tensor:
        y = self.norm(self.conv(x))
        if self.film is not None:
            if aus is None:
                raise ValueError("this layer is AU-modulated: pass the AUs")
            y = self.film(y, aus)
        return self.act(y)


class AUModulation(nn.Module):
    """Per-channel scale and shift predicted from the AUs, applied after InstanceNorm (FiLM).

    Why: the paper feeds the AUs as constant channels into a convolution followed by
    InstanceNorm. A convolution of constant channels is constant over the image (up to the
    zero-padded border), and InstanceNorm subtracts exactly that per-channel constant, so the
    condition survives only at the borders and a generator learns to depend on it slowly
    (measured on lite: |G(x, r) - G(x, 0)| ~ 5e-6 after 100 generator steps). Applied after the
    norm it cannot be cancelled. Zero-initialised: the network starts as without it.
    """

    def __init__(self, num_aus: int, channels: int) -> None:
        super().__init__()
        self.linear = nn.Linear(num_aus, 2 * channels)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, features: torch.Tensor, aus: torch.Tensor) -> torch.Tensor:
        scale, shift = self.linear(aus.to(features.dtype)).chunk(2, dim=1)
        return features * (1.0 + scale[:, :, None, None]) + shift[:, :, None, None]


class DownBlock(ConvNormAct):
    """Halve the resolution: strided conv + IN + LeakyReLU (encoder and critic steps)."""

    def __init__(self, in_ch: int, out_ch: int, *, kernel: int = 4, norm: bool = True) -> None:
        super().__init__(in_ch, out_ch, kernel, stride=2, act="lrelu", norm=norm)


class UpBlock(ConvNormAct):
    """Double the resolution: 4x4 stride-2 transposed conv + IN + activation.

    The decoder uses ReLU; inside the skip units the reference uses LeakyReLU.
    """

    def __init__(self, in_ch: int, out_ch: int, *, act: Activation = "relu") -> None:
        super().__init__(in_ch, out_ch, 4, stride=2, act=act, transpose=True)


class FusionBlock(nn.Module):
    """Exchange information between a high-res and a half-res feature map.

    Each output keeps its input's width: half of it comes from its own scale
    (3x3 conv), the other half from the other scale (strided conv down, or
    transposed conv up).
    """

    def __init__(self, hr_dim: int, lr_dim: int) -> None:
        super().__init__()
        self.hr_to_hr = ConvNormAct(hr_dim, hr_dim // 2, 3)
        self.lr_to_hr = UpBlock(lr_dim, hr_dim - hr_dim // 2, act="lrelu")
        self.hr_to_lr = DownBlock(hr_dim, lr_dim // 2)
        self.lr_to_lr = ConvNormAct(lr_dim, lr_dim - lr_dim // 2, 3)

    def forward(self, hr: torch.Tensor, lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        new_hr = torch.cat([self.hr_to_hr(hr), self.lr_to_hr(lr)], dim=1)
        new_lr = torch.cat([self.hr_to_lr(hr), self.lr_to_lr(lr)], dim=1)
        return new_hr, new_lr


class MSFSkipUnit(nn.Module):
    """Multi-Scale Fusion skip connection (Ling et al. 2020, Sec. 3.2).

    Instead of passing encoder features straight to the decoder, the unit re-injects
    the AU condition, lets the encoder features (``hr``) and the coarser output of
    the previous unit (``lr``) exchange information, and emits ``out_dim`` channels
    from two receptive fields (3x3 and 5x5) so that both local and wider edits of a
    region reach the decoder.
    """

    def __init__(self, hr_dim: int, lr_dim: int, out_dim: int, num_aus: int, *, film: bool = False) -> None:
        super().__init__()
        lift_dim = min(lr_dim, out_dim)
        self.in_conv = ConvNormAct(hr_dim + num_aus, hr_dim, 5, film_aus=num_aus if film else 0)
        self.fusion = FusionBlock(hr_dim, lr_dim)
        self.lift = UpBlock(lr_dim, lift_dim, act="lrelu")
        self.out3 = ConvNormAct(hr_dim + lift_dim, out_dim // 2, 3)
        self.out5 = ConvNormAct(hr_dim + lift_dim, out_dim - out_dim // 2, 5)

    def forward(self, hr: torch.Tensor, lr: torch.Tensor, aus: torch.Tensor) -> torch.Tensor:
        hr = self.in_conv(concat_aus(hr, aus), aus)
        hr, lr = self.fusion(hr, lr)
        merged = torch.cat([hr, self.lift(lr)], dim=1)
        return torch.cat([self.out3(merged), self.out5(merged)], dim=1)


def init_normal(module: nn.Module, std: float = 0.02) -> None:
    """DCGAN-style init used by the reference: conv weights ~ N(0, std), biases 0.

    Affine InstanceNorm keeps PyTorch's (1, 0), as in the reference. Tensors on the
    meta device (built only to be loaded into) are skipped: the first ``normal_`` on
    meta costs seconds of one-off set-up in PyTorch, for values that are never read.
    """
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d) and not layer.weight.is_meta:
            nn.init.normal_(layer.weight, 0.0, std)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
