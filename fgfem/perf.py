"""The generator's fast inference path: pick the fastest *correct* settings, then run them.

Two halves, kept apart so that the decision can be tested without the hardware:

- ``select_plan`` is a pure function of (device, ``Capabilities``, flags) -> ``InferencePlan``;
  ``choose_plan`` probes the real machine and calls it.
- ``FastGenerator`` applies a plan to a loaded ``Generator`` (conversions once, then
  ``torch.inference_mode``, autocast, optional ``torch.compile`` and CUDA graphs).

Why the plan is what it is (the figures, per machine, are in ``benchmarks/README.md``):

- Precision (``--precision auto|fp32|bf16``). bf16 autocast pays only where the hardware
  runs it: on CPUs with AVX512-BF16 or AMX and on CUDA it measured ~2x fp32 for the
  generator, on CPUs without them it is emulated and 10-100x slower. It also rounds: so
  ``auto`` takes bf16 only where it is native *and* the loaded model, run on a fixed probe,
  keeps >= ``BF16_MIN_PSNR`` dB PSNR against its own fp32 output (``check_bf16``). The check
  runs once per model file, torch version and device, and is cached beside the compile
  cache (``precision_cache_dir``), so later runs pay only for hashing the weights.
- CPU, fp32: oneDNN already runs every convolution near the cores' speed; channels_last
  measured slower (the InstanceNorms and concatenations pay for it), as did rewrites that
  are exact in real arithmetic. Batching helps ``lite`` (layers too small for one face).
- ``torch.compile`` (inductor with weight freezing) gained little after a compile of
  minutes: opt-in (``FGFEM_COMPILE=1`` or ``compile=True``).
- CUDA: one face per forward is launch-bound, so the plan is cuDNN autotuning,
  channels_last, bf16 where native and checked, and CUDA graphs for batches of 8
  (``FGFEM_CUDA_GRAPHS=0`` turns them off). MPS: plain fp32.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import importlib.util
import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fgfem.devices import DeviceChoice, cpu_has_bf16
from fgfem.errors import FgfemError
from fgfem.nets.generator import check_generator_inputs

COMPILE_ENV = "FGFEM_COMPILE"
CUDA_GRAPHS_ENV = "FGFEM_CUDA_GRAPHS"
# Where inductor keeps its compiled kernels, unless TORCHINDUCTOR_CACHE_DIR says otherwise:
# a second run then reuses them instead of compiling for minutes again.
COMPILE_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"
# Where the bf16 checks are kept (a folder; "off" neither reads nor writes them).
PRECISION_CACHE_ENV = "FGFEM_PRECISION_CACHE"
# Batch that CUDA graphs are captured for; smaller batches are padded up to it.
GRAPH_BATCH = 8

PRECISIONS = ("auto", "fp32", "bf16")
# bf16 output of the model against its fp32 output on the probe, images in [-1, 1] (peak-to-peak 2).
# 40 dB is a mean error of ~1/100 of the range, ~1.3 grey levels of 255: below what the eye sees.
BF16_MIN_PSNR = 40.0
# Bump when the probe or the measurement changes: older cached checks are then not reused.
PROBE_VERSION = 1
PROBE_FACES = 2
PROBE_SEED = 20_200_821


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
    """How ``FastGenerator`` runs the generator; ``reason`` says why, in one line.

    ``check_precision``: bf16 was chosen automatically, so ``FastGenerator`` keeps it only if
    the model passes ``check_bf16`` (and falls back to fp32 otherwise). The first ``"; "``
    part of ``reason`` is always the precision and why.
    """

    device: torch.device
    channels_last: bool
    autocast: torch.dtype | None
    compile: bool
    cuda_graphs: bool
    reason: str
    cudnn_benchmark: bool = False
    graph_batch: int = GRAPH_BATCH
    check_precision: bool = False

    @property
    def precision(self) -> str:
        """``bf16`` or ``fp32``: what the generator runs in (once settled by ``FastGenerator``)."""
        return "bf16" if self.autocast == torch.bfloat16 else "fp32"


def _env_flag(name: str) -> bool | None:
    value = os.environ.get(name, "").strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    return None


def check_precision_name(precision: str) -> str:
    """``auto``, ``fp32`` or ``bf16`` (any case), or a one-line error naming the choices."""
    value = (precision or "auto").strip().lower()
    if value not in PRECISIONS:
        raise FgfemError(f"--precision {precision!r}: choose auto (bf16 where the hardware runs it natively and "
                         f"the model keeps >= {BF16_MIN_PSNR:g} dB against fp32), fp32 or bf16")
    return value


def probe_capabilities(device: torch.device) -> Capabilities:
    """Look at the real machine (cheap: nothing is compiled or allocated)."""
    if device.type == "cuda":
        return Capabilities(native_bf16=bool(torch.cuda.is_bf16_supported()),
                            compiler=importlib.util.find_spec("triton") is not None)
    if device.type == "cpu":
        has_cc = any(shutil.which(cc) for cc in ("c++", "g++", "clang++"))
        return Capabilities(native_bf16=cpu_has_bf16(), compiler=has_cc)
    return Capabilities(native_bf16=False, compiler=False)


def _precision_note(use_bf16: bool, asked: bool, native: bool, cpu: bool) -> str:
    """The first part of a plan's reason: the precision, and why."""
    if not use_bf16:
        if asked:
            return "fp32 (asked for)"
        return "fp32 (no native bf16 here: bf16 autocast would be emulated and slower)" if cpu else "fp32"
    if not asked:
        hardware = "AVX512-BF16/AMX" if cpu else "CUDA"
        return (f"bf16 autocast (native {hardware}) if the model keeps >= {BF16_MIN_PSNR:g} dB PSNR "
                "against fp32, else fp32")
    return "bf16 autocast (asked for" + ("" if native else ", slower without native bf16") + ")"


def select_plan(
    device: torch.device,
    caps: Capabilities,
    *,
    compile: bool = False,
    bf16: bool | None = None,
    cuda_graphs: bool | None = None,
) -> InferencePlan:
    """The decision itself: a pure function of device type, capabilities and flags.

    ``bf16=None`` ("auto") takes bf16 where it is native, pending the model's PSNR check
    (``check_precision``); ``True``/``False`` are honoured as asked, unchecked.
    ``cuda_graphs=None`` means CUDA graphs on CUDA only, not on top of ``torch.compile``
    (measured no faster than them and not tested inside a captured graph).
    """
    asked = bf16 is not None
    use_bf16 = caps.native_bf16 if bf16 is None else bool(bf16)
    autocast = torch.bfloat16 if use_bf16 else None
    check = use_bf16 and not asked
    notes: list[str] = []
    if device.type == "cuda":
        notes += [_precision_note(use_bf16, asked, caps.native_bf16, cpu=False), "cuDNN autotune, channels_last"]
        use_compile = compile and caps.compiler
        if compile and not caps.compiler:
            notes.append("torch.compile asked for but triton is missing: eager")
        use_graphs = (not use_compile) if cuda_graphs is None else cuda_graphs
        if use_graphs:
            notes.append(f"CUDA graphs for batches of {GRAPH_BATCH}")
        return InferencePlan(device=device, channels_last=True, autocast=autocast, compile=use_compile,
                             cuda_graphs=use_graphs, cudnn_benchmark=True, reason=_join(notes, use_compile),
                             check_precision=check)
    if device.type == "cpu":
        notes += [_precision_note(use_bf16, asked, caps.native_bf16, cpu=True),
                  "NCHW oneDNN, inference_mode (channels_last measured slower)",
                  "CPU layer rewrites: per-face AU kernels, tiny maps as GEMM"]
        use_compile = compile and caps.compiler
        if compile and not caps.compiler:
            notes.append("torch.compile asked for but no C++ compiler: eager")
        return InferencePlan(device=device, channels_last=False, autocast=autocast, compile=use_compile,
                             cuda_graphs=False, reason=_join(notes, use_compile), check_precision=check)
    notes.append(f"fp32 ({device.type}: plain fp32, inference_mode)")
    if bf16:
        notes.append("bf16 ignored")
    return InferencePlan(device=device, channels_last=False, autocast=None, compile=False, cuda_graphs=False,
                         reason=_join(notes, False))


def _join(notes: list[str], compiled: bool) -> str:
    notes.append("torch.compile on" if compiled else f"torch.compile off ({COMPILE_ENV}=1 to try)")
    return "; ".join(notes)


def choose_plan(
    choice: DeviceChoice, *, compile: bool | None = None, bf16: bool | None = None, precision: str = "auto",
) -> InferencePlan:
    """The plan for ``choice`` on this machine.

    ``precision`` (``--precision``): ``fp32`` and ``bf16`` are honoured as asked; ``auto`` is
    bf16 where native, kept only if the model passes its check. ``bf16=True/False`` is the
    older spelling of ``bf16``/``fp32`` and wins over ``auto``. A CPU ``choice`` that already
    carries bf16 autocast asked for it; on CUDA ``resolve_device`` sets it wherever bf16 is
    native, which is what ``auto`` does anyway (checked). ``compile=None`` reads
    ``FGFEM_COMPILE``. CUDA graphs are on by default on CUDA; ``FGFEM_CUDA_GRAPHS=0`` switches
    them off.
    """
    precision = check_precision_name(precision)
    if compile is None:
        compile = bool(_env_flag(COMPILE_ENV))
    if precision != "auto":
        bf16 = precision == "bf16"
    elif bf16 is None and choice.autocast_dtype is not None and choice.device.type != "cuda":
        bf16 = True
    graphs = _env_flag(CUDA_GRAPHS_ENV) if choice.device.type == "cuda" else False
    return select_plan(choice.device, probe_capabilities(choice.device), compile=compile, bf16=bf16,
                       cuda_graphs=graphs)


def describe_fast_path(choice: DeviceChoice, precision: str = "auto") -> str:
    """One line for ``fgfem info``: the inference path that ``choice`` gets here (before any model check)."""
    return choose_plan(choice, precision=precision).reason


# ---------------------------------------------------------------------------------------------- bf16 check


@dataclass(frozen=True)
class PrecisionCheck:
    """bf16 against fp32 for one model on the fixed probe: ``psnr`` in dB, ``cached`` if read back."""

    psnr: float
    cached: bool = False

    @property
    def passed(self) -> bool:
        return self.psnr >= BF16_MIN_PSNR  # False for NaN too

    def describe(self) -> str:
        """Why the plan settled as it did, in words (no "; ": it is one part of a plan's reason)."""
        where = "cached check" if self.cached else "checked now"
        if self.passed:
            return (f"native, and this model keeps {self.psnr:.1f} dB >= {BF16_MIN_PSNR:g} dB PSNR against fp32 "
                    f"on the probe ({where})")
        return (f"under bf16 this model keeps only {self.psnr:.1f} dB < {BF16_MIN_PSNR:g} dB PSNR against fp32 "
                f"on the probe ({where})")


def fgfem_cache_dir() -> Path:
    """fgfem's cache folder: ``$XDG_CACHE_HOME/fgfem``, else ~/.cache/fgfem."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fgfem"


def precision_cache_dir() -> Path | None:
    """Where bf16 checks are kept (``FGFEM_PRECISION_CACHE``, else beside the compile cache); None if off."""
    configured = os.environ.get(PRECISION_CACHE_ENV, "").strip()
    if configured.lower() in {"0", "off", "no", "false"}:
        return None
    return Path(configured) if configured else fgfem_cache_dir() / "precision"


def psnr_db(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR of images in [-1, 1] (peak-to-peak 2); -inf where either holds NaN or infinity."""
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    if not math.isfinite(mse):
        return -math.inf
    return math.inf if mse == 0 else 10 * math.log10(4.0 / mse)


def probe_inputs(image_size: int, num_aus: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed probe: smooth seeded images with fine noise and moderate relative AUs (+-1 of 0-5).

    Smooth areas and edges, like faces, at the model's own size; seeded on a private generator
    so that every run, machine and test sees the same probe and the global seed is untouched.
    """
    rng = torch.Generator().manual_seed(PROBE_SEED)
    coarse = torch.rand(PROBE_FACES, 3, max(1, image_size // 8), max(1, image_size // 8), generator=rng)
    x = torch.nn.functional.interpolate(coarse * 1.6 - 0.8, size=(image_size, image_size), mode="bilinear",
                                        align_corners=False)
    x = (x + 0.05 * torch.randn(x.shape, generator=rng)).clamp(-1, 1)
    rel = (torch.rand(PROBE_FACES, num_aus, generator=rng) - 0.5) * 0.4
    return x, rel


def measure_bf16_psnr(module: nn.Module, device: torch.device, *, channels_last: bool = False) -> float:
    """PSNR (dB) of ``module`` under bf16 autocast against its own fp32 output, on the probe."""
    cfg = module.cfg
    x, rel = probe_inputs(int(cfg.image_size), int(cfg.num_aus))
    x = x.to(device).contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    rel = rel.to(device)
    with torch.inference_mode():
        reference = module(x, rel).float()
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            low = module(x, rel).float()
    return psnr_db(low, reference)


def _device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda {torch.cuda.get_device_name(device)}"
    if device.type == "cpu":
        return f"cpu {torch.backends.cpu.get_cpu_capability()}"
    return device.type


def model_fingerprint(module: nn.Module) -> str:
    """SHA-256 of the model's config and every tensor's bytes: one per weights file, whatever its name."""
    digest = hashlib.sha256(repr(getattr(module, "cfg", type(module).__name__)).encode())
    for name, tensor in module.state_dict().items():
        digest.update(f"{name} {tuple(tensor.shape)} {tensor.dtype}".encode())
        digest.update(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def precision_cache_key(module: nn.Module, device: torch.device) -> str:
    """The model, the torch build and the device kind: bf16 rounding depends on all three."""
    text = f"{model_fingerprint(module)} torch {torch.__version__} {_device_label(device)} probe {PROBE_VERSION}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _read_cached_psnr(folder: Path | None, key: str) -> float | None:
    if folder is None:
        return None
    try:
        value = json.loads((folder / f"{key}.json").read_text(encoding="utf-8"))["psnr_db"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or damaged: measure again
    return float(value) if isinstance(value, int | float) else None


def _write_cached_psnr(folder: Path | None, key: str, psnr: float, device: torch.device, seconds: float) -> None:
    if folder is None:
        return
    from fgfem.atomic import write_text

    record = {"psnr_db": psnr, "min_psnr_db": BF16_MIN_PSNR, "torch": torch.__version__,
              "device": _device_label(device), "probe_version": PROBE_VERSION, "seconds": round(seconds, 3)}
    with contextlib.suppress(OSError):  # a read-only home must not stop an edit
        write_text(folder / f"{key}.json", json.dumps(record) + "\n")


def check_bf16(module: nn.Module, device: torch.device, *, channels_last: bool = False,
               cache_dir: Path | None | str = "default") -> PrecisionCheck:
    """The bf16 check for ``module`` on ``device``: read from the cache, else measured once and stored.

    ``cache_dir="default"`` is ``precision_cache_dir()``; ``None`` measures without the cache.
    """
    folder = precision_cache_dir() if cache_dir == "default" else (Path(cache_dir) if cache_dir else None)
    key = precision_cache_key(module, device)
    cached = _read_cached_psnr(folder, key)
    if cached is not None:
        return PrecisionCheck(psnr=cached, cached=True)
    started = time.perf_counter()
    value = measure_bf16_psnr(module, device, channels_last=channels_last)
    _write_cached_psnr(folder, key, value, device, time.perf_counter() - started)
    return PrecisionCheck(psnr=value, cached=False)


def settle_precision(plan: InferencePlan, check: PrecisionCheck) -> InferencePlan:
    """The plan once the model's check is known: bf16 kept if it passed, fp32 otherwise; reason says which."""
    rest = plan.reason.split("; ", 1)[1:]
    if check.passed:
        note = f"bf16 autocast: {check.describe()}"
        return dataclasses.replace(plan, check_precision=False, reason="; ".join([note, *rest]))
    note = f"fp32: {check.describe()}"
    return dataclasses.replace(plan, autocast=None, check_precision=False, reason="; ".join([note, *rest]))


def compile_cache_dir() -> Path:
    """Where compiled kernels are kept (``TORCHINDUCTOR_CACHE_DIR``, else ~/.cache/fgfem/inductor)."""
    configured = os.environ.get(COMPILE_CACHE_ENV)
    if configured:
        return Path(configured)
    return fgfem_cache_dir() / "inductor"


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
    (tests use it to exercise the fallback). A plan with ``check_precision`` is settled here,
    on the loaded model (``check_bf16``): ``self.plan`` is then the plan that really runs and
    ``self.precision_check`` the check behind it.
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
        self.precision_check: PrecisionCheck | None = None
        if plan.check_precision:
            self.precision_check = check_bf16(module, plan.device, channels_last=plan.channels_last)
            self.plan = plan = settle_precision(plan, self.precision_check)
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
