"""Training-step throughput (images/s) per preset and option, against a plain eager fp32 NCHW baseline.

One measured "cycle" is ``critic_steps`` iterations (critic every step, generator on the
first), i.e. what the paper's schedule costs per image on average. Every variant runs in
the same process right after the baseline, so the numbers compare; on a shared machine
they are still noisy.

    python benchmarks/bench_train.py --presets lite paper --batch 8 --size 128 --cycles 2
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from fgfem.devices import DeviceChoice, resolve_device
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
}


def images_per_second(cfg: TrainConfig, cycles: int, device: str, rewrites: bool = False) -> float:
    choice = resolve_device(device, bf16=cfg.bf16)
    choice = DeviceChoice(device=choice.device, autocast_dtype=choice.autocast_dtype)
    torch.manual_seed(0)
    nets = build_nets(cfg.net_config(), cfg, choice.device, distributed.DistInfo())
    use_cpu_rewrites(nets.raw_generator, rewrites)
    use_cpu_rewrites(nets.raw_critic, rewrites)
    critic_loss = CriticLoss(lambda_cond=cfg.lambda_d_cond, regularizer=cfg.regularizer, lambda_gp=cfg.lambda_gp,
                             r1_gamma=cfg.r1_gamma, r1_every=cfg.r1_every)
    generator_loss = GeneratorLoss(lambda_cond=cfg.lambda_g_cond, lambda_idt=cfg.lambda_idt,
                                   lambda_cyc=cfg.lambda_cyc, lambda_tv=cfg.lambda_tv)
    aus = torch.rand(cfg.batch, 17) * 0.4
    batch = {"x": torch.rand(cfg.batch, 3, cfg.image_size, cfg.image_size) * 2 - 1, "a_x": aus,
             "a_t": aus.roll(1, 0), "rel": aus.roll(1, 0) - aus}

    def cycle(first: int) -> None:
        for step in range(first, first + cfg.critic_steps):
            train_step(nets, batch, step, cfg, critic_loss, generator_loss, choice.device, choice.autocast)

    cycle(1)  # warm-up (one-time allocations, oneDNN kernel selection); step 1 avoids the R1 step 0
    if choice.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for c in range(cycles):
        cycle(c * cfg.critic_steps)  # includes step 0: R1 is paid once per 16 steps, as in training
    if choice.device.type == "cuda":
        torch.cuda.synchronize()
    return cycles * cfg.critic_steps * cfg.batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["lite", "paper"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--cycles", type=int, default=2, help="measured cycles of critic_steps iterations")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's choice)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
          f"batch {args.batch}, {args.size} px, {args.cycles} cycle(s) of 4 iterations (1 G step)")
    print(f"{'preset':8} {'variant':24} {'img/s':>8} {'vs baseline':>12}")
    for preset in args.presets:
        base_cfg = TrainConfig(preset=preset, image_size=args.size, batch=args.batch, device=args.device)
        baseline = None
        for name in args.variants:
            options = dict(VARIANTS[name])
            rewrites = bool(options.pop(REWRITES, False))
            cfg = dataclasses.replace(base_cfg, **options)
            rate = images_per_second(cfg, args.cycles, args.device, rewrites)
            baseline = baseline or rate
            print(f"{preset:8} {name:24} {rate:8.2f} {rate / baseline:11.2f}x", flush=True)


if __name__ == "__main__":
    main()
