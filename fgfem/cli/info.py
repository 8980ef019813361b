"""`fgfem info`: what this installation can do, in one table, in well under 3 s."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import platform
from typing import TYPE_CHECKING

from rich.table import Table

from fgfem import __version__
from fgfem.cli.app import app, console
from fgfem.cli.options import Command, Shared, shared_options

if TYPE_CHECKING:
    from fgfem.devices import DeviceChoice
    from fgfem.perf import InferencePlan


def _package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _face_backend_rows() -> list[tuple[str, str]]:
    if importlib.util.find_spec("fgfem.faces") is None:
        return [("face backends", "not built in this version")]
    from fgfem.faces import backend_status

    return [(f"face backend {s.name}", ("ok: " if s.available else "missing: ") + s.detail) for s in backend_status()]


def _weights_rows() -> list[tuple[str, str]]:
    from fgfem.paths import find_default_weights

    path = find_default_weights()
    if path is None:
        return [("default weights", "none found (pass --weights or set FGFEM_WEIGHTS)")]
    detail = str(path)
    if importlib.util.find_spec("fgfem.weights") is not None:
        try:
            from fgfem.weights import describe_weights

            detail = f"{path} ({describe_weights(path)})"
        except Exception as problem:  # a damaged file must not break `info`
            detail = f"{path} (unreadable: {problem})"
    return [("default weights", detail)]


def _plan_rows(choice: DeviceChoice, precision: str) -> list[tuple[str, str]]:
    """The precision the default model runs in here and why, then the rest of the inference path.

    Where ``auto`` picks bf16 (native bf16 hardware), the answer depends on the model: the
    default weights are loaded and checked (or the cached check read), as an edit would.
    """
    from fgfem.perf import choose_plan

    plan = choose_plan(choice, precision=precision)
    if plan.check_precision:
        plan = _settle_for_default_weights(plan)
    which, _, path = plan.reason.partition("; ")
    return [("precision", which), ("inference path", path)]


def _settle_for_default_weights(plan: InferencePlan) -> InferencePlan:
    from fgfem.paths import find_default_weights
    from fgfem.perf import check_bf16, settle_precision

    path = find_default_weights()
    if path is None:
        return plan
    try:
        from fgfem.weights import load_generator

        generator, _ = load_generator(path, plan.device)
        return settle_precision(plan, check_bf16(generator, plan.device, channels_last=plan.channels_last))
    except Exception as problem:  # noqa: BLE001 - a damaged file must not break `info`; the weights row says why
        which, _, rest = plan.reason.partition("; ")
        return dataclasses.replace(plan, reason=f"{which} (default weights not checked: {type(problem).__name__})"
                                                f"; {rest}")


@app.command(cls=Command)
@shared_options("device", "precision")
def info(*, shared: Shared) -> None:
    """Show version, device, torch/CUDA, threads, CPU, precision, face backends and weights.

    Example: [bold]fgfem info --device cpu[/]
    """
    import torch

    from fgfem.devices import cpu_has_bf16, describe_cpu, resolve_device

    choice = resolve_device(shared.device)
    table = Table(title=f"fgfem {__version__}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("python", platform.python_version())
    table.add_row("torch", torch.__version__)
    table.add_row("torchvision", _package_version("torchvision"))
    table.add_row("CUDA", f"{torch.version.cuda} ({torch.cuda.device_count()} GPU)" if torch.cuda.is_available()
                  else f"not available (build {torch.version.cuda or 'cpu'})")
    table.add_row("device", str(choice.device))
    if choice.kind == "cuda":
        table.add_row("GPU", torch.cuda.get_device_name(choice.device))
    table.add_row("CPU", describe_cpu())
    table.add_row("CPU threads", f"{torch.get_num_threads()} torch threads, {os.cpu_count()} cores")
    table.add_row("CPU bf16", "yes (AVX512-BF16/AMX)" if cpu_has_bf16() else "no")
    if importlib.util.find_spec("fgfem.perf") is not None:
        for key, value in _plan_rows(choice, shared.precision):
            table.add_row(key, value)
    for key, value in _face_backend_rows() + _weights_rows():
        table.add_row(key, value)
    console.print(table)
