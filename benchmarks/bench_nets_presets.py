"""Compare the network presets: parameters, forward time and the cost of one training step.

A training step here is what the training loop does once per generator update:
one critic step (WGAN loss + AU regression + gradient penalty) and one generator
step (adversarial + AU loss on G(x, r), identity G(x, 0), cycle G(G(x, r), -r),
total variation), each followed by an Adam update. Loss weights follow docs/design.md, "Training";
the numbers only matter for cost, not for learning. Data are random tensors, so the
benchmark needs no face data.

    python benchmarks/bench_nets_presets.py                      # paper vs lite, batch 8, 128 px
    python benchmarks/bench_nets_presets.py --threads 1           # CPU-time ratio on a shared machine
    python benchmarks/bench_nets_presets.py --presets lite --steps 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fgfem.nets import Critic, Generator, NetConfig, count_parameters, get_preset


@dataclass
class PresetTiming:
    name: str
    g_params: int
    d_params: int
    g_forward_ms: float
    d_forward_ms: float
    step_ms: float
    step_cpu_ms: float


def gradient_penalty(critic: Critic, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    scores, _ = critic(mixed)
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def total_variation(images: torch.Tensor) -> torch.Tensor:
    return (images[..., 1:, :] - images[..., :-1, :]).abs().mean() + (
        images[..., :, 1:] - images[..., :, :-1]
    ).abs().mean()


def make_train_step(
    cfg: NetConfig, batch: int, device: torch.device
) -> tuple[Callable[[], None], nn.Module, nn.Module]:
    """Build both networks, their optimisers and a closure running one critic + generator step."""
    generator, critic = Generator(cfg).to(device), Critic(cfg).to(device)
    opt_g = torch.optim.Adam(generator.parameters(), lr=1e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(critic.parameters(), lr=1e-4, betas=(0.5, 0.999))
    x = torch.rand(batch, 3, cfg.image_size, cfg.image_size, device=device) * 2 - 1
    aus_x = torch.rand(batch, cfg.num_aus, device=device)
    aus_t = torch.rand(batch, cfg.num_aus, device=device)
    rel = aus_t - aus_x

    def step() -> None:
        with torch.no_grad():
            fake = generator(x, rel)
        real_scores, real_aus = critic(x)
        fake_scores, _ = critic(fake)
        loss_d = (fake_scores.mean() - real_scores.mean() + 150 * F.mse_loss(real_aus, aus_x)
                  + 10 * gradient_penalty(critic, x, fake))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

        fake = generator(x, rel)
        fake_scores, fake_aus = critic(fake)
        loss_g = (-fake_scores.mean() + 150 * F.mse_loss(fake_aus, aus_t)
                  + 30 * F.l1_loss(generator(x, torch.zeros_like(rel)), x)
                  + 30 * F.l1_loss(generator(fake, -rel), x) + 1e-5 * total_variation(fake))
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()

    return step, generator, critic


def time_ms(fn: Callable[[], object], repeats: int, warmup: int) -> tuple[float, float]:
    """Median wall time and median process CPU time of ``fn``, in ms, after ``warmup`` untimed calls.

    On a machine shared with other jobs the wall time mostly measures the others;
    the CPU time (best with ``--threads 1``) is the work the preset itself costs.
    """
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def bench_preset(
    name: str, size: int, batch: int, steps: int, warmup: int, device: torch.device
) -> PresetTiming:
    torch.manual_seed(0)
    cfg = get_preset(name, size)
    step, generator, critic = make_train_step(cfg, batch, device)
    x = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    rel = torch.zeros(batch, cfg.num_aus, device=device)
    with torch.inference_mode():
        g_ms, _ = time_ms(lambda: generator(x, rel), steps, warmup)
        d_ms, _ = time_ms(lambda: critic(x), steps, warmup)
    step_ms, step_cpu_ms = time_ms(step, steps, warmup)
    return PresetTiming(
        name, count_parameters(generator), count_parameters(critic), g_ms, d_ms, step_ms, step_cpu_ms
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", nargs="+", default=["paper", "lite"], help="the first is the base")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2, help="timed repeats (median is reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"batch {args.batch}, {args.size} px, median of {args.steps} after {args.warmup} warm-up")
    results = [bench_preset(n, args.size, args.batch, args.steps, args.warmup, device) for n in args.presets]
    base = results[0]
    header = (f"{'preset':<8} {'G params':>12} {'D params':>12} {'G fwd ms':>10} {'D fwd ms':>10} "
              f"{'step ms':>10} {'step cpu ms':>12} {'ratio':>7} {'cpu ratio':>10}")
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r.name:<8} {r.g_params:>12,} {r.d_params:>12,} {r.g_forward_ms:>10.1f} "
              f"{r.d_forward_ms:>10.1f} {r.step_ms:>10.1f} {r.step_cpu_ms:>12.1f} "
              f"{base.step_ms / r.step_ms:>6.2f}x {base.step_cpu_ms / r.step_cpu_ms:>9.2f}x")


if __name__ == "__main__":
    main()
