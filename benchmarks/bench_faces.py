"""Face pipeline timings on the real samples at several image sizes: detection, landmarks,
alignment and paste-back, in milliseconds (median of ``--repeat`` runs).

Each photo is rescaled so that its long side is each of ``--sizes`` (the original pixels
are kept as they are where the size equals the original). Columns:

- ``detect``: ``backend.detect`` (find + 68 landmarks for every face), the cost of a still image;
- ``lmk/face``: ``landmarks_for_boxes`` per face, the per-frame cost of video tracking;
- ``align``: ``align_faces`` at ``--crop`` px for all faces;
- ``paste``: ``paste_back`` in delta mode for all faces (a real edit: the crops tinted).

Reports both wall and CPU time, so numbers from a busy shared machine can be read.

    python benchmarks/bench_faces.py                          # dlib, 512/1024/2048/4096 px
    python benchmarks/bench_faces.py --threads 1 --repeat 5
    python benchmarks/bench_faces.py --backend fan --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fgfem.faces import get_backend
from fgfem.faces.align import align_faces
from fgfem.faces.paste import paste_back
from fgfem.media import load_image
from fgfem.paths import shared_dir

SAMPLES = ("pyfeat/single_face.jpg", "pyfeat/0-f1-su-ph.jpg", "pyfeat/multi_face.jpg",
           "misc/insightface_t1.jpg", "misc/astronaut.png", "pyfeat/free-mountain-vector-01.jpg")


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float, object]:
    """Median wall and CPU milliseconds of ``fn`` and its last result."""
    walls, cpus, result = [], [], None
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        result = fn()
        walls.append((time.perf_counter() - w) * 1000)
        cpus.append((time.process_time() - c) * 1000)
    return statistics.median(walls), statistics.median(cpus), result


def rescaled(rgb: np.ndarray, long_side: int) -> np.ndarray:
    scale = long_side / max(rgb.shape[:2])
    if abs(scale - 1) < 1e-3:
        return rgb
    size = (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BICUBIC))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="dlib", help="dlib, fan or auto")
    parser.add_argument("--device", default="cpu", help="device for the fan backend")
    parser.add_argument("--sizes", default="512,1024,2048,4096", help="long sides in px, comma-separated")
    parser.add_argument("--crop", type=int, default=128, help="crop size for align/paste (128 or 256)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--samples", default=",".join(SAMPLES), help="paths under shared data/samples")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root = shared_dir() / "data" / "samples"
    if not root.is_dir():
        raise SystemExit(f"shared samples not found at {root} (set FGFEM_SHARED)")

    start = time.perf_counter()
    backend = get_backend(args.backend, device=args.device)
    print(f"backend {backend.name}: loaded in {(time.perf_counter() - start) * 1000:.0f} ms; "
          f"torch threads {torch.get_num_threads()}; crop {args.crop} px; median of {args.repeat}")
    header = (f"{'photo':<28}{'px':>6}{'faces':>6}{'detect':>9}{'(cpu)':>8}{'lmk/face':>10}"
              f"{'align':>8}{'paste':>8}")
    print(header)
    print("-" * len(header))
    for name in args.samples.split(","):
        original = load_image(root / name).rgb
        for long_side in (int(s) for s in args.sizes.split(",")):
            rgb = rescaled(original, long_side)
            wall, cpu, faces = timed(lambda rgb=rgb: backend.detect(rgb), args.repeat)
            assert isinstance(faces, list)
            row = f"{Path(name).name[:27]:<28}{long_side:>6}{len(faces):>6}{wall:>9.0f}{cpu:>8.0f}"
            if faces:
                boxes = [f.box for f in faces]
                lmk, _, _ = timed(lambda rgb=rgb, boxes=boxes: backend.landmarks_for_boxes(rgb, boxes), args.repeat)
                align, _, aligned = timed(lambda rgb=rgb, faces=faces: align_faces(rgb, faces, args.crop),
                                          args.repeat)
                edited = aligned.crops + torch.tensor([0.2, 0.0, -0.1]).view(1, 3, 1, 1)  # type: ignore[union-attr]
                paste, _, _ = timed(lambda rgb=rgb, aligned=aligned, edited=edited: paste_back(
                    rgb, edited, aligned.crops, aligned), args.repeat)  # type: ignore[union-attr]
                row += f"{lmk / len(faces):>10.1f}{align:>8.1f}{paste:>8.1f}"
            print(row, flush=True)


if __name__ == "__main__":
    main()
