"""`fgfem render` of a 720p clip: the sequential path, the pipeline, and ffmpeg alone (the floor).

The clip: the first ``--frames`` frames of ``samples/pyfeat/WolfgangLanger_Pexels.mp4`` (real data,
``FGFEM_SHARED``), scaled to 1280 x 720 with its audio into a temporary folder, rendered with
``--au 12=+1`` by ``fgfem.render.render_video`` with one loaded editor. Rows, interleaved round
by round so that the neighbours' load hits all of them alike (median of ``--rounds``):

- ``ffmpeg decode + x264``: one ffmpeg process decoding the clip and encoding it with x264 at the
  render's settings (``veryfast``, CRF 18, yuv420p). No renderer can be faster than this.
- ``fgfem I/O only``: fgfem's reader and writer with no edit (decode to RGB, pipe, encode, mux).
- ``sequential``: ``pipeline=False``, torch's and BLAS's threads as they are: the render as it was
  before the pipeline (the baseline of the ratios).
- ``sequential, 1 BLAS thread, N torch``: the same with the pipeline's thread limits only, to
  show how much of the gain is the limits and how much the overlap.
- ``pipelined``: ``pipeline=True`` (the default of ``fgfem render``).

fps is frames per second of the render loop, as ``fgfem render`` prints it (after the probe that
counts the frames); ``wall s`` is the whole call. "vs sequential" is the median of each round's own ratio
(both rows under that round's load), rows taking turns first (ABBA). ``cpu s`` adds the ffmpeg children's CPU time;
``peak MB`` is the highest resident size sampled during the row (the editor is loaded before).

Run: ``FGFEM_SHARED=../shared python benchmarks/bench_render.py [--frames 144] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import subprocess
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from fgfem.aus import parse_au_specs
from fgfem.devices import describe_cpu
from fgfem.editor import Editor
from fgfem.paths import find_default_weights, shared_dir
from fgfem.pipeline import default_compute_threads, limited_threads
from fgfem.render import render_video
from fgfem.video import DEFAULT_X264_PRESET, VideoWriter, ffmpeg_exe, open_frames, probe_video

BASELINE = "sequential (before the pipeline)"


@dataclass
class Sample:
    """One timed run of one row."""

    fps: float
    wall: float
    cpu: float
    peak_mb: float


def make_clip(folder: Path, frames: int) -> Path:
    """The sample scaled to 1280 x 720 (audio copied), re-encoded nearly losslessly."""
    sample = shared_dir() / "data" / "samples" / "pyfeat" / "WolfgangLanger_Pexels.mp4"
    clip = folder / "clip720.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(sample), "-frames:v", str(frames),
                    "-vf", "scale=1280:720", "-c:v", "libx264", "-crf", "16", "-c:a", "copy", str(clip)], check=True)
    return clip


def rss_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@contextlib.contextmanager
def peak_rss(into: list[float]) -> Iterator[None]:
    """Sample this process's resident size every 20 ms while the block runs; append the peak."""
    stop = threading.Event()
    peak = [rss_mb()]

    def sample() -> None:
        while not stop.wait(0.02):
            peak[0] = max(peak[0], rss_mb())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        into.append(max(peak[0], rss_mb()))


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(run: Callable[[], tuple[int, float | None]]) -> Sample:
    """Run once; ``run`` returns (frames, seconds of its own loop or None for the whole call)."""
    peaks: list[float] = []
    cpu, start = cpu_seconds(), time.perf_counter()
    with peak_rss(peaks):
        frames, loop = run()
    wall = time.perf_counter() - start
    return Sample(fps=frames / (loop or wall), wall=wall, cpu=cpu_seconds() - cpu, peak_mb=peaks[0])


def ffmpeg_floor(clip: Path, out: Path, frames: int) -> tuple[int, float | None]:
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(clip), "-map", "0:v:0", "-c:v", "libx264",
                    "-preset", DEFAULT_X264_PRESET, "-crf", "18", "-pix_fmt", "yuv420p", str(out)], check=True)
    return frames, None


def io_only(clip: Path, out: Path) -> tuple[int, float | None]:
    info = probe_video(clip)
    start = time.perf_counter()
    writer = VideoWriter(out, info.fps, info.size, force=True, timing=info.timing, sar=info.sar, color=info.color,
                         audio_from=clip if info.has_audio else None)
    with open_frames(clip) as frames, writer:
        for frame in frames:
            writer.write(frame)
    return writer.frames_written, time.perf_counter() - start


def render(editor: Editor, clip: Path, out: Path, batch: int, *, pipeline: bool,
           threads: int | None = None, limit: int | None = None) -> tuple[int, float | None]:
    limits = limited_threads(limit) if limit else contextlib.nullcontext()
    with limits:
        stats = render_video(editor, clip, out, parse_au_specs(["12=+1"]), batch=batch, force=True,
                             pipeline=pipeline, threads=threads)
    return stats.frames, stats.seconds


def load_editor(weights: Path | None, device: str) -> Editor:
    path = weights or find_default_weights()
    if path is not None:
        return Editor.from_weights(path, device=device, backend="dlib")
    from fgfem.nets import Generator, get_preset

    cfg = get_preset("lite")
    torch.manual_seed(0)
    return Editor(Generator(cfg), image_size=cfg.image_size, device=device, backend="dlib")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=144)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads of the pipelined rows (0: default_compute_threads())")
    args = parser.parse_args()
    console = Console(width=150)
    threads = args.threads or default_compute_threads()
    editor = load_editor(args.weights, args.device)
    console.print(f"CPU: {describe_cpu()}")
    console.print(f"device {editor.device.device}, plan: {editor._fast.plan.reason.split('; ')[0]}; torch threads "
                  f"{torch.get_num_threads()} (pipeline: {threads}); load average before "
                  f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clip = make_clip(folder, args.frames)
        frames = probe_video(clip).frame_count or args.frames
        out = folder / "out.mp4"
        rows: dict[str, Callable[[], tuple[int, float | None]]] = {
            "ffmpeg decode + x264 (floor)": lambda: ffmpeg_floor(clip, out, frames),
            "fgfem I/O only (no edit)": lambda: io_only(clip, out),
            BASELINE: lambda: render(editor, clip, out, args.batch, pipeline=False),
            f"sequential, 1 BLAS + {threads} torch thread(s)": lambda: render(editor, clip, out, args.batch,
                                                                            pipeline=False, limit=threads),
            "pipelined (fgfem render)": lambda: render(editor, clip, out, args.batch, pipeline=True,
                                                       threads=threads),
        }
        render(editor, clip, out, args.batch, pipeline=True, threads=threads)  # warm-up: first-use costs
        samples: dict[str, list[Sample]] = defaultdict(list)
        for round_index in range(args.rounds):
            order = list(rows.items())
            for name, run in order if round_index % 2 == 0 else reversed(order):  # ABBA: no row always first
                samples[name].append(timed(run))
            console.print(f"round {round_index + 1}/{args.rounds} done, load {os.getloadavg()[0]:.1f}")
    print_table(console, samples, frames)


def print_table(console: Console, samples: dict[str, list[Sample]], frames: int) -> None:
    """Medians over rounds; "vs sequential" is the median of each round's own ratio (both rows under that
    round's load), with its range across rounds."""
    table = Table(title=f"render of {frames} frames of 720p (median of {len(next(iter(samples.values())))} rounds)")
    for column in ("row", "fps", "fps range", "wall s", "cpu s", "peak MB", "vs sequential", "ratio range"):
        table.add_column(column, justify="left" if column == "row" else "right")
    baseline = [s.fps for s in samples[BASELINE]]
    for name, runs in samples.items():
        fps = [s.fps for s in runs]
        ratios = [f / b for f, b in zip(fps, baseline, strict=True)]
        table.add_row(name, f"{statistics.median(fps):.2f}", f"{min(fps):.2f}-{max(fps):.2f}",
                      f"{statistics.median(s.wall for s in runs):.1f}", f"{statistics.median(s.cpu for s in runs):.1f}",
                      f"{max(s.peak_mb for s in runs):.0f}", f"{statistics.median(ratios):.2f}x",
                      f"{min(ratios):.2f}-{max(ratios):.2f}x")
    console.print(table)
    console.print(f"load average after {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
