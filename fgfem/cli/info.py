"""`fgfem info`: what this installation can do, in one table, in well under 3 s."""

from __future__ import annotations

import importlib.util
import os
import platform

import typer
from rich.table import Table

from fgfem import __version__
from fgfem.cli.app import app, console


def _package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _face_backend_rows() -> list[tuple[str, str]]:
    if importlib.util.find_spec("fgfem.prep.faces") is None:
        return [("face backends", "not built in this version")]
    from fgfem.prep.faces import backend_status

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


@app.command()
def info(
    device: str = typer.Option("auto", "--device", help="Device to report on: auto, cpu, cuda, cuda:N, mps."),
) -> None:
    """Show version, device, torch/CUDA, threads, face backends and weights.

    Example: [bold]fgfem info --device cpu[/]
    """
    import torch

    from fgfem.devices import cpu_has_bf16, resolve_device

    choice = resolve_device(device)
    table = Table(title=f"fgfem {__version__}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("python", platform.python_version())
    table.add_row("torch", torch.__version__)
    table.add_row("torchvision", _package_version("torchvision"))
    table.add_row("CUDA", f"{torch.version.cuda} ({torch.cuda.device_count()} GPU)" if torch.cuda.is_available()
                  else f"not available (build {torch.version.cuda or 'cpu'})")
    table.add_row("device", str(choice.device) + (" + bf16 autocast" if choice.autocast_dtype else ""))
    if choice.kind == "cuda":
        table.add_row("GPU", torch.cuda.get_device_name(choice.device))
    table.add_row("CPU threads", f"{torch.get_num_threads()} torch threads, {os.cpu_count()} cores")
    table.add_row("CPU bf16", "yes (AVX512-BF16/AMX)" if cpu_has_bf16() else "no")
    if importlib.util.find_spec("fgfem.perf") is not None:
        from fgfem.perf import describe_fast_path

        table.add_row("inference path", describe_fast_path(choice))
    for key, value in _face_backend_rows() + _weights_rows():
        table.add_row(key, value)
    console.print(table)
