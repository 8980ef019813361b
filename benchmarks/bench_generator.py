"""Generator inference: the fast path (``fgfem.perf``) against the plain way, in one process.

The baseline is what the reference code does: the same generator, eager, fp32, NCHW,
under ``torch.no_grad``, one face per forward. Each optimised row runs the same faces
through ``FastGenerator`` and reports its throughput, its ratio to the baseline and how
far its outputs are from the baseline's (max |diff| and PSNR, images in [-1, 1]).
Rounds are interleaved (baseline, then every variant, repeated) so that load from other
processes hits all rows alike; the table shows medians over the rounds.

``wall img/s`` is what a user sees; ``cpu ms/img`` is process CPU time per image, which
other processes on a shared machine disturb much less.

    python benchmarks/bench_generator.py                          # paper + lite, batch 1 and 8, bf16 row
    python benchmarks/bench_generator.py --presets lite --rounds 5
    python benchmarks/bench_generator.py --presets lite --compile  # adds torch.compile (minutes to compile)
    python benchmarks/bench_generator.py --device cuda --faces 64   # GPU rows: fp32, bf16, batch 32, CUDA graphs

On CUDA the faces start on the GPU for every row (the copy is the same for all), each
timing ends with a ``torch.cuda.synchronize()``, and ``cpu ms/img`` is the host time that
launching the kernels costs.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from fgfem.devices import DeviceChoice, cpu_has_bf16, describe_cpu, resolve_device
from fgfem.nets import Generator, get_preset, use_cpu_rewrites
from fgfem.perf import FastGenerator, choose_plan

Run = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# Faces in the one timed batch of a slow row (bf16 emulated on a CPU without native bf16: 10-100x slower).
ONCE_FACES = 2


@dataclass
class Row:
    name: str
    run: Run
    batch: int
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    output: torch.Tensor | None = None
    once: bool = False  # timed in one round only (bf16 on a CPU without it is very slow)


def baseline_runner(generator: Generator) -> Run:
    """The reference code's way: eager fp32 under no_grad (batching is left to the caller)."""

    def run(x: torch.Tensor, aus: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return generator(x, aus)

    return run


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timing covers the computation and not only its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_all(row: Row, x: torch.Tensor, aus: torch.Tensor) -> torch.Tensor:
    """Push every face through ``row`` in chunks of ``row.batch``; record wall and CPU time."""
    synchronize(x.device)
    wall, cpu = time.perf_counter(), time.process_time()
    outputs = [row.run(x[i:i + row.batch], aus[i:i + row.batch]) for i in range(0, x.shape[0], row.batch)]
    synchronize(x.device)
    row.wall.append(time.perf_counter() - wall)
    row.cpu.append(time.process_time() - cpu)
    return torch.cat(outputs).float()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(4.0 / mse)  # peak-to-peak 2 for [-1, 1]


def cpu_rows(generator: Generator, choice: DeviceChoice, bf16: bool) -> list[Row]:
    """fp32 fast path; bf16 (every round where native, one small batch where emulated); the automatic plan."""
    fast = FastGenerator(generator, choose_plan(choice, compile=False, precision="fp32"))
    rows = [Row("fast path fp32, b1", fast, 1), Row("fast path fp32, b8", fast, 8)]
    if bf16:
        bf16_fast = FastGenerator(generator, choose_plan(choice, compile=False, precision="bf16"))
        if cpu_has_bf16():
            rows += [Row("fast path bf16, b1", bf16_fast, 1), Row("fast path bf16, b8", bf16_fast, 8)]
        else:
            rows.append(Row(f"fast path bf16, b{ONCE_FACES} (emulated)", bf16_fast, ONCE_FACES, once=True))
    auto = FastGenerator(generator, choose_plan(choice, compile=False, precision="auto"))
    rows.append(Row(f"automatic plan ({auto.plan.precision}), b8", auto, 8))
    return rows


def cuda_rows(generator: Generator, choice: DeviceChoice, bf16: bool) -> list[Row]:
    """The automatic CUDA plan (cuDNN autotune, channels_last, bf16 where native), its parts, and CUDA graphs."""
    fp32 = FastGenerator(generator, choose_plan(choice, compile=False, bf16=False))
    rows = [Row("fast fp32, b8", fp32, 8), Row("fast fp32, b32", fp32, 32)]
    if bf16:
        fast = FastGenerator(generator, choose_plan(choice, compile=False, bf16=True))
        rows += [Row("fast bf16, b1", fast, 1), Row("fast bf16, b8", fast, 8), Row("fast bf16, b32", fast, 32)]
    graph_plan = dataclasses.replace(choose_plan(choice, compile=False, bf16=bf16), cuda_graphs=True)
    rows.append(Row(f"CUDA graphs{' + bf16' if bf16 else ''}, b8", FastGenerator(generator, graph_plan), 8))
    return rows


def bench_preset(preset: str, size: int, faces: int, rounds: int, bf16: bool, compile: bool,
                 device: str = "cpu") -> list[str]:
    torch.manual_seed(0)
    generator = Generator(get_preset(preset, size)).eval()
    # Non-trivial norm affines, so that outputs are not all near tanh(0) and PSNR means something.
    for module in generator.modules():
        if isinstance(module, torch.nn.InstanceNorm2d):
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.3, 0.3)
    choice = resolve_device(device, bf16=False)
    x = (torch.rand(faces, 3, size, size) * 2 - 1).to(choice.device)
    aus = ((torch.rand(faces, generator.cfg.num_aus) - 0.5) * 0.4).to(choice.device)
    plain = copy.deepcopy(generator).to(choice.device)
    use_cpu_rewrites(plain, False)  # the reference's layer forms (per-AU maps in lite's residual heads)
    rows = [Row("baseline (no_grad, b1)", baseline_runner(plain), 1),
            Row("baseline loop, batch 8", baseline_runner(plain), 8)]
    rows += cuda_rows(generator, choice, bf16) if choice.device.type == "cuda" else cpu_rows(generator, choice, bf16)
    if compile:
        compiled = FastGenerator(generator, choose_plan(choice, compile=True, bf16=choice.device.type == "cuda"))
        started = time.perf_counter()
        compiled(x[:8], aus[:8])
        synchronize(choice.device)
        print(f"[{preset}] torch.compile: first call {time.perf_counter() - started:.0f} s, "
              f"compiled={compiled.compiled}")
        rows.append(Row("fast path + compile, b8", compiled, 8))
    failed: list[str] = []
    for row in list(rows):  # warm-up (oneDNN primitive caches, allocator); one-round rows are timed here
        try:
            row.output = run_all(row, x[:ONCE_FACES], aus[:ONCE_FACES]) if row.once else run_all(row, x, aus)
        except Exception as problem:  # noqa: BLE001 - a path that fails here is reported, the others still run
            rows.remove(row)
            failed.append(f"| {preset} {size}px | {row.name:<24} | failed: {type(problem).__name__}: "
                          f"{(str(problem).splitlines() or [''])[0][:120]} |||||||")
            continue
        if not row.once:
            row.wall.clear()
            row.cpu.clear()
    for _ in range(rounds):
        for row in rows:
            if not row.once:
                row.output = run_all(row, x, aus)
    reference = rows[0].output
    base_rate = faces / statistics.median(rows[0].wall)
    lines = []
    for row in rows:
        count = ONCE_FACES if row.once else faces
        rate = count / statistics.median(row.wall)
        cpu_ms = 1000 * statistics.median(row.cpu) / count
        spread = 100 * (max(row.wall) - min(row.wall)) / statistics.median(row.wall)
        diff = (row.output - reference[:count]).abs().max().item()
        lines.append(f"| {preset} {size}px | {row.name:<28} | {rate:7.3f} | {rate / base_rate:5.2f}x | "
                     f"{cpu_ms:8.0f} | {spread:4.0f}% | {diff:.1e} | {psnr(row.output, reference[:count]):6.1f} |")
    return lines + failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["paper", "lite"])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--faces", type=int, default=8, help="faces per round (a multiple of 8)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--no-bf16", dest="bf16", action="store_false", help="skip the bf16 row")
    parser.add_argument("--compile", action="store_true", help="add a torch.compile row (slow to compile)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (the baseline runs there too)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    where = (torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda")
             else f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {where}; "
          f"{args.faces} faces x {args.rounds} rounds, load average {os.getloadavg()[0]:.1f}")
    print(f"CPU: {describe_cpu()}")
    print("| model | path | wall img/s | vs base | cpu ms/img | spread | max abs diff | PSNR dB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for preset in args.presets:
        for line in bench_preset(preset, args.size, args.faces, args.rounds, args.bf16, args.compile, args.device):
            print(line, flush=True)


if __name__ == "__main__":
    main()
