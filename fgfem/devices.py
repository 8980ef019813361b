"""Device selection: one place decides where tensors live and which fast paths are on.

``auto`` prefers CUDA, then Apple MPS, then CPU. On CUDA we switch on TF32 matmuls and
cuDNN autotuning, which are numerically safe for a GAN generator and measurably faster.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from fgfem.errors import FgfemError


@dataclass(frozen=True)
class DeviceChoice:
    device: torch.device
    autocast_dtype: torch.dtype | None  # bf16 where the hardware runs it natively

    @property
    def kind(self) -> str:
        return self.device.type

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        """Autocast context for inference/training, a no-op where it would not help."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(spec: str = "auto", *, bf16: bool | None = None) -> DeviceChoice:
    """Turn ``auto|cpu|cuda|cuda:N|mps`` into a ready device, or a one-line error.

    ``bf16=None`` enables bf16 autocast only on CUDA with native bf16 support;
    pass ``True``/``False`` to force it.
    """
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            spec = "cuda"
        elif mps_available():
            spec = "mps"
        else:
            spec = "cpu"
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise FgfemError(f"unknown device {spec!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise FgfemError("--device cuda was asked for, but this torch build sees no CUDA GPU")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise FgfemError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    elif device.type == "mps":
        if not mps_available():
            raise FgfemError("--device mps was asked for, but MPS is not available on this machine")
    elif device.type != "cpu":
        raise FgfemError(f"unsupported device {spec!r}; use auto, cpu, cuda, cuda:N or mps")
    if bf16 is None:
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return DeviceChoice(device=device, autocast_dtype=torch.bfloat16 if bf16 else None)


# The CPU flags that decide the plan or explain a benchmark figure, in the order printed.
PERF_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16",
              "amx_int8", "asimd", "sve", "bf16")


def _cpuinfo() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as handle:
        return handle.read()
    return ""


def cpu_flags() -> set[str]:
    """Every flag of the first CPU in /proc/cpuinfo (x86 ``flags``, Arm ``Features``); empty elsewhere."""
    for line in _cpuinfo().splitlines():
        key, _, value = line.partition(":")
        if key.strip() in {"flags", "Features"}:
            return set(value.split())
    return set()


def cpu_has_bf16(flags: set[str] | None = None) -> bool:
    """True where the CPU advertises native bf16 (AVX512-BF16 or AMX): bf16 autocast pays there."""
    flags = cpu_flags() if flags is None else flags
    return "avx512_bf16" in flags or "amx_bf16" in flags


def describe_cpu() -> str:
    """CPU model, core count and the flags that matter for speed, in one line (benchmarks print it)."""
    import platform

    model = next((line.partition(":")[2].strip() for line in _cpuinfo().splitlines()
                  if line.startswith("model name")), "") or platform.processor() or platform.machine()
    flags = cpu_flags()
    shown = " ".join(flag for flag in PERF_FLAGS if flag in flags) or "none of " + "/".join(PERF_FLAGS[:6])
    return (f"{model}, {os.cpu_count()} cores, torch CPU capability {torch.backends.cpu.get_cpu_capability()}, "
            f"flags: {shown}")


def thread_count() -> int:
    return torch.get_num_threads()


def describe_cpu_threads() -> str:
    return f"{torch.get_num_threads()} torch threads / {os.cpu_count()} cores"
