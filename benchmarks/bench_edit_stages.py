"""Where the time of an edit goes: decode, detect, align, generate, paste, encode.

Two workloads, both built from real data in a temporary folder:

- a 1024 x 1024 photo (``examples/astronaut.png`` upscaled), edited with ``--au 12=+1``;
- a 720p clip (the first frames of ``samples/pyfeat/WolfgangLanger_Pexels.mp4`` scaled to
  1280 x 720 with ffmpeg), rendered like ``fgfem render`` does (tracked faces, batched G).

Run: ``python benchmarks/bench_edit_stages.py [--device cpu|cuda] [--weights W] [--frames 48]``.
Timings do not depend on the weights' values, so without trained weights a randomly
initialised network of the requested preset is used.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.table import Table

from fgfem.aus import parse_au_specs
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


def make_editor(args: argparse.Namespace) -> Editor:
    weights = args.weights or find_default_weights()
    if weights is not None:
        return Editor.from_weights(weights, device=args.device, backend=args.backend)
    from fgfem.nets import Generator, get_preset

    cfg = get_preset(args.preset)
    return Editor(Generator(cfg), image_size=cfg.image_size, device=args.device, backend=args.backend)


def bench_photo(editor: Editor, folder: Path, repeats: int) -> Stopwatch:
    src = folder / "astronaut_1024.png"
    Image.open(SOURCE_ROOT / "examples" / "astronaut.png").convert("RGB").resize(
        (1024, 1024), Image.Resampling.LANCZOS).save(src)
    edits = parse_au_specs(["12=+1"])
    watch = Stopwatch(editor.device.device)
    for i in range(repeats + 1):  # the first round warms up caches and kernels and is dropped
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
        if i:
            for stage, values in run.seconds.items():
                watch.seconds[stage].extend(values)
    return watch


def bench_video(editor: Editor, folder: Path, frames: int, batch: int) -> tuple[Stopwatch, int, float]:
    sample = shared_dir() / "data" / "samples" / "pyfeat" / "WolfgangLanger_Pexels.mp4"
    clip = folder / "clip720.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(sample), "-frames:v", str(frames),
                    "-vf", "scale=1280:720", "-an", "-c:v", "libx264", "-crf", "16", str(clip)], check=True)
    info = probe_video(clip)
    edits = parse_au_specs(["12=+1"])
    tracker = FaceTracker(editor.backend, TrackerConfig(fps=info.fps))
    watch = Stopwatch(editor.device.device)
    reader = iter_frames(clip)
    started = time.perf_counter()
    count = 0
    with VideoWriter(folder / "out720.mp4", info.fps, info.size, force=True) as writer:
        while True:
            with watch("decode"):
                chunk = [f for _, f in zip(range(batch), reader, strict=False)]
            if not chunk:
                break
            with watch("detect"):
                found = [tracker.update(f) for f in chunk]
            work = [(i, chunk[i], faces) for i, faces in enumerate(found) if faces]
            with watch("align"):
                aligned = [editor.align(f, faces) for _, f, faces in work]
            outs, start = list(chunk), 0  # frames without a face are written as they are
            if work:
                crops = torch.cat([a.crops for a in aligned])
                deltas = np.concatenate([editor.deltas_for(edits, editor.measure_aus(faces)) for *_, faces in work])
                with watch("generate"):
                    edited, reference = editor.edit_batch(crops, deltas, [1.0])
                for (i, frame, faces), batch_aligned in zip(work, aligned, strict=True):
                    stop = start + len(faces)
                    with watch("paste"):
                        outs[i] = editor.paste(frame, edited[0][start:stop], reference[start:stop],
                                               batch_aligned, mode="delta")
                    start = stop
            with watch("encode"):
                for out in outs:
                    writer.write(out)
            count += len(chunk)
        with watch("encode"):
            writer.close()
    return watch, count, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backend", default="dlib")
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--preset", default="lite", help="random network preset when no weights are found")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console()
    editor = make_editor(args)
    name = editor.weights_info.cfg.name if editor.weights_info else f"random {args.preset}"
    console.print(f"device {editor.device.device}, model {name}, {torch.get_num_threads()} torch threads")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        photo = bench_photo(editor, folder, args.repeats)
        video, frames, wall = bench_video(editor, folder, args.frames, args.batch)
    table = Table(title="fgfem edit stages (median ms per photo; ms per frame for video)")
    table.add_column("stage")
    table.add_column("photo 1024x1024", justify="right")
    table.add_column("video 720p", justify="right")
    for stage in STAGES:
        photo_ms = statistics.median(photo.seconds[stage]) * 1000 if photo.seconds[stage] else float("nan")
        video_ms = sum(video.seconds[stage]) / max(frames, 1) * 1000
        table.add_row(stage, f"{photo_ms:.1f}", f"{video_ms:.1f}")
    photo_total = sum(statistics.median(v) for v in photo.seconds.values()) * 1000
    table.add_row("total", f"{photo_total:.1f}", f"{wall / max(frames, 1) * 1000:.1f}", style="bold")
    console.print(table)
    console.print(f"video: {frames} frames in {wall:.2f} s = {frames / wall:.1f} fps (batch {args.batch})")


if __name__ == "__main__":
    main()
