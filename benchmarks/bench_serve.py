"""How fast and how lean is ``fgfem serve``: start-up, per-update time on a 1024 px photo, memory.

    python benchmarks/bench_serve.py                   # all three, 50 updates
    python benchmarks/bench_serve.py --updates 20 --no-browser

What is measured, all in one run:

1. start-up: ``python -m fgfem serve`` as a user starts it, from launch to the URL line and to the
   first page served (imports, model and landmark-model loads, gradio);
2. per update, in-process: what one slider change costs on the server (``PhotoSession.render``
   with the faces cached at upload: the model and the paste-back at full resolution, then the
   face view and the preview), median and spread over ``--updates`` different AU12 values;
   at torch's default threads and at 1 (two threads on two busy cores can be several times slower);
3. per update, in a real browser (chromium + playwright, where installed): from typing a new AU12
   value to the page's status line showing it rendered (HTTP, queue, JPEG encode and display
   included), and the server's resident memory after the upload and after 10 and ``--updates``
   updates (flat = no leak).

The photo is ``samples/pyfeat/single_face.jpg`` from ``$FGFEM_SHARED/data``, upscaled to 1024 px
wide; weights are the shipped default. Prints the CPU and its flags: times depend on the machine
and on its neighbours' load, so compare rows of one run, not runs of different days.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image

from fgfem.aus import NUM_AUS, au_index
from fgfem.paths import shared_dir

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run"]


def cpu_line() -> str:
    import torch

    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    model = next((line.partition(":")[2].strip() for line in info.splitlines() if line.startswith("model name")),
                 platform.processor() or platform.machine())
    flags = set(next((line.partition(":")[2].split() for line in info.splitlines() if line.startswith("flags")), []))
    shown = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f in flags]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{model}, {os.cpu_count()} cores, flags {' '.join(shown) or '-'}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), load {load:.1f}")


def make_photo(folder: Path) -> Path:
    source = shared_dir() / "data" / "samples" / "pyfeat" / "single_face.jpg"
    if not source.is_file():
        sys.exit(f"{source} not found (set FGFEM_SHARED)")
    image = Image.open(source).convert("RGB")
    image = image.resize((1024, round(image.height * 1024 / image.width)), Image.Resampling.LANCZOS)
    path = folder / "photo1024.jpg"
    image.save(path, quality=95)
    return path


def summary(seconds: list[float]) -> str:
    ms = sorted(1000 * s for s in seconds)
    return (f"median {statistics.median(ms):6.0f} ms  (min {ms[0]:.0f}, max {ms[-1]:.0f}, "
            f"p90 {ms[int(0.9 * (len(ms) - 1))]:.0f}, n={len(ms)})")


def in_process(photo: Path, updates: int, threads: list[int]) -> None:
    import warnings

    import torch

    from fgfem.editor import Editor
    from fgfem.serve.session import EditState, UploadLimits, open_upload
    from fgfem.serve.views import face_view, preview

    start = time.perf_counter()
    editor = Editor.from_weights(None, device="cpu", backend="dlib")
    loaded = time.perf_counter()
    session = open_upload(editor, photo, photo.name, UploadLimits())
    opened = time.perf_counter()
    print(f"in-process: model load {loaded - start:.2f} s, upload (decode, detect, landmarks, AUs) "
          f"{opened - loaded:.2f} s, photo {session.rgb.shape[1]}x{session.rgb.shape[0]}")
    warnings.simplefilter("ignore")  # the rig's "geometry limited" notes: the page shows them, not timed here
    for count in threads:
        torch.set_num_threads(count)
        times, render_only = [], []
        for i in range(updates + 1):
            values = [0.0] * NUM_AUS
            values[au_index(12)] = 0.05 * (i % 50 + 1) + 0.01 * count  # a new state: never a cached render
            state = EditState.from_controls(values, 1.0, "largest")
            tick = time.perf_counter()
            image = session.render(editor, state)
            rendered = time.perf_counter()
            face_view(image, session.faces_for(editor, "largest"))
            preview(image)
            if i:  # the first update warms the model up
                times.append(time.perf_counter() - tick)
                render_only.append(rendered - tick)
        print(f"  {count} torch thread(s), per update, model + paste-back: {summary(render_only)}")
        print(f"  {count} torch thread(s), + face view and preview:       {summary(times)}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(folder: Path) -> tuple[subprocess.Popen, str, float, float]:
    import urllib.request

    port = free_port()
    begin = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "fgfem", "serve", "--port", str(port), "--device", "cpu"],
                              cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url_at: list[float] = []

    def watch() -> None:
        for line in server.stdout:
            if "http://127.0.0.1" in line and not url_at:
                url_at.append(time.perf_counter())

    threading.Thread(target=watch, daemon=True).start()
    url = f"http://127.0.0.1:{port}/"
    while True:
        if server.poll() is not None:
            sys.exit("fgfem serve exited during start-up")
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    break
        except OSError:
            time.sleep(0.05)
    served = time.perf_counter()
    while not url_at and time.perf_counter() - served < 5:
        time.sleep(0.01)
    return server, url, (url_at[0] if url_at else served) - begin, served - begin


def in_browser(photo: Path, updates: int, folder: Path) -> None:
    from playwright.sync_api import sync_playwright

    server, url, to_url, to_page = start_server(folder)
    print(f"start-up of fgfem serve: URL printed after {to_url:.2f} s, first page served after {to_page:.2f} s")
    try:
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 1100})
            page.goto(url)

            def wait(text: str) -> None:
                page.wait_for_function("t => document.querySelector('#fgfem-status').innerText.includes(t)",
                                       arg=text, timeout=120_000)

            page.wait_for_selector("#fgfem-upload input[type=file]", state="attached")
            tick = time.perf_counter()
            page.locator("#fgfem-upload input[type=file]").set_input_files(str(photo))
            wait("no change")
            print(f"browser: upload to first preview {time.perf_counter() - tick:.2f} s")
            memory = {"after upload": rss_mb(server.pid)}
            box = page.locator("#fgfem-au12 input[type=number]")
            times = []
            for i in range(updates + 1):
                value = f"{0.05 * (i % 50 + 1):.2f}".rstrip("0").rstrip(".")  # 0.05 to 2.5, then again
                tick = time.perf_counter()
                box.fill(value)
                box.press("Enter")
                wait(f"12=+{value} x1")
                if i:
                    times.append(time.perf_counter() - tick)
                if i in (10, updates // 2):
                    memory[f"after {i} updates"] = rss_mb(server.pid)
            memory[f"after {updates} updates"] = rss_mb(server.pid)
            browser.close()
        print(f"  per update, slider typed to preview shown: {summary(times)}")
        print("  server RSS: " + ", ".join(f"{k} {v:.0f} MB" for k, v in memory.items()))
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--updates", type=int, default=50, help="slider changes to time (default 50)")
    parser.add_argument("--threads", type=int, nargs="+", default=[0, 1],
                        help="torch threads for the in-process rows (0: torch's default; default: 0 1)")
    parser.add_argument("--no-browser", action="store_true", help="skip the start-up and browser measurements")
    args = parser.parse_args()
    print(cpu_line())
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        folder = Path(tmp)
        photo = make_photo(folder)
        import torch

        in_process(photo, args.updates, [count or torch.get_num_threads() for count in args.threads])
        if args.no_browser:
            return 0
        try:
            import playwright  # noqa: F401
        except ImportError:
            print("browser rows skipped: pip install playwright (and apt-get install chromium)")
            return 0
        if not Path(CHROMIUM).is_file():
            print("browser rows skipped: chromium not found")
            return 0
        in_browser(photo, args.updates, folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
