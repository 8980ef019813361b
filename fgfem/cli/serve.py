"""`fgfem serve`: the web editor on this machine (sliders per AU, live preview, presets, download)."""

from __future__ import annotations

import typer

from fgfem.cli.app import app, console, err_console
from fgfem.cli.options import Command, Shared, shared_options


@app.command(cls=Command)
@shared_options("weights", "device", "backend")
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; anything but loopback is public."),
    port: int = typer.Option(7860, "--port", "-p", help="TCP port."),
    max_upload_mb: float = typer.Option(20.0, "--max-upload-mb", help="Largest upload accepted, in MB."),
    max_megapixels: float = typer.Option(50.0, "--max-megapixels", help="Largest decoded photo, in megapixels."),
    *,
    shared: Shared,
) -> None:
    """Open the expression editor in a browser: one slider per AU, live preview, emotion presets.

    Runs offline on this machine (no share link, no CDN, no analytics). Needs the app extra: \
[bold]pip install "fgfem\\[app]"[/]

    Examples:
      [bold]fgfem serve[/]                          then open http://127.0.0.1:7860/
      [bold]fgfem serve --port 8080 --device cpu[/]
      [bold]fgfem serve --weights my.safetensors --max-upload-mb 10[/]
      [bold]fgfem serve --host 0.0.0.0[/]             (your network can reach it: a warning says so)
    """
    from fgfem.serve.server import is_loopback, start, upload_limits

    limits = upload_limits(port=port, max_upload_mb=max_upload_mb, max_megapixels=max_megapixels)
    if not is_loopback(host):
        err_console.print(f"[yellow]warning:[/] listening on {host}: anyone who can reach this machine can use "
                          "the editor (there is no password)")
    editor = shared.load_editor()
    with console.status("starting the web editor"):
        weights = str(shared.weights) if shared.weights else None
        running = start(editor, host=host, port=port, limits=limits, weights=weights)
    console.print(f"fgfem serve: open [bold]{running.url}[/] (Ctrl-C stops)", soft_wrap=True, highlight=False)
    try:
        running.app.block_thread()
    finally:
        running.close()
