"""Training-step throughput (images/s) per preset and option, against a plain eager fp32 NCHW baseline.

One measured "cycle" is ``critic_steps`` iterations (critic every step, generator on the
first), i.e. what the paper's schedule costs per image on average. Every variant has its
own networks in the same process and the rounds are interleaved (baseline, then each
variant, repeated), so the ratios compare under the same load; the table shows medians.
The first variant is the baseline. Each row also says whether its losses stayed finite and
how far its first step's losses are from the baseline's (same seed, same batch): bf16 must
be faster *and* train.

    python benchmarks/bench_train.py --presets lite paper --rounds 2
    python benchmarks/bench_train.py --presets lite --variants "CPU layer rewrites" "CPU rewrites + bf16"
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import time

import torch

from fgfem.devices import DeviceChoice, describe_cpu, resolve_device
from fgfem.errors import FgfemError
from fgfem.nets import use_cpu_rewrites
from fgfem.train import distributed
from fgfem.train.config import TrainConfig
from fgfem.train.loop import build_nets, train_step
from fgfem.train.losses import CriticLoss, GeneratorLoss

# TrainConfig fields per variant, plus REWRITES: whether the CPU-only layer rewrites are on
# (``fgfem.nets.use_cpu_rewrites``: per-face AU kernels for `lite`'s residual heads, the critic's
# tiny-map convolutions as one matrix product; on by default in fgfem). Every other row runs the
# reference's layer forms, so that its ratio is that option's alone.
REWRITES = "cpu_rewrites"
VARIANTS: dict[str, dict[str, object]] = {
    "baseline fp32 NCHW": {"channels_last": False, "bf16": False},
    "channels_last": {"channels_last": True, "bf16": False},
    "bf16 autocast": {"channels_last": False, "bf16": True},
    "bf16 + channels_last": {"channels_last": True, "bf16": True},
    "r1 lazy (every 16)": {"channels_last": False, "bf16": False, "regularizer": "r1"},
    "CPU layer rewrites": {"channels_last": False, "bf16": False, REWRITES: True},
    "CPU rewrites + r1 lazy": {"channels_last": False, "bf16": False, "regularizer": "r1", REWRITES: True},
    "CPU rewrites + bf16": {"channels_last": False, "bf16": True, REWRITES: True},
    "CPU rewrites + bf16 + channels_last": {"channels_last": True, "bf16": True, REWRITES: True},
    "CPU rewrites + channels_last": {"channels_last": True, "bf16": False, REWRITES: True},
}
DEFAULT_VARIANTS = ["baseline fp32 NCHW", "CPU layer rewrites", "CPU rewrites + bf16"]


class Runner:
    """One variant's networks, losses and fixed random batch, ready to time a few cycles at a time.

    Every variant keeps its own networks, so that rounds can be interleaved (baseline, then each
    variant, repeated): load from other processes then hits all rows alike.
    """

    def __init__(self, cfg: TrainConfig, device: str, rewrites: bool) -> None:
        self.cfg = cfg
        choice = resolve_device(device, bf16=cfg.bf16)
        self.choice = DeviceChoice(device=choice.device, autocast_dtype=choice.autocast_dtype)
        torch.manual_seed(0)
        self.nets = build_nets(cfg.net_config(), cfg, self.choice.device, distributed.DistInfo())
        use_cpu_rewrites(self.nets.raw_generator, rewrites)
        use_cpu_rewrites(self.nets.raw_critic, rewrites)
        self.critic_loss = CriticLoss(lambda_cond=cfg.lambda_d_cond, regularizer=cfg.regularizer,
                                      lambda_gp=cfg.lambda_gp, r1_gamma=cfg.r1_gamma, r1_every=cfg.r1_every)
        self.generator_loss = GeneratorLoss(lambda_cond=cfg.lambda_g_cond, lambda_idt=cfg.lambda_idt,
                                            lambda_cyc=cfg.lambda_cyc, lambda_tv=cfg.lambda_tv)
        data = torch.Generator().manual_seed(1)  # the same batch for every variant
        aus = torch.rand(cfg.batch, 17, generator=data) * 0.4
        self.batch = {"x": torch.rand(cfg.batch, 3, cfg.image_size, cfg.image_size, generator=data) * 2 - 1,
                      "a_x": aus, "a_t": aus.roll(1, 0), "rel": aus.roll(1, 0) - aus}
        self.step = 1  # step 1 first: the warm-up then avoids the R1 step 0
        self.rates: list[float] = []
        self.first_losses: dict[str, float] = {}
        self.diverged = ""

    def cycles(self, count: int) -> float:
        """Run ``count`` cycles of ``critic_steps`` iterations; images per second."""
        device = self.choice.device
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(count * self.cfg.critic_steps):
            terms = train_step(self.nets, self.batch, self.step, self.cfg, self.critic_loss, self.generator_loss,
                               device, self.choice.autocast)
            self.first_losses = self.first_losses or terms
            self.step += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        return count * self.cfg.critic_steps * self.cfg.batch / (time.perf_counter() - start)


def loss_gap(runner: Runner, baseline: Runner) -> float:
    """Largest relative difference of the first step's logged losses against the baseline's (same batch)."""
    gaps = [abs(value - baseline.first_losses[key]) / max(abs(baseline.first_losses[key]), 1e-3)
            for key, value in runner.first_losses.items() if key in baseline.first_losses]
    return max(gaps, default=math.nan)


def bench_preset(preset: str, args: argparse.Namespace) -> list[str]:
    """Warm every variant up, then time them in interleaved rounds; one table row each (median)."""
    base_cfg = TrainConfig(preset=preset, image_size=args.size, batch=args.batch, device=args.device)
    runners: dict[str, Runner] = {}
    for name in args.variants:
        options = dict(VARIANTS[name])
        rewrites = bool(options.pop(REWRITES, False))
        runners[name] = Runner(dataclasses.replace(base_cfg, **options), args.device, rewrites)
        runners[name].cycles(1)  # warm-up: one-time allocations, oneDNN kernel selection
    for _ in range(args.rounds):
        for runner in runners.values():
            if runner.diverged:
                continue
            try:
                runner.rates.append(runner.cycles(args.cycles))
            except FgfemError as problem:  # non-finite losses: reported, the other rows still run
                runner.diverged = str(problem)
    baseline = runners[args.variants[0]]
    base_rate = statistics.median(baseline.rates)
    lines = []
    for name, runner in runners.items():
        if runner.diverged or not runner.rates:
            lines.append(f"| {preset} | {name} | - | - | - | {runner.diverged or 'no round finished'} |")
            continue
        rate = statistics.median(runner.rates)
        spread = 100 * (max(runner.rates) - min(runner.rates)) / rate
        lines.append(f"| {preset} | {name} | {rate:.2f} | {rate / base_rate:.2f}x | {spread:.0f}% | "
                     f"finite, first-step losses within {100 * loss_gap(runner, baseline):.1f}% of the baseline |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["lite", "paper"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--cycles", type=int, default=1, help="cycles of critic_steps iterations per round")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (the table shows medians)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's choice)")
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS),
                        help="the first one is the baseline the ratios are taken against")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
          f"batch {args.batch}, {args.size} px, {args.rounds} round(s) of {args.cycles} cycle(s) of 4 iterations "
          f"(1 G step), load average {os.getloadavg()[0]:.1f}")
    print(f"CPU: {describe_cpu()}")
    print(f"| preset | variant | img/s | vs {args.variants[0]} | spread | losses |")
    print("|---|---|---:|---:|---:|---|")
    for preset in args.presets:
        for line in bench_preset(preset, args):
            print(line, flush=True)


if __name__ == "__main__":
    main()
