"""Measure AU intensities on photos, folders and videos (the library side of ``fgfem aus``).

AUs come from 68 landmarks through the offline estimator, so this needs no network and no
OpenFace build. Videos reuse the face box of the previous frame and smooth the landmarks
over time, which both speeds things up and removes frame-to-frame jitter from the curves.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fgfem.atomic import write_text
from fgfem.aus import AU_CODES
from fgfem.errors import FgfemError
from fgfem.media import check_writable


@dataclass(frozen=True)
class AURecord:
    """AUs of one face in one image or video frame."""

    source: str
    frame: int | None  # None for photos
    face: int
    box: tuple[float, float, float, float]
    score: float
    aus: np.ndarray  # 17, OpenFace order, 0-5
    time_s: float | None = None


@dataclass(frozen=True)
class Skipped:
    source: str
    reason: str


def measure_image(rgb: np.ndarray, source: str, backend: object, which: str = "all") -> list[AURecord]:
    """AUs for the selected faces of one RGB image, left to right, each with its ``--face`` number.

    A face keeps the number it has among *all* faces of the image whatever ``which`` keeps, so
    ``aus --face 1`` reports the row that ``aus`` labels face 1, and ``edit --face 1`` edits it.
    """
    from fgfem.au_reading.estimator import estimate_aus
    from fgfem.faces import numbered_faces

    chosen = numbered_faces(backend.detect(rgb), which)  # type: ignore[attr-defined]
    if not chosen:
        return []
    aus = estimate_aus(np.stack([face.landmarks for _, face in chosen]))
    return [
        AURecord(source=source, frame=None, face=number, box=tuple(float(v) for v in face.box),  # type: ignore[arg-type]
                 score=float(face.score), aus=aus[row])
        for row, (number, face) in enumerate(chosen)
    ]


def measure_paths(
    paths: Sequence[Path], backend: object, which: str = "all", on_file: Callable[[Path], None] | None = None
) -> tuple[list[AURecord], list[Skipped]]:
    """AUs for a list of photos; unreadable files and photos without a face are reported, not fatal."""
    from fgfem.faces import no_face_message
    from fgfem.media import load_image

    records: list[AURecord] = []
    skipped: list[Skipped] = []
    for path in paths:
        if on_file:
            on_file(path)
        try:
            rgb = load_image(path).rgb
            found = measure_image(rgb, str(path), backend, which)
        except FgfemError as problem:
            skipped.append(Skipped(str(path), str(problem)))
            continue
        if not found:
            skipped.append(Skipped(str(path), no_face_message(backend, rgb)))  # type: ignore[arg-type]
        records.extend(found)
    return records, skipped


def measure_video(
    path: Path, backend: object, *, redetect_every: int = 15, on_frame: Callable[[int], None] | None = None
) -> Iterator[AURecord]:
    """One record per frame with a face (the largest), landmarks smoothed over time.

    ``time_s`` is the frame's presentation time on the file's timeline (from the decoder,
    not ``index / fps``): a variable-rate clip or one whose video starts after its audio
    gets the times a player shows, and the smoother sees the true intervals.
    """
    from fgfem.au_reading.estimator import estimate_aus
    from fgfem.faces.smoothing import OneEuroFilter
    from fgfem.video import iter_frames, probe_video

    info = probe_video(path)
    timing = info.timing
    assert timing is not None  # an exact probe always records it
    smoother = OneEuroFilter()
    box: np.ndarray | None = None
    for index, frame in enumerate(iter_frames(path)):
        if on_frame:
            on_frame(index)
        faces = []
        if box is not None and index % redetect_every:
            faces = backend.landmarks_for_boxes(frame, [box])  # type: ignore[attr-defined]
        if not faces:
            faces = backend.detect(frame)[:1]  # type: ignore[attr-defined]
        if not faces:
            box = None
            smoother.reset()
            continue
        face = faces[0]
        box = face.box
        time_s = timing.time_of(index)
        landmarks = smoother(face.landmarks, time_s)
        yield AURecord(
            source=str(path), frame=index, face=0, box=tuple(float(v) for v in face.box),  # type: ignore[arg-type]
            score=float(face.score), aus=estimate_aus(landmarks), time_s=time_s,
        )


Steps = Callable[[str, int, "int | None"], None]
"""Progress of ``measure_source``: what is counted ("frames" or "photos"), how many so far, of how many."""


def check_measure(source: Path, out: Path | None, plot: Path | None, *, force: bool) -> None:
    """What ``fgfem aus`` refuses before it measures: a missing input, outputs it may not write, --plot of photos."""
    from fgfem.media import describe_path, is_video

    if not source.exists():
        raise FgfemError(f"input not found: {describe_path(source)}")
    for target in (out, plot):
        if target is not None:
            check_writable(target, force=force)  # before the measuring: exists, or a read-only folder
    if plot is not None and not (source.is_file() and is_video(source)):
        raise FgfemError("--plot draws AU curves over time and needs a video")


def measure_source(source: Path, backend: object, which: str = "all", *,
                   on_step: Steps | None = None) -> tuple[list[AURecord], list[Skipped]]:
    """AUs of a photo, a folder of photos or a video; an error when no face is found anywhere in it.

    A video gives one record per frame with a face (the largest). Photos that cannot be read
    or show no face are skipped with the reason, unless every one is (then the reason is the error).
    """
    from fgfem.media import describe_path, is_video, iter_image_files

    step = on_step or (lambda _what, _done, _total: None)
    if source.is_file() and is_video(source):
        records = list(measure_video(source, backend, on_frame=lambda index: step("frames", index + 1, None)))
        if not records:
            raise FgfemError(f"no face found in any frame of {describe_path(source)}")
        return records, []
    paths = iter_image_files(source)
    started = 0

    def on_file(_path: Path) -> None:
        nonlocal started
        started += 1
        step("photos", started, len(paths))

    records, skipped = measure_paths(paths, backend, which, on_file=on_file)
    if not records:
        raise FgfemError(skipped[0].reason if len(skipped) == 1 else f"no face in any of {len(paths)} files")
    return records, skipped


def records_to_csv(records: Sequence[AURecord]) -> str:
    """CSV text; file names that are not UTF-8 are written \\xNN-escaped so the file stays valid UTF-8."""
    from fgfem.media import describe_path

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["source", "frame", "time_s", "face", "x0", "y0", "x1", "y1", "score", *AU_CODES])
    for r in records:
        writer.writerow([
            describe_path(r.source), "" if r.frame is None else r.frame,
            "" if r.time_s is None else f"{r.time_s:.4f}", r.face,
            *(f"{v:.1f}" for v in r.box), f"{r.score:.4f}", *(f"{v:.4f}" for v in r.aus),
        ])
    return buffer.getvalue()


def records_to_json(records: Sequence[AURecord], low_confidence: Sequence[str]) -> str:
    items = [
        {"source": r.source, "frame": r.frame, "time_s": r.time_s, "face": r.face, "box": list(r.box),
         "score": r.score, "aus": {code: round(float(v), 4) for code, v in zip(AU_CODES, r.aus, strict=True)}}
        for r in records
    ]
    return json.dumps({"au_order": list(AU_CODES), "low_confidence": list(low_confidence), "faces": items}, indent=2)


def write_records(records: Sequence[AURecord], out: Path, low_confidence: Sequence[str], *, force: bool) -> None:
    """Write ``.csv`` or ``.json`` atomically; refuse to overwrite without ``force``."""
    check_writable(out, force=force)
    suffix = out.suffix.lower()
    if suffix == ".csv":
        write_text(out, records_to_csv(records))
    elif suffix == ".json":
        write_text(out, records_to_json(records, low_confidence))
    else:
        raise FgfemError(f"-o {out}: use a .csv or .json file name")


def plot_curves(records: Sequence[AURecord], out: Path, *, force: bool, codes: Sequence[str] | None = None) -> None:
    """AU intensity over time as a PNG, drawn with PIL (no plotting library needed)."""
    from PIL import Image, ImageDraw, ImageFont

    from fgfem.atomic import atomic_path

    check_writable(out, force=force)
    if not records:
        raise FgfemError("no face in any frame: nothing to plot")
    codes = list(codes or ("AU01", "AU04", "AU06", "AU12", "AU15", "AU25", "AU26", "AU45"))
    index = [AU_CODES.index(c) for c in codes]
    times = np.array([r.time_s if r.time_s is not None else r.frame or 0 for r in records], dtype=np.float64)
    values = np.stack([r.aus[index] for r in records])
    width, row_h, left, pad = 900, 70, 60, 8
    height = row_h * len(codes) + 30
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    span = max(times.max() - times.min(), 1e-6)
    for row, code in enumerate(codes):
        top = row * row_h + pad
        bottom = top + row_h - 2 * pad
        draw.rectangle([left, top, width - pad, bottom], outline=(200, 200, 200))
        draw.text((4, top + (row_h - 2 * pad) // 2 - 6), code, fill="black", font=font)
        xs = left + (times - times.min()) / span * (width - pad - left)
        ys = bottom - np.clip(values[:, row], 0, 5) / 5 * (bottom - top)
        draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=(30, 90, 200), width=2)
    draw.text((left, height - 20), f"time 0 - {times.max():.1f} s, AU 0-5 per row", fill="black", font=font)
    with atomic_path(out) as tmp:
        image.save(tmp, format="PNG")
