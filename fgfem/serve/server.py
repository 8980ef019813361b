"""Start the web editor: offline, on the loopback address, with a private scratch folder.

Gradio reads its switches from the environment when it is imported, so ``offline_environment``
runs first: analytics and its version check off (they phone home), Hugging Face telemetry
and hub access off, server-side rendering off (it would start a Node process), and its
upload cache in a private temporary folder that is removed when the server stops.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fgfem.errors import FgfemError
from fgfem.serve.session import SessionStore, UploadLimits

if TYPE_CHECKING:
    import gradio as gr

    from fgfem.editor import Editor

LOOPBACK = ("127.0.0.1", "localhost", "::1")
OFFLINE_ENV = {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "GRADIO_SSR_MODE": "False",
    "GRADIO_MCP_SERVER": "False",
    "GRADIO_RUN_HISTORY": "False",
    "GRADIO_SHARE": "False",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "True",  # the value gradio itself sets with analytics off
    "DO_NOT_TRACK": "1",
}


@dataclass
class Running:
    """A started server: its URL, the Blocks app and the scratch folder (for tests and benchmarks)."""

    url: str
    app: gr.Blocks
    scratch: Path
    store: SessionStore

    def close(self) -> None:
        self.app.close()
        shutil.rmtree(self.scratch, ignore_errors=True)


def offline_environment() -> Path:
    """Set gradio's switches for offline use and give it a private cache folder; call before importing gradio."""
    os.environ.update(OFFLINE_ENV)
    scratch = Path(tempfile.mkdtemp(prefix="fgfem-serve-"))
    os.environ["GRADIO_TEMP_DIR"] = str(scratch / "gradio")
    atexit.register(shutil.rmtree, scratch, True)
    return scratch


def limit_malloc_arenas(count: int = 2) -> bool:
    """Cap glibc's malloc arenas (like ``MALLOC_ARENA_MAX=2``); True where that worked.

    Gradio runs each request in a worker thread, and glibc gives threads their own arenas, which
    keep the freed megabytes of every full-resolution render: measured, the server's memory then
    grew by 110 MB over 200 slider updates, and by 21 MB with two arenas, at the same speed.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL(name).mallopt(-8, int(count)))  # -8: M_ARENA_MAX in glibc's malloc.h
    except (OSError, AttributeError):
        return False


def is_loopback(host: str) -> bool:
    return host.strip().lower() in LOOPBACK


def upload_limits(*, port: int, max_upload_mb: float, max_megapixels: float) -> UploadLimits:
    """What ``fgfem serve`` refuses before the model loads (no gradio, a port or a cap out of range); the caps."""
    import importlib.util

    if importlib.util.find_spec("gradio") is None:
        raise FgfemError('fgfem serve needs gradio: pip install "fgfem[app]" (or pip install gradio)')
    if not 0 < port <= 65535:
        raise FgfemError(f"--port {port}: give a TCP port between 1 and 65535")
    if not (0 < max_upload_mb <= 1024 and 0 < max_megapixels <= 500):
        raise FgfemError("--max-upload-mb must be within 0-1024 and --max-megapixels within 0-500")
    return UploadLimits(max_bytes=int(max_upload_mb * 2**20), max_pixels=int(max_megapixels * 1e6))


def example_photos() -> dict[str, Path]:
    """The example photos: a source checkout's ``examples/``, or the copy an install puts in ``share/fgfem``."""
    from fgfem.media import is_image
    from fgfem.paths import SOURCE_ROOT

    candidates = (SOURCE_ROOT / "examples", Path(sys.prefix) / "share" / "fgfem" / "examples")
    folder = next((c for c in candidates if c.is_dir()), None)
    if folder is None:
        return {}
    return {path.name: path for path in sorted(folder.iterdir()) if path.is_file() and is_image(path)}


def start(
    editor: Editor,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    limits: UploadLimits | None = None,
    weights: str | None = None,
) -> Running:
    """Build the page and serve it in a background thread; ``Running.url`` is where it listens."""
    scratch = offline_environment()
    limit_malloc_arenas()
    try:
        import gradio as gr
    except ImportError:
        raise FgfemError('fgfem serve needs gradio: pip install "fgfem[app]" (or pip install gradio)') from None

    from fgfem.serve.app import CSS, build_app

    limits = limits or UploadLimits()
    store = SessionStore()
    demo = build_app(editor, work_dir=scratch / "out", limits=limits, weights=weights,
                     examples=example_photos(), store=store)
    demo.queue(default_concurrency_limit=1, max_size=32)
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # no web fonts: offline
    try:
        demo.launch(server_name=host, server_port=port, share=False, inbrowser=False, prevent_thread_lock=True,
                    quiet=True, show_error=False, max_file_size=limits.max_bytes, ssr_mode=False,
                    mcp_server=False, pwa=False, enable_monitoring=False, run_history=False, footer_links=[],
                    theme=theme, css=CSS, strict_cors=True)
    except OSError as problem:
        shutil.rmtree(scratch, ignore_errors=True)
        raise FgfemError(f"cannot listen on {host}:{port} ({problem}); pass another --port") from None
    url = f"http://{'[' + host + ']' if ':' in host else host}:{demo.server_port}/"
    return Running(url=url, app=demo, scratch=scratch, store=store)
