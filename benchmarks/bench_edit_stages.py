"""Where the time of an edit goes: decode, detect, align, generate, paste, encode.

Two workloads, both built from real data in a temporary folder:

- a 1024 x 1024 photo (``examples/astronaut.png`` upscaled), edited with ``--au 12=+1``;
- a 720p clip (the first frames of ``samples/pyfeat/WolfgangLanger_Pexels.mp4`` scaled to
  1280 x 720 with ffmpeg), rendered like ``fgfem render`` does (tracked faces, batched G).

Run: ``python benchmarks/bench_edit_stages.py [--device cpu|cuda] [--weights W] [--frames 48]``.
Timings do not depend on the weights' values, so without trained weights a randomly
initialised network of the requested preset is used.

``--precisions fp32 auto`` (the default) builds one editor per ``--precision``, sharing one face
backend, and times them in the same run, interleaved (photo rounds, then the clip's chunks of
frames in turn): the first is the baseline that the last row's ratios are taken against.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.table import Table

from fgfem.aus import parse_au_specs
from fgfem.devices import describe_cpu
from fgfem.editor import Editor
from fgfem.media import load_image, save_image
from fgfem.paths import SOURCE_ROOT, find_default_weights, shared_dir
from fgfem.render import FaceTracker, TrackerConfig
from fgfem.video import VideoWriter, ffmpeg_exe, iter_frames, probe_video

STAGES = ("decode", "detect", "align", "generate", "paste", "encode")


class Stopwatch:
    """Accumulates seconds per stage; ``sync`` makes GPU work count where it happens."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, list[float]] = defaultdict(list)

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        yield
        self._sync()
        self.seconds[stage].append(time.perf_counter() - start)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def make_editor(args: argparse.Namespace, precision: str, backend: Any) -> Editor:
    weights = args.weights or find_default_weights()
    if weights is not None:
        return Editor.from_weights(weights, device=args.device, backend=backend, precision=precision)
    from fgfem.nets import Generator, get_preset

    cfg = get_preset(args.preset)
    torch.manual_seed(0)
    return Editor(Generator(cfg), image_size=cfg.image_size, device=args.device, backend=backend,
                  precision=precision)


def bench_photos(editors: list[Editor], folder: Path, repeats: int) -> list[Stopwatch]:
    """Every editor on the same photo, rounds interleaved so that the neighbours' load hits all alike."""
    src = folder / "astronaut_1024.png"
    Image.open(SOURCE_ROOT / "examples" / "astronaut.png").convert("RGB").resize(
        (1024, 1024), Image.Resampling.LANCZOS).save(src)
    watches = [Stopwatch(editor.device.device) for editor in editors]
    for i in range(repeats + 1):  # the first round warms up caches and kernels and is dropped
        for editor, watch in zip(editors, watches, strict=True):
            photo_round(editor, src, folder, watch if i else None)
    return watches


def photo_round(editor: Editor, src: Path, folder: Path, watch: Stopwatch | None) -> None:
    """One edit of ``src``, stage by stage; its times go into ``watch`` (None: a warm-up round)."""
    edits = parse_au_specs(["12=+1"])
    run = Stopwatch(editor.device.device)
    with run("decode"):
        loaded = load_image(src)
    with run("detect"):
        faces = editor.find_faces(loaded.rgb)
    with run("align"):
        aligned = editor.align(loaded.rgb, faces)
    deltas = editor.deltas_for(edits, editor.measure_aus(faces))
    with run("generate"):
        edited, reference = editor.edit_batch(aligned.crops, deltas, [1.0])
    with run("paste"):
        out = editor.paste(loaded.rgb, edited[0], reference, aligned, mode="delta")
    with run("encode"):
        save_image(loaded, out, folder / "edited.png", force=True)
    if watch is not None:
        for stage, values in run.seconds.items():
            watch.seconds[stage].extend(values)


def make_clip(folder: Path, frames: int) -> Path:
    sample = shared_dir() / "data" / "samples" / "pyfeat" / "WolfgangLanger_Pexels.mp4"
    clip = folder / "clip720.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(sample), "-frames:v", str(frames),
                    "-vf", "scale=1280:720", "-an", "-c:v", "libx264", "-crf", "16", str(clip)], check=True)
    return clip


class VideoRun:
    """One editor rendering the clip like ``fgfem render`` (tracked faces, batched G), a chunk at a time.

    Several runs advance chunk by chunk in turn, so that the neighbours' load hits every
    editor alike; ``wall`` sums this run's own chunks only.
    """

    def __init__(self, editor: Editor, clip: Path, out: Path, batch: int) -> None:
        info = probe_video(clip)
        self.editor, self.batch = editor, batch
        self.edits = parse_au_specs(["12=+1"])
        self.tracker = FaceTracker(editor.backend, TrackerConfig(fps=info.fps))
        self.watch = Stopwatch(editor.device.device)
        self.reader = iter_frames(clip)
        self.writer = VideoWriter(out, info.fps, info.size, force=True).__enter__()
        self.count, self.wall, self.done = 0, 0.0, False

    def chunk(self) -> None:
        """Decode, track, edit, paste and hand over the next ``batch`` frames; close the writer at the end."""
        started = time.perf_counter()
        editor, watch = self.editor, self.watch
        with watch("decode"):
            chunk = [f for _, f in zip(range(self.batch), self.reader, strict=False)]
        if not chunk:
            with watch("encode"):
                self.writer.__exit__(None, None, None)
            self.done = True
            self.wall += time.perf_counter() - started
            return
        with watch("detect"):
            found = [self.tracker.update(f) for f in chunk]
        work = [(i, chunk[i], faces) for i, faces in enumerate(found) if faces]
        with watch("align"):
            aligned = [editor.align(f, faces) for _, f, faces in work]
        outs, start = list(chunk), 0  # frames without a face are written as they are
        if work:
            crops = torch.cat([a.crops for a in aligned])
            deltas = np.concatenate([editor.deltas_for(self.edits, editor.measure_aus(faces)) for *_, faces in work])
            with watch("generate"):
                edited, reference = editor.edit_batch(crops, deltas, [1.0])
            for (i, frame, faces), batch_aligned in zip(work, aligned, strict=True):
                stop = start + len(faces)
                with watch("paste"):
                    outs[i] = editor.paste(frame, edited[0][start:stop], reference[start:stop], batch_aligned,
                                           mode="delta")
                start = stop
        with watch("encode"):
            for out in outs:
                self.writer.write(out)
        self.count += len(chunk)
        self.wall += time.perf_counter() - started


def bench_videos(editors: list[Editor], folder: Path, frames: int, batch: int) -> list[tuple[Stopwatch, int, float]]:
    """Every editor renders the same clip, chunks interleaved; one (stopwatch, frames, seconds) each."""
    clip = make_clip(folder, frames)
    runs = [VideoRun(editor, clip, folder / f"out720-{k}.mp4", batch) for k, editor in enumerate(editors)]
    while not all(run.done for run in runs):
        for run in runs:
            if not run.done:
                run.chunk()
    return [(run.watch, run.count, run.wall) for run in runs]


def stage_rows(photos: list[Stopwatch], videos: list[tuple[Stopwatch, int, float]]) -> list[list[float]]:
    """Per stage, then total: photo ms of each editor, then video ms per frame of each."""
    rows = []
    for stage in STAGES:
        row = [statistics.median(w.seconds[stage]) * 1000 if w.seconds[stage] else float("nan") for w in photos]
        row += [sum(w.seconds[stage]) / max(n, 1) * 1000 for w, n, _ in videos]
        rows.append(row)
    rows.append([sum(statistics.median(v) for v in w.seconds.values()) * 1000 for w in photos]
                + [wall / max(n, 1) * 1000 for _, n, wall in videos])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backend", default="dlib")
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--preset", default="lite", help="random network preset when no weights are found")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "auto"], choices=["auto", "fp32", "bf16"],
                        help="one editor each; the first is the baseline")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console()
    first = make_editor(args, args.precisions[0], args.backend)
    editors = [first] + [make_editor(args, p, first.backend) for p in args.precisions[1:]]
    name = first.weights_info.cfg.name if first.weights_info else f"random {args.preset}"
    console.print(f"device {first.device.device}, model {name}, {torch.get_num_threads()} torch threads, "
                  f"load average {os.getloadavg()[0]:.1f}")
    console.print(f"CPU: {describe_cpu()}")
    for precision, editor in zip(args.precisions, editors, strict=True):
        console.print(f"--precision {precision}: {editor._fast.plan.reason.split('; ')[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        photos = bench_photos(editors, folder, args.repeats)
        videos = bench_videos(editors, folder, args.frames, args.batch)
    table = Table(title="fgfem edit stages (median ms per photo; ms per frame for video)")
    table.add_column("stage")
    for what in ("photo 1024x1024", "video 720p"):
        for precision in args.precisions:
            table.add_column(f"{what} {precision}", justify="right")
    rows = stage_rows(photos, videos)
    for stage, row in zip((*STAGES, "total"), rows, strict=True):
        table.add_row(stage, *(f"{ms:.1f}" for ms in row), style="bold" if stage == "total" else None)
    count = len(editors)
    totals = rows[-1]
    table.add_row(f"speed vs {args.precisions[0]}", *(f"{totals[k // count * count] / ms:.2f}x" for k, ms in
                                                     enumerate(totals)), style="bold")
    console.print(table)
    for precision, (_, frames, wall) in zip(args.precisions, videos, strict=True):
        console.print(f"video, --precision {precision}: {frames} frames in {wall:.2f} s = {frames / wall:.1f} fps "
                      f"(batch {args.batch})")


if __name__ == "__main__":
    main()
