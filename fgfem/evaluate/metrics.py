"""Image metrics of B x C x H x W batches in [-1, 1]: PSNR and SSIM, exact and finite for JSON."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fgfem.errors import FgfemError

PSNR_CAP_DB = 100.0  # identical images: finite in JSON, far above any real reconstruction


def psnr(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 2.0) -> torch.Tensor:
    """Per-image PSNR (dB) of B x C x H x W batches; ``data_range`` 2 for [-1, 1] images.

    Identical images give ``PSNR_CAP_DB`` rather than infinity, so means and JSON stay finite.
    """
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(1)
    floor = data_range**2 * 10 ** (-PSNR_CAP_DB / 10)
    return (10 * torch.log10(data_range**2 / mse.clamp_min(floor))).float()


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """The normalised 1-D Gaussian of Wang et al.'s SSIM (11 taps, sigma 1.5)."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    taps = torch.exp(-(coords**2) / (2 * sigma**2))
    return taps / taps.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 2.0, window: int = 11,
         sigma: float = 1.5) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004) of B x C x H x W batches: Gaussian window, K1 0.01, K2 0.03.

    Local statistics come from a separable Gaussian filter over the *valid* region (no
    padding, as in the reference MATLAB code), per channel; the map is averaged over
    pixels and channels. The five local moments go through one grouped convolution.
    float32 is enough: it matches scikit-image's float64 result to 1e-7 on real crops.
    """
    if x.shape != y.shape or x.ndim != 4:
        raise FgfemError(f"SSIM needs two B x C x H x W batches of one shape, got {tuple(x.shape)}, {tuple(y.shape)}")
    if min(x.shape[-2:]) < window:
        raise FgfemError(f"SSIM needs images of at least {window} px, got {tuple(x.shape[-2:])}")
    dtype = torch.promote_types(torch.promote_types(x.dtype, y.dtype), torch.float32)  # float64 stays float64
    a, b = x.to(dtype), y.to(dtype)
    moments = torch.cat([a, b, a * a, b * b, a * b], dim=1)
    groups = moments.shape[1]
    taps = gaussian_window(window, sigma).to(device=a.device, dtype=a.dtype)
    moments = F.conv2d(moments, taps.view(1, 1, 1, window).expand(groups, 1, 1, window), groups=groups)
    moments = F.conv2d(moments, taps.view(1, 1, window, 1).expand(groups, 1, window, 1), groups=groups)
    mu_a, mu_b, aa, bb, ab = moments.chunk(5, dim=1)
    var_a, var_b, cov = aa - mu_a**2, bb - mu_b**2, ab - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return index.flatten(1).mean(1)
