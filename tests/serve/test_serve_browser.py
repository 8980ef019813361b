"""`fgfem serve` in a real headless browser (Debian's chromium driven by Playwright's Python client).

One server, one page, the whole user story in order: upload a real photo, move the AU12
slider, wait for the preview, download the full-resolution result and compare it with
``fgfem edit`` run on the command line the page prints (and with the original outside the
face); apply a preset; make the sweep GIF; upload a text file named .jpg, a photo without a
face and a 16-bit PNG and read the one-line messages while the page keeps working; pick an
example. Every request the browser makes must go to the server itself (offline).

Set ``FGFEM_SERVE_SCREENSHOT=docs/serve.png`` to keep the screenshot the README shows.
Skips with the reason where gradio, playwright or chromium is missing; CI installs all three and sets
``FGFEM_REQUIRE_BROWSER=1``, which turns such a skip into a failure.
"""

from __future__ import annotations

import importlib.util
import os
import queue
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run"]
START_TIMEOUT_S = 240
STEP_TIMEOUT_MS = 120_000



def missing(reason: str) -> None:
    """Skip with the reason; fail under FGFEM_REQUIRE_BROWSER=1 (CI), which must really run this test."""
    if os.environ.get("FGFEM_REQUIRE_BROWSER") == "1":
        pytest.fail(f"FGFEM_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


if importlib.util.find_spec("gradio") is None:
    missing('gradio is not installed (pip install ".[app]")')
if importlib.util.find_spec("playwright") is None:
    missing('playwright is not installed (pip install ".[test]")')
if not Path(CHROMIUM).is_file():
    missing("chromium is not installed (apt-get install -y chromium; .ci/run does)")
from playwright import sync_api  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serving(folder: Path) -> Iterator[tuple[str, Path]]:
    """``fgfem serve`` on a free port, as a user starts it; yields its URL and its stderr log."""
    log = folder / "serve-stderr.txt"
    with open(log, "w") as errors:
        server = subprocess.Popen(
            [sys.executable, "-m", "fgfem", "serve", "--port", str(free_port()), "--device", "cpu",
             "--backend", "dlib"], cwd=folder, stdout=subprocess.PIPE, stderr=errors, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"})
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in server.stdout], daemon=True).start()
        try:
            url = None
            while url is None:
                try:
                    line = lines.get(timeout=START_TIMEOUT_S)
                except queue.Empty:
                    pytest.fail(f"fgfem serve printed no URL in {START_TIMEOUT_S} s: {log.read_text()[-2000:]}")
                found = re.search(r"http://127\.0\.0\.1:\d+/", line)
                url = found.group(0) if found else None
            yield url, log
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def status(page) -> str:
    return page.locator("#fgfem-status").inner_text()


def wait_status(page, text: str) -> str:
    page.wait_for_function("t => document.querySelector('#fgfem-status').innerText.includes(t)", arg=text,
                           timeout=STEP_TIMEOUT_MS)
    return status(page)


def upload(page, path: Path) -> None:
    page.wait_for_selector("#fgfem-upload input[type=file], #fgfem-upload button[aria-label='Clear']",
                           state="attached", timeout=STEP_TIMEOUT_MS)
    chooser = page.locator("#fgfem-upload input[type=file]")
    if chooser.count() == 0:  # a file is shown: clear it to get the drop zone back
        page.locator("#fgfem-upload button[aria-label='Clear']").click()
    chooser.set_input_files(str(path))


def number_box(page, code: str):
    return page.locator(f"#fgfem-{code.lower()} input[type=number]")


def outside_face(shape: tuple[int, ...], landmarks: np.ndarray, margin: float = 0.5) -> np.ndarray:
    """True outside the landmarks' box widened by ``margin`` face sizes: no edit may reach there."""
    lo, hi = landmarks.min(0), landmarks.max(0)
    pad = margin * float((hi - lo).max())
    mask = np.ones(shape[:2], bool)
    y0, x0 = (max(0, int(v - pad)) for v in (lo[1], lo[0]))
    y1, x1 = (int(v + pad) + 1 for v in (hi[1], hi[0]))
    mask[y0:y1, x0:x1] = False
    return mask


@pytest.fixture()
def inputs(samples: Path, tmp_path: Path) -> dict[str, Path]:
    photo = tmp_path / "face.png"  # lossless, so "unchanged outside the face" can be exact
    Image.open(samples / "pyfeat" / "single_face.jpg").convert("RGB").save(photo)
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a photo\n")
    noface = tmp_path / "mountain.jpg"
    shutil.copy(samples / "pyfeat" / "free-mountain-vector-01.jpg", noface)
    deep = tmp_path / "deep.png"
    grey = np.asarray(Image.open(samples / "pyfeat" / "0-f15-hao-ph.jpg").convert("L"), dtype=np.uint16) * 257
    Image.fromarray(grey).save(deep)
    return {"photo": photo, "text": text, "noface": noface, "deep": deep}


def test_web_editor_in_a_real_browser(inputs: dict[str, Path], tmp_path: Path) -> None:
    from fgfem.faces import detect_faces, get_backend
    from fgfem.presets import relative_profile

    hosts: list[str] = []
    with serving(tmp_path) as (url, log), sync_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        context = browser.new_context(viewport={"width": 1440, "height": 1100}, accept_downloads=True)
        page = context.new_page()
        page.on("request", lambda request: hosts.append(urlsplit(request.url).hostname or ""))
        page.goto(url)

        # A real photo; the first render is the zero edit.
        upload(page, inputs["photo"])
        wait_status(page, "face.png: no change")
        unchanged = page.locator("#fgfem-after img").get_attribute("src")

        # Move the AU12 slider by keyboard, 150 quick steps of 0.01: the last position wins and the
        # positions in between are dropped, not queued (far fewer renders than moves).
        slider = page.locator("#fgfem-au12 input[type=range]")
        slider.focus()
        for _ in range(150):
            slider.press("ArrowRight")
        line = wait_status(page, "12=+1.5 x1")
        renders = int(re.search(r"update (\d+)", line).group(1))
        assert renders < 1 + 150, line
        assert number_box(page, "AU12").input_value() == "1.5"
        assert page.locator("#fgfem-after img").get_attribute("src") != unchanged

        # Download = what the printed command writes, and nothing outside the face moved.
        page.click("#fgfem-download")
        wait_status(page, "wrote face_edited.png")
        with page.expect_download() as caught:
            page.locator("#fgfem-file a[download]").first.click()
        got = tmp_path / "downloaded.png"
        caught.value.save_as(got)
        command = page.locator("#fgfem-command textarea").input_value()
        assert command == "fgfem edit face.png --au 12=+1.5 -o face_edited.png"
        cli = subprocess.run([sys.executable, "-m", "fgfem", *shlex.split(command)[1:], "--device", "cpu",
                              "--backend", "dlib"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert cli.returncode == 0, cli.stderr
        mine = np.asarray(Image.open(got).convert("RGB"), dtype=np.int16)
        reference = np.asarray(Image.open(tmp_path / "face_edited.png").convert("RGB"), dtype=np.int16)
        original = np.asarray(Image.open(inputs["photo"]).convert("RGB"), dtype=np.int16)
        assert mine.shape == original.shape
        assert np.abs(mine - reference).max() <= 1  # within 1/255 of `fgfem edit`
        assert np.abs(mine - original).max() > 0  # the smile is there
        face = detect_faces(get_backend("dlib"), original.astype(np.uint8), "largest")[0]
        outside = outside_face(original.shape, face.landmarks)
        assert np.array_equal(mine[outside], original[outside])

        # A preset sets the sliders from the measured profile and renders it.
        page.click("#fgfem-preset-happy")
        wait_status(page, "preset happy")
        au06 = round(float(relative_profile("happy")[4]), 2)
        assert float(number_box(page, "AU06").input_value()) == pytest.approx(au06)
        assert f"--au 6=+{au06:g}" in page.locator("#fgfem-command textarea").input_value()

        # The intensity sweep as a GIF.
        page.click("#fgfem-sweep")
        wait_status(page, "sweep 0 to x1")
        assert page.locator("#fgfem-gif img").get_attribute("src").endswith(".gif")

        # Bad uploads: one line each, no traceback, and the page goes on editing.
        for key, expected in (("text", "cannot read image notes.jpg: not an image"),
                              ("noface", "no face found in mountain.jpg")):
            upload(page, inputs[key])
            line = wait_status(page, expected)
            assert "\n" not in line.strip() and "still editing face.png" in line
            assert "Traceback" not in page.content()
        box = number_box(page, "AU12")
        box.fill("0.5")
        box.press("Enter")
        wait_status(page, "12=+0.5")
        upload(page, inputs["deep"])
        wait_status(page, "16 bits per channel")

        # An example photo from the server's own list (the README screenshot), with a preset on it.
        page.locator("#fgfem-example input").click()
        page.locator("[role=option][aria-label='astronaut.png']").click()
        wait_status(page, "astronaut.png: no change")
        page.click("#fgfem-preset-happy")
        wait_status(page, "preset happy")
        page.wait_for_timeout(500)  # let the images paint
        shot = tmp_path / "serve.png"
        page.screenshot(path=str(shot))
        browser.close()
        stderr = log.read_text()
    assert "Traceback" not in stderr, stderr[-3000:]
    assert set(hosts) == {"127.0.0.1"}, sorted(set(hosts))
    if keep := os.environ.get("FGFEM_SERVE_SCREENSHOT"):
        shutil.copy(shot, keep)
