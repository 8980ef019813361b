"""`fgfem serve`: the web editor on this machine (sliders per AU, live preview, presets, download)."""

from __future__ import annotations

from pathlib import Path

import typer

from fgfem.cli.app import app, console, err_console
from fgfem.cli.edit import BACKEND_OPTION, DEVICE_OPTION, WEIGHTS_OPTION, load_editor
from fgfem.errors import FgfemError


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; anything but loopback is public."),
    port: int = typer.Option(7860, "--port", "-p", help="TCP port."),
    max_upload_mb: float = typer.Option(20.0, "--max-upload-mb", help="Largest upload accepted, in MB."),
    max_megapixels: float = typer.Option(50.0, "--max-megapixels", help="Largest decoded photo, in megapixels."),
    weights: Path | None = WEIGHTS_OPTION,
    device: str = DEVICE_OPTION,
    backend: str = BACKEND_OPTION,
) -> None:
    """Open the expression editor in a browser: one slider per AU, live preview, emotion presets.

    Runs offline on this machine (no share link, no CDN, no analytics). Needs the app extra:
    pip install "fgfem[app]".

    Examples:
      [bold]fgfem serve[/]                          then open http://127.0.0.1:7860/
      [bold]fgfem serve --port 8080 --device cpu[/]
      [bold]fgfem serve --weights my.safetensors --max-upload-mb 10[/]
      [bold]fgfem serve --host 0.0.0.0[/]             (your network can reach it: a warning says so)
    """
    import importlib.util

    from fgfem.serve.server import is_loopback, start
    from fgfem.serve.session import UploadLimits

    if importlib.util.find_spec("gradio") is None:
        raise FgfemError('fgfem serve needs gradio: pip install "fgfem[app]" (or pip install gradio)')
    if not 0 < port <= 65535:
        raise FgfemError(f"--port {port}: give a TCP port between 1 and 65535")
    if not (0 < max_upload_mb <= 1024 and 0 < max_megapixels <= 500):
        raise FgfemError("--max-upload-mb must be within 0-1024 and --max-megapixels within 0-500")
    if not is_loopback(host):
        err_console.print(f"[yellow]warning:[/] listening on {host}: anyone who can reach this machine can use "
                          "the editor (there is no password)")
    limits = UploadLimits(max_bytes=int(max_upload_mb * 2**20), max_pixels=int(max_megapixels * 1e6))
    editor = load_editor(weights, device, backend)
    with console.status("starting the web editor"):
        running = start(editor, host=host, port=port, limits=limits, weights=str(weights) if weights else None)
    console.print(f"fgfem serve: open [bold]{running.url}[/] (Ctrl-C stops)", soft_wrap=True, highlight=False)
    try:
        running.app.block_thread()
    finally:
        running.close()
