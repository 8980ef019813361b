"""The generator's fast inference path: pick the fastest *correct* settings, then run them.

Two halves, kept apart so that the decision can be tested without the hardware:

- ``select_plan`` is a pure function of (device, ``Capabilities``, flags) -> ``InferencePlan``;
  ``choose_plan`` probes the real machine and calls it.
- ``FastGenerator`` applies a plan to a loaded ``Generator`` (conversions once, then
  ``torch.inference_mode``, autocast, optional ``torch.compile`` and CUDA graphs).

What was measured (``benchmarks/bench_generator.py``, 2-core AMD EPYC, AVX2, no
AVX512/AMX, torch 2.14 CPU, CPU time per image with 1 thread so that the neighbours'
load does not decide; ``paper`` preset, 128 px):

- oneDNN already runs every convolution, transposed ones included, at 45-80 GFLOP/s per
  core (the generator is ~45 GFLOP per image), so there is little left to win per layer;
  the non-oneDNN paths are 1.1-8x slower.
- channels_last on CPU: 1.2-1.3x *slower* (the InstanceNorms and concatenations pay for
  it), only the final 64->3 7x7 convolution gains. Off.
- bf16 autocast on this CPU (no native bf16): not exact, and slower (below). Off unless
  asked for; CPUs with AVX512-BF16/AMX are unmeasured, so it stays off there too.
- batching: 8 faces per forward cost 0-20 % less CPU time per face than one at a time for
  ``paper`` and ~3-4x less for ``lite`` (its layers are too small for one face);
  ``fgfem edit``/``render`` already batch, ``FastGenerator`` keeps whatever batch it gets.
- bf16 autocast here: 10-100x slower, PSNR 44-47 dB against fp32.
- ``torch.compile`` (inductor with weight freezing): ~1.15x on ``lite`` after a compile of
  minutes on 2 cores, so it is opt-in (``FGFEM_COMPILE=1`` or ``compile=True``).
- rewrites that are exact in real arithmetic (transposed 4x4 convs as four 2x2 sub-pixel
  convs; dropping the constant AU channels from convolutions) measured no faster, so
  the module is used as it is.

CUDA, measured on an H200 (``bench_generator.py --device cuda``, 64 faces, torch 2.11):
one face per forward runs at ~170-210 img/s whatever the precision, because launching
the kernels costs more than running them; batching 8 faces gives ~7-8x, and replaying
the batch as a CUDA graph another 1.6x (``paper``) to 3.6x (``lite``) on top of eager
bf16. So the automatic CUDA plan is cuDNN autotuning, channels_last, bf16 autocast where
native (PSNR 44 dB ``paper`` / 65 dB ``lite`` against fp32; it wins at batch 32, ~1.4x
for ``paper``) and CUDA graphs for batches of 8 (``FGFEM_CUDA_GRAPHS=0`` turns them off).
``torch.compile`` measured the same as the graphs (``paper``, batch 8: 2,300 vs 2,256
img/s) after a 17 s first call, so it stays opt-in (``FGFEM_COMPILE=1``). MPS: plain fp32.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import os
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fgfem.devices import DeviceChoice, cpu_has_bf16
from fgfem.nets.generator import check_generator_inputs

COMPILE_ENV = "FGFEM_COMPILE"
CUDA_GRAPHS_ENV = "FGFEM_CUDA_GRAPHS"
# Where inductor keeps its compiled kernels, unless TORCHINDUCTOR_CACHE_DIR says otherwise:
# a second run then reuses them instead of compiling for minutes again.
COMPILE_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"
# Batch that CUDA graphs are captured for; smaller batches are padded up to it.
GRAPH_BATCH = 8


@dataclass(frozen=True)
class Capabilities:
    """What the hardware and this torch build can do, as far as the plan cares.

    ``native_bf16``: bf16 runs in hardware (CUDA ``is_bf16_supported``; CPU AVX512-BF16/AMX).
    ``compiler``: ``torch.compile`` has a backend here (a C++ compiler for CPU, triton for CUDA).
    """

    native_bf16: bool
    compiler: bool


@dataclass(frozen=True)
class InferencePlan:
    """How ``FastGenerator`` runs the generator; ``reason`` says why, in one line."""

    device: torch.device
    channels_last: bool
    autocast: torch.dtype | None
    compile: bool
    cuda_graphs: bool
    reason: str
    cudnn_benchmark: bool = False
    graph_batch: int = GRAPH_BATCH


def _env_flag(name: str) -> bool | None:
    value = os.environ.get(name, "").strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    return None


def probe_capabilities(device: torch.device) -> Capabilities:
    """Look at the real machine (cheap: nothing is compiled or allocated)."""
    if device.type == "cuda":
        return Capabilities(native_bf16=bool(torch.cuda.is_bf16_supported()),
                            compiler=importlib.util.find_spec("triton") is not None)
    if device.type == "cpu":
        has_cc = any(shutil.which(cc) for cc in ("c++", "g++", "clang++"))
        return Capabilities(native_bf16=cpu_has_bf16(), compiler=has_cc)
    return Capabilities(native_bf16=False, compiler=False)


def select_plan(
    device: torch.device,
    caps: Capabilities,
    *,
    compile: bool = False,
    bf16: bool | None = None,
    cuda_graphs: bool | None = None,
) -> InferencePlan:
    """The decision itself: a pure function of device type, capabilities and flags.

    ``bf16=None`` and ``cuda_graphs=None`` mean "where it is a measured win": native bf16
    and CUDA graphs on CUDA only (graphs not on top of ``torch.compile``, which was
    measured no faster than them and is not tested inside a captured graph).
    """
    notes: list[str] = []
    if device.type == "cuda":
        use_bf16 = caps.native_bf16 if bf16 is None else bf16
        notes.append("cuDNN autotune, channels_last, " + ("bf16 autocast" if use_bf16 else "fp32"))
        use_compile = compile and caps.compiler
        if compile and not caps.compiler:
            notes.append("torch.compile asked for but triton is missing: eager")
        use_graphs = (not use_compile) if cuda_graphs is None else cuda_graphs
        if use_graphs:
            notes.append(f"CUDA graphs for batches of {GRAPH_BATCH}")
        return InferencePlan(device=device, channels_last=True, autocast=torch.bfloat16 if use_bf16 else None,
                             compile=use_compile, cuda_graphs=use_graphs, cudnn_benchmark=True,
                             reason=_join(notes, use_compile))
    if device.type == "cpu":
        use_bf16 = bool(bf16)
        if use_bf16:
            notes.append("bf16 autocast (asked for" + ("" if caps.native_bf16 else "; slower without native bf16")
                         + ")")
        else:
            notes.append("fp32 NCHW oneDNN, inference_mode (bf16 and channels_last measured slower)")
        notes.append("CPU layer rewrites: per-face AU kernels, tiny maps as GEMM")
        use_compile = compile and caps.compiler
        if compile and not caps.compiler:
            notes.append("torch.compile asked for but no C++ compiler: eager")
        return InferencePlan(device=device, channels_last=False, autocast=torch.bfloat16 if use_bf16 else None,
                             compile=use_compile, cuda_graphs=False, reason=_join(notes, use_compile))
    notes.append(f"{device.type}: plain fp32, inference_mode")
    if bf16:
        notes.append("bf16 ignored")
    return InferencePlan(device=device, channels_last=False, autocast=None, compile=False, cuda_graphs=False,
                         reason=_join(notes, False))


def _join(notes: list[str], compiled: bool) -> str:
    notes.append("torch.compile on" if compiled else f"torch.compile off ({COMPILE_ENV}=1 to try)")
    return "; ".join(notes)


def choose_plan(choice: DeviceChoice, *, compile: bool | None = None, bf16: bool | None = None) -> InferencePlan:
    """The plan for ``choice`` on this machine.

    ``compile=None`` reads ``FGFEM_COMPILE``; ``bf16=None`` follows ``choice.autocast_dtype``
    (which ``resolve_device`` sets only where bf16 is native on CUDA, or when asked).
    CUDA graphs are on by default on CUDA; ``FGFEM_CUDA_GRAPHS=0`` switches them off.
    """
    if compile is None:
        compile = bool(_env_flag(COMPILE_ENV))
    if bf16 is None and choice.autocast_dtype is not None:
        bf16 = True
    graphs = _env_flag(CUDA_GRAPHS_ENV) if choice.device.type == "cuda" else False
    return select_plan(choice.device, probe_capabilities(choice.device), compile=compile, bf16=bf16,
                       cuda_graphs=graphs)


def describe_fast_path(choice: DeviceChoice) -> str:
    """One line for ``fgfem info``: the inference path that ``choice`` gets here."""
    return choose_plan(choice).reason


def compile_cache_dir() -> Path:
    """Where compiled kernels are kept (``TORCHINDUCTOR_CACHE_DIR``, else ~/.cache/fgfem/inductor)."""
    configured = os.environ.get(COMPILE_CACHE_ENV)
    if configured:
        return Path(configured)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "fgfem" / "inductor"


def _default_compile(module: nn.Module) -> Callable[..., torch.Tensor]:
    os.environ.setdefault(COMPILE_CACHE_ENV, str(compile_cache_dir()))
    # Freezing folds the (constant) weights into the graph, so oneDNN can prepack them.
    return torch.compile(module, dynamic=False, options={"freezing": True})


class _GraphRunner:
    """One captured CUDA graph per input size, fed through static buffers of ``batch`` images."""

    def __init__(self, run: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], batch: int,
                 memory_format: torch.memory_format) -> None:
        self.run = run
        self.batch = batch
        self.memory_format = memory_format
        self.graphs: dict[tuple[int, ...], tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def _capture(self, x: torch.Tensor, aus: torch.Tensor) -> tuple:
        static_x = torch.zeros((self.batch, *x.shape[1:]), device=x.device, dtype=x.dtype).contiguous(
            memory_format=self.memory_format)
        static_a = torch.zeros((self.batch, aus.shape[1]), device=aus.device, dtype=aus.dtype)
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up outside the graph: cuDNN autotuning, allocator pools
                self.run(static_x, static_a)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_y = self.run(static_x, static_a)
        return graph, static_x, static_a, static_y

    def __call__(self, x: torch.Tensor, aus: torch.Tensor) -> torch.Tensor:
        key = tuple(x.shape[1:])
        if key not in self.graphs:
            self.graphs[key] = self._capture(x, aus)
        graph, static_x, static_a, static_y = self.graphs[key]
        outputs = []
        for start in range(0, x.shape[0], self.batch):
            chunk = x[start:start + self.batch]
            count = chunk.shape[0]
            static_x[:count].copy_(chunk)
            static_a[:count].copy_(aus[start:start + self.batch])
            if count < self.batch:  # pad: stale rows would be harmless, zeros keep it deterministic
                static_x[count:].zero_()
                static_a[count:].zero_()
            graph.replay()
            outputs.append(static_y[:count].clone())
        return torch.cat(outputs)


class FastGenerator:
    """A loaded ``Generator`` run the way ``plan`` says: ``fg(x, rel_aus) -> y``.

    ``x`` is B x 3 x H x W in [-1, 1] and ``rel_aus`` B x 17 (already / ``AU_SCALE``), on any
    device; ``y`` is fp32, NCHW, in [-1, 1], on ``plan.device``, and an ordinary tensor
    (not an inference tensor), so callers may modify it in place.

    The generator passed in is never modified: where the plan needs another device or
    memory format, a converted copy is kept. ``compile_fn`` replaces ``torch.compile``
    (tests use it to exercise the fallback).
    """

    def __init__(
        self,
        generator: nn.Module,
        plan: InferencePlan,
        *,
        compile_fn: Callable[[nn.Module], Callable[..., torch.Tensor]] | None = None,
    ) -> None:
        self.plan = plan
        self.num_aus = int(generator.cfg.num_aus)
        module = generator
        needs_move = any(p.device != plan.device for p in generator.parameters())
        if needs_move or plan.channels_last:
            module = copy.deepcopy(generator).to(plan.device)
            if plan.channels_last:
                module = module.to(memory_format=torch.channels_last)
        self.module = module
        if plan.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
        self._compiled: Callable[..., torch.Tensor] | None = None
        if plan.compile:
            try:
                self._compiled = (compile_fn or _default_compile)(module)
            except Exception as problem:  # noqa: BLE001 - any failure means "run eager"
                self._compile_failed(problem)
        self._memory_format = torch.channels_last if plan.channels_last else torch.contiguous_format
        self._graphs = (_GraphRunner(self._run, plan.graph_batch, self._memory_format)
                        if plan.cuda_graphs else None)

    def _compile_failed(self, problem: BaseException) -> None:
        first_line = (str(problem).splitlines() or [""])[0][:200]
        warnings.warn(f"torch.compile failed ({type(problem).__name__}: {first_line}); running the generator eagerly",
                      RuntimeWarning, stacklevel=3)
        self._compiled = None

    @property
    def compiled(self) -> bool:
        """True while the compiled module is in use (False after a fallback)."""
        return self._compiled is not None

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        if self.plan.autocast is None:
            return contextlib.nullcontext()
        # No weight-cast cache inside CUDA graphs: the cache would outlive the capture.
        return torch.autocast(device_type=self.plan.device.type, dtype=self.plan.autocast,
                              cache_enabled=not self.plan.cuda_graphs)

    def _run(self, x: torch.Tensor, aus: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            if self._compiled is not None:
                try:
                    return self._compiled(x, aus)
                except Exception as problem:  # noqa: BLE001 - compile errors surface at the first call
                    self._compile_failed(problem)
            return self.module(x, aus)

    def __call__(self, x: torch.Tensor, rel_aus: torch.Tensor) -> torch.Tensor:
        check_generator_inputs(x, rel_aus, self.num_aus)
        device = self.plan.device
        with torch.inference_mode():
            x = x.to(device=device, dtype=torch.float32, non_blocking=True).contiguous(
                memory_format=self._memory_format)
            rel_aus = rel_aus.to(device=device, dtype=torch.float32, non_blocking=True)
            y = self._graphs(x, rel_aus) if self._graphs is not None else self._run(x, rel_aus)
            y = y.to(dtype=torch.float32, memory_format=torch.contiguous_format)
        # Outside inference_mode a clone is an ordinary tensor (in-place edits allowed downstream).
        return y.clone()
