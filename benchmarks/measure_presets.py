"""Measure the emotion presets of ``fgfem serve`` and ``--expression`` on real posed faces.

    python benchmarks/measure_presets.py                     # print the measured profiles
    python benchmarks/measure_presets.py --cache lm.npz      # keep landmarks between runs
    python benchmarks/measure_presets.py --write             # rewrite fgfem/preset_profiles.py + README table

Source: the Taiwanese facial expression database in ``$FGFEM_SHARED/data/taiwanese``
(front view, 20 performers, each with neutral and posed photos). For every posed photo
the AUs of the same performer's neutral photos (their mean) are subtracted, so the
profile is the change a person makes, not anyone's resting face. Each performer counts
once: the per-performer mean change is averaged over performers. AUs come from the
landmark estimator ``fgfem.au_reading.estimator.estimate_aus`` on dlib's 68 landmarks of
the largest face, the same readout ``fgfem serve`` shows and ``fgfem edit`` measures.

A preset keeps an AU only where the change is clear: |mean| >= ``MIN_CHANGE`` and at
least ``MIN_AGREE`` of the performers move it the same way; the rest are set to 0
(noise of the estimator, not part of the expression). ``neutral`` is different: it is
the *absolute* AUs of the neutral photos (their mean over performers), a target that
removes whatever expression the source face has.

The estimator is being re-fitted from time to time; landmarks do not change with it, so
``--cache`` makes a re-measurement after a re-fit take seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
import textwrap
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from fgfem.atomic import atomic_path, write_text
from fgfem.aus import AU_CODES
from fgfem.paths import SOURCE_ROOT, shared_dir

EMOTIONS = {"b": "happy", "c": "sad", "d": "anger", "e": "disgust", "f": "fear", "g": "surprise"}
ORDER = ("happy", "sad", "surprise", "anger", "disgust", "fear")
# PP performer, T type (0 neutral, 1-3 posed), V view (1 front), E expression a-g, SS serial.
NAME = re.compile(r"^(?P<person>\d\d)(?P<type>\d)(?P<view>1)(?P<expr>[a-g])\d\d\.jpg$")
MIN_CHANGE = 0.10
MIN_AGREE = 0.70
PROFILES_FILE = SOURCE_ROOT / "fgfem" / "preset_profiles.py"
README = SOURCE_ROOT / "README.md"
TABLE_START, TABLE_END = "<!-- presets:start -->", "<!-- presets:end -->"


def find_photos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.jpg") if NAME.match(p.name))


def landmarks_of(paths: list[Path], cache: Path | None) -> dict[str, np.ndarray]:
    """68x2 dlib landmarks of the largest face per photo name (NaN where no face was found)."""
    from PIL import Image

    from fgfem.faces import detect_faces, get_backend

    store: dict[str, np.ndarray] = {}
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as npz:
            store = {k: npz[k] for k in npz.files}
    missing = [p for p in paths if p.name not in store]
    if missing:
        backend = get_backend("dlib")
        for path in missing:
            with Image.open(path) as image:
                rgb = np.asarray(image.convert("RGB"))
            faces = detect_faces(backend, rgb, "largest")
            store[path.name] = (np.asarray(faces[0].landmarks, np.float32) if faces
                                else np.full((68, 2), np.nan, np.float32))
        if cache is not None:
            with atomic_path(cache) as tmp, open(tmp, "wb") as handle:
                np.savez(handle, **store)
    return {p.name: store[p.name] for p in paths}


def measure(landmarks: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Per emotion: mean change over performers, agreement, performer and photo counts; plus neutral."""
    from fgfem.au_reading.estimator import estimate_aus

    names = [n for n, lm in landmarks.items() if np.isfinite(lm).all()]
    aus = dict(zip(names, np.asarray(estimate_aus(np.stack([landmarks[n] for n in names])), np.float64),
                   strict=True))
    neutral: dict[str, list[np.ndarray]] = defaultdict(list)
    posed: dict[str, dict[str, list[np.ndarray]]] = defaultdict(lambda: defaultdict(list))
    for name in names:
        match = NAME.match(name)
        assert match is not None
        if match["expr"] == "a":
            neutral[match["person"]].append(aus[name])
        else:
            posed[EMOTIONS[match["expr"]]][match["person"]].append(aus[name])
    rest = {person: np.mean(rows, axis=0) for person, rows in neutral.items()}
    out: dict[str, dict[str, np.ndarray]] = {}
    for emotion in ORDER:
        per_person = np.stack([np.mean(rows, axis=0) - rest[person]
                               for person, rows in sorted(posed[emotion].items()) if person in rest])
        mean = per_person.mean(axis=0)
        agree = (np.sign(per_person) == np.sign(mean)).mean(axis=0)
        photos = sum(len(rows) for person, rows in posed[emotion].items() if person in rest)
        out[emotion] = {"mean": mean, "agree": agree, "performers": np.array(len(per_person)),
                        "photos": np.array(photos)}
    out["neutral"] = {"mean": np.mean(np.stack(list(rest.values())), axis=0),
                      "performers": np.array(len(rest)), "photos": np.array(sum(len(r) for r in neutral.values()))}
    return out


def preset_of(row: dict[str, np.ndarray]) -> np.ndarray:
    keep = (np.abs(row["mean"]) >= MIN_CHANGE) & (row["agree"] >= MIN_AGREE)
    return np.where(keep, np.round(row["mean"], 2), 0.0)


def markdown_table(measured: dict[str, dict[str, np.ndarray]]) -> str:
    """The README table: one row per preset, the AUs it moves (neutral: its absolute targets)."""
    lines = ["| preset | AU changes (relative, 0-5 scale) | performers / photos |", "|---|---|---|"]
    for emotion in ORDER:
        row = measured[emotion]
        values = preset_of(row)
        cells = ", ".join(f"{AU_CODES[k]} {values[k]:+.2f}" for k in np.argsort(-np.abs(values)) if values[k])
        lines.append(f"| {emotion} | {cells or '(none clear)'} | {int(row['performers'])} / {int(row['photos'])} |")
    neutral = measured["neutral"]
    order = np.argsort(-neutral["mean"])
    targets = ", ".join(f"{AU_CODES[k]} {neutral['mean'][k]:.2f}" for k in order if neutral["mean"][k] >= MIN_CHANGE)
    lines.append(f"| neutral | absolute targets, every AU set to the neutral photos' mean ({targets or 'none'} "
                 f"ordered high to low; the others below {MIN_CHANGE:.2f}) "
                 f"| {int(neutral['performers'])} / {int(neutral['photos'])} |")
    return "\n".join(lines)


def print_report(measured: dict[str, dict[str, np.ndarray]]) -> None:
    print("mean AU change over the same performer's neutral photos (agreement of performers in brackets)")
    print(f"{'emotion':9s} " + " ".join(f"{c[2:]:>10s}" for c in AU_CODES))
    for emotion in ORDER:
        row = measured[emotion]
        print(f"{emotion:9s} " + " ".join(f"{m:+5.2f} [{a:3.0%}]".replace("[100%]", "[all]")
                                          for m, a in zip(row["mean"], row["agree"], strict=True)))
    print(f"{'neutral':9s} " + " ".join(f"{m:10.2f}" for m in measured["neutral"]["mean"]) + "  (absolute)")
    print(f"\npresets (|change| >= {MIN_CHANGE}, >= {MIN_AGREE:.0%} of performers agree):\n")
    print(markdown_table(measured))


def calibration_sha256() -> str:
    """Fingerprint of the AU estimator's fitted constants the profiles were measured with."""
    from fgfem.au_reading.estimator import CALIBRATION_FILE

    return hashlib.sha256(CALIBRATION_FILE.read_bytes()).hexdigest()


def write_profiles(measured: dict[str, dict[str, np.ndarray]]) -> Path:
    def fmt(values: np.ndarray, indent: int = 8) -> str:
        pad = " " * indent
        body = textwrap.fill(" ".join(f"{0.0 if abs(v) < 1e-9 else v:.2f}," for v in values), width=96,
                             initial_indent=pad, subsequent_indent=pad)
        return "(\n" + body + "\n" + " " * (indent - 4) + ")"

    lines = [
        '"""Measured AU profiles of the emotion presets (``fgfem.presets``).',
        "",
        "Generated by ``python benchmarks/measure_presets.py --write``; do not edit by hand. RELATIVE: the",
        "change of each AU (``AU_CODES`` order, 0-5 scale) from a performer's neutral photos to their posed",
        f"ones, averaged over performers; AUs below {MIN_CHANGE} or moved the same way by fewer than",
        f"{MIN_AGREE:.0%} of the performers are 0. NEUTRAL_TARGET: the absolute AUs of the neutral photos.",
        '"""',
        "",
        "RELATIVE: dict[str, tuple[float, ...]] = {",
        *(f'    "{emotion}": {fmt(preset_of(measured[emotion]))},' for emotion in ORDER),
        "}",
        f"NEUTRAL_TARGET: tuple[float, ...] = {fmt(np.clip(measured['neutral']['mean'], 0, 5), 4)}",
        "# sha256 of fgfem/au_reading/calibration.py when measured: the presets are stale once the estimator changes.",
        f'CALIBRATION_SHA256 = "{calibration_sha256()}"',
        "MEASURED_ON = {  # performers, photos",
        *(f'    "{e}": ({int(measured[e]["performers"])}, {int(measured[e]["photos"])}),' for e in (*ORDER, "neutral")),
        "}",
        "",
    ]
    write_text(PROFILES_FILE, "\n".join(lines))
    return PROFILES_FILE


def write_readme_table(measured: dict[str, dict[str, np.ndarray]]) -> bool:
    text = README.read_text(encoding="utf-8")
    if TABLE_START not in text or TABLE_END not in text:
        return False
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    write_text(README, f"{head}{TABLE_START}\n{markdown_table(measured)}\n{TABLE_END}{tail}")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, help="npz file keeping the landmarks between runs")
    parser.add_argument("--write", action="store_true", help="rewrite fgfem/preset_profiles.py and the README table")
    args = parser.parse_args(argv)
    folder = shared_dir() / "data" / "taiwanese"
    if not folder.is_dir():
        print(f"taiwanese photos not found at {folder} (set FGFEM_SHARED)", file=sys.stderr)
        return 2
    start = time.time()
    paths = find_photos(folder)
    landmarks = landmarks_of(paths, args.cache)
    found = sum(np.isfinite(lm).all() for lm in landmarks.values())
    print(f"{found} of {len(paths)} front-view photos with a face, landmarks in {time.time() - start:.0f}s\n")
    measured = measure(landmarks)
    print_report(measured)
    if args.write:
        print(f"\nwrote {write_profiles(measured)}")
        print("rewrote the README table" if write_readme_table(measured) else "README has no preset table markers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
