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


def cpu_has_bf16() -> bool:
    """True where the CPU advertises native bf16 (AVX512-BF16 or AMX): bf16 autocast pays there."""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = handle.read()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    return False


def thread_count() -> int:
    return torch.get_num_threads()


def describe_cpu_threads() -> str:
    return f"{torch.get_num_threads()} torch threads / {os.cpu_count()} cores"
