"""Other ways to compute the generator's widest layers, timed against oneDNN's own, one layer at a time.

Why this exists: `paper` inference at 128 px misses its 2x target on a 2-core AVX2 CPU, and its
time is ~70 % stride-1 5x5 / 3x3 convolutions and ~25 % 4x4 transposed ones, which oneDNN
already runs at most of the cores' speed. The exact rewrites that remain are algorithmic:

- **Winograd F(m, r)**: a 5x5 convolution over m x m output tiles takes (m + 4)^2 products per
  tile instead of 25 m^2 (6.25x fewer for F(4, 5)); the input and output transforms cost
  memory traffic. Here: input transform as one strided convolution (oneDNN), one batched
  matrix product per tile position, output transform as one matrix product.
- **channels_last** per layer, paying the layout conversion in and out.
- **transposed 4x4 stride 2 as a 3x3 convolution + pixel shuffle** (the four output phases are
  2x2 convolutions of the input; one call, 2.25x the products).

Each row reports the median time over rounds, its ratio to oneDNN's NCHW convolution of the same
layer and the largest difference from it. The weights' transform (Winograd) is done once outside
the timing, as inference would. Weights and inputs are random: timing does not depend on them.

    python benchmarks/bench_conv_forms.py              # batch 8, 2 threads
    python benchmarks/bench_conv_forms.py --batch 1 --threads 1
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

# Interpolation points of the Winograd transforms (plus the point at infinity), best-conditioned first.
WINOGRAD_POINTS = (0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 3.0, -3.0)


@dataclass(frozen=True)
class Layer:
    name: str
    in_ch: int
    out_ch: int
    side: int
    kernel: int
    transposed: bool = False


# The widest layers of each preset at 128 px (see fgfem/nets/generator.py for where they sit).
LAYERS = (
    Layer("paper skip1.in_conv", 145, 128, 64, 5),
    Layer("paper skip2.in_conv", 273, 256, 32, 5),
    Layer("paper skip3.out5", 1024, 256, 16, 5),
    Layer("paper skip2.out3", 512, 128, 32, 3),
    Layer("paper up2", 512, 128, 32, 4, transposed=True),
    Layer("lite skip1.in_conv", 49, 32, 64, 5),
    Layer("lite up1", 64, 16, 64, 4, transposed=True),
)


def winograd_matrices(m: int, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A^T (m x n), G (n x r), B^T (n x n) of Winograd's minimal filtering F(m, r), n = m + r - 1.

    From the Vandermonde matrices of the points: a linear convolution is evaluated at n points,
    multiplied pointwise and interpolated back; correlation (what conv2d computes) is its transpose.
    """
    n = m + r - 1
    points = WINOGRAD_POINTS[: n - 1]

    def vandermonde(columns: int) -> np.ndarray:
        matrix = np.zeros((n, columns))
        for row, point in enumerate(points):
            matrix[row] = [point**power for power in range(columns)]
        matrix[n - 1, columns - 1] = 1.0  # the point at infinity: the leading coefficient
        return matrix

    return vandermonde(m).T, vandermonde(r), np.linalg.inv(vandermonde(n)).T


class WinogradConv:
    """A stride-1, 'same'-padded convolution by Winograd F(m, r), weights transformed once."""

    def __init__(self, weight: torch.Tensor, m: int) -> None:
        out_ch, in_ch, r, _ = weight.shape
        a_t, g, b_t = (torch.tensor(matrix, dtype=weight.dtype) for matrix in winograd_matrices(m, r))
        self.m, self.r, self.n = m, r, m + r - 1
        n = self.n
        self.input_kernels = torch.einsum("ia,jb->ijab", b_t, b_t).reshape(n * n, 1, n, n).contiguous()
        self.output_matrix = torch.einsum("ia,jb->ijab", a_t, a_t).reshape(m * m, n * n).contiguous()
        self.filters = (g @ weight @ g.T).permute(2, 3, 1, 0).reshape(n * n, in_ch, out_ch).contiguous()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        m, n, pad = self.m, self.n, self.r // 2
        tiles_h, tiles_w = math.ceil(height / m), math.ceil(width / m)
        padded = F.pad(x, (pad, tiles_w * m + n - m - width - pad, pad, tiles_h * m + n - m - height - pad))
        spectra = F.conv2d(padded.reshape(batch * channels, 1, *padded.shape[2:]), self.input_kernels, stride=m)
        spectra = spectra.view(batch, channels, n * n, tiles_h * tiles_w).permute(2, 0, 3, 1)
        products = torch.bmm(spectra.reshape(n * n, -1, channels), self.filters)
        out_ch = self.filters.shape[2]
        tiles = (self.output_matrix @ products.view(n * n, -1)).view(m, m, batch, tiles_h, tiles_w, out_ch)
        out = tiles.permute(2, 5, 3, 0, 4, 1).reshape(batch, out_ch, tiles_h * m, tiles_w * m)
        return out[:, :, :height, :width]


def transposed_as_shuffle(weight: torch.Tensor) -> torch.Tensor:
    """The 3x3 kernels (4*Cout x Cin) whose pixel-shuffled output is conv_transpose2d(x, weight, 2, 1).

    Output row 2j takes input rows j-1 and j (kernel rows 3, 1); row 2j+1 takes j and j+1 (rows 2, 0).
    """
    in_ch, out_ch = weight.shape[:2]
    taps = ({0: 3, 1: 1}, {1: 2, 2: 0})  # phase -> {window position: kernel index}
    kernels = weight.new_zeros(out_ch, 2, 2, in_ch, 3, 3)
    for row_phase in (0, 1):
        for col_phase in (0, 1):
            for pos_u, k_u in taps[row_phase].items():
                for pos_v, k_v in taps[col_phase].items():
                    kernels[:, row_phase, col_phase, :, pos_u, pos_v] = weight[:, :, k_u, k_v].t()
    return kernels.reshape(4 * out_ch, in_ch, 3, 3)


def forms_of(layer: Layer, weight: torch.Tensor) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """oneDNN's NCHW form first (the reference row), then the alternatives."""
    channels_last = torch.channels_last
    if layer.transposed:
        shuffle_kernels = transposed_as_shuffle(weight)
        return {
            "oneDNN (NCHW)": lambda x: F.conv_transpose2d(x, weight, stride=2, padding=1),
            "channels_last + conversions": lambda x: F.conv_transpose2d(
                x.contiguous(memory_format=channels_last), weight, stride=2, padding=1).contiguous(),
            "3x3 conv + pixel shuffle": lambda x: F.pixel_shuffle(F.conv2d(x, shuffle_kernels, padding=1), 2),
        }
    pad = layer.kernel // 2
    forms: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "oneDNN (NCHW)": lambda x: F.conv2d(x, weight, padding=pad),
        "channels_last + conversions": lambda x: F.conv2d(
            x.contiguous(memory_format=channels_last), weight, padding=pad).contiguous(),
    }
    for m in (2, 4):
        forms[f"Winograd F({m},{layer.kernel})"] = WinogradConv(weight, m)
    return forms


def median_ms(run: Callable[[], torch.Tensor], rounds: int) -> float:
    run()  # warm-up: oneDNN picks and caches its kernels on the first call
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    console = Console(width=120)
    console.print(f"batch {args.batch}, {torch.get_num_threads()} torch threads, median of {args.rounds} rounds")
    table = Table(title="one layer, forward (inference)")
    for column in ("layer", "form", "ms", "vs oneDNN", "max |diff|", "max |out|"):
        table.add_column(column, justify="left" if column in ("layer", "form") else "right")
    with torch.inference_mode():
        for layer in LAYERS:
            x = torch.randn(args.batch, layer.in_ch, layer.side, layer.side)
            shape = ((layer.in_ch, layer.out_ch) if layer.transposed else (layer.out_ch, layer.in_ch))
            weight = torch.randn(*shape, layer.kernel, layer.kernel) * 0.02
            reference_ms, reference = 0.0, None
            for form, run in forms_of(layer, weight).items():
                elapsed = median_ms(lambda run=run, x=x: run(x), args.rounds)
                out = run(x)
                if reference is None:
                    reference_ms, reference = elapsed, out
                diff = float((out - reference).abs().max())
                table.add_row(layer.name if form.startswith("oneDNN") else "", form, f"{elapsed:.1f}",
                              f"{reference_ms / elapsed:.2f}x", f"{diff:.1e}", f"{float(reference.abs().max()):.1f}")
            table.add_section()
    console.print(table)


if __name__ == "__main__":
    main()
