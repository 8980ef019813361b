"""Build a training set from raw photos and videos: detect, align, crop, label.

The output folder holds ``crops/*.png``, ``aus.csv`` (path, source, score, 17 AUs) and
``manifest.json``. Progress is kept in an append-only journal (one fsynced JSON line per
finished source file or video frame), so a run killed at any moment loses at most the
unit in flight, and a rerun skips everything already done. ``aus.csv`` and the manifest
are rebuilt atomically from the journal, so they are never half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fgfem import __version__
from fgfem.atomic import atomic_path, write_text
from fgfem.aus import NUM_AUS
from fgfem.errors import FgfemError
from fgfem.tensor_images import to_uint8

JOURNAL_NAME = ".prep-journal.jsonl"
DATASET_FORMAT = "fgfem-dataset"
DATASET_VERSION = 1


@dataclass(frozen=True)
class PrepOptions:
    size: int = 128
    min_face: float = 40.0  # smallest accepted face, as its box side in source pixels
    backend: str = "auto"
    fps: float = 2.0  # frames sampled per second of video
    faces: str = "largest"  # "largest" or "all" faces of each photo
    labels: Path | None = None  # existing AU labels instead of the estimator
    workers: int = 1
    limit: int | None = None  # only the first N source files (tests, quick looks)
    # Skip the CNN check of doubtful dlib detections and scan a smaller copy: ~5x faster, finds ~80% of
    # the faces. Right for large face collections, where a missed face costs nothing but time matters.
    quick: bool = False

    def check(self) -> PrepOptions:
        """Refuse what no run can use before any file is read: a crop size the networks cannot take, no worker."""
        if self.size % 64 or self.size <= 0:
            raise FgfemError(f"--size {self.size}: use a multiple of 64 (128 or 256)")
        if self.workers < 1:
            raise FgfemError("--workers must be at least 1")
        return self


@dataclass
class PrepUnitResult:
    """What one source unit (a photo, or one frame of a video) contributed."""

    source: str
    rows: list[dict[str, object]] = field(default_factory=list)
    reject: str | None = None


@dataclass
class PrepSummary:
    out_dir: Path
    sources: int
    done_before: int
    processed: int
    faces: int
    rejects: int
    seconds: float

    @property
    def units_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0


# ---------------------------------------------------------------------------------------------- sources
def list_sources(raw: Path, limit: int | None = None) -> list[Path]:
    """Every image and video under ``raw`` (or ``raw`` itself), in a stable order."""
    from fgfem.media import describe_path, is_image, is_video

    if not raw.exists():
        raise FgfemError(f"input not found: {describe_path(raw)}")
    if raw.is_file():
        if not (is_image(raw) or is_video(raw)):
            raise FgfemError(f"{describe_path(raw)} is neither an image nor a video fgfem can read")
        files = [raw]
    else:
        files = []
        # os.walk with followlinks: a raw folder is often a set of links to datasets kept elsewhere.
        for folder, subfolders, names in os.walk(raw, followlinks=True):
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
            files.extend(Path(folder) / n for n in names if not n.startswith(".") and (is_image(n) or is_video(n)))
        files.sort()
        if not files:
            raise FgfemError(f"no images or videos found in {describe_path(raw)}")
    return files[:limit] if limit else files


def source_key(raw: Path, path: Path) -> str:
    """The name a source file is recorded under: its path relative to the raw folder."""
    base = raw if raw.is_dir() else raw.parent
    return path.relative_to(base).as_posix()


def crop_name(key: str, face_index: int) -> str:
    """A readable, collision-free file name for one crop of one source unit."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", key.rsplit(".", 1)[0])[-60:].strip("._") or "face"
    digest = hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"crops/{stem}-{digest}-f{face_index}.png"


# ---------------------------------------------------------------------------------------------- journal
def read_journal(out_dir: Path) -> dict[str, PrepUnitResult]:
    """Finished units by source key; a torn last line (a kill mid-write) is ignored."""
    journal = out_dir / JOURNAL_NAME
    done: dict[str, PrepUnitResult] = {}
    if not journal.exists():
        return done
    with open(journal, "rb") as handle:
        for raw_line in handle:
            try:
                unit = _journal_unit(json.loads(raw_line))
            except ValueError:
                continue
            if unit is not None and all((out_dir / str(row["path"])).is_file() for row in unit.rows):
                done[unit.source] = unit
    return done


def _journal_unit(record: object) -> PrepUnitResult | None:
    """A journal line as written by ``Journal.append``, or None for anything else (damaged or edited by hand).

    Everything ``write_outputs`` relies on is checked here, so a damaged line is redone
    instead of crashing every later run; crop paths must stay inside the dataset folder.
    """
    if not isinstance(record, dict) or not isinstance(record.get("source"), str):
        return None
    rows, reject = record.get("rows", []), record.get("reject")
    if not isinstance(rows, list) or not (reject is None or isinstance(reject, str)):
        return None
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("path"), str) or not isinstance(row.get("source"), str):
            return None
        path = Path(row["path"])
        if not row["path"] or path.is_absolute() or ".." in path.parts:
            return None
        score, aus = row.get("score"), row.get("aus")
        if isinstance(score, bool) or not isinstance(score, int | float) or not np.isfinite(score):
            return None
        if not isinstance(aus, list) or len(aus) != NUM_AUS:
            return None
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v) for v in aus):
            return None
    return PrepUnitResult(source=record["source"], rows=rows, reject=reject)


class Journal:
    """Append-only, fsynced log of finished units."""

    def __init__(self, out_dir: Path) -> None:
        self._path = out_dir / JOURNAL_NAME
        self._repair_torn_tail()
        self._handle = open(self._path, "ab")  # noqa: SIM115  (closed in close())

    def _repair_torn_tail(self) -> None:
        # A kill mid-append leaves a line without its newline; end it so the next record starts clean.
        if self._path.exists() and self._path.stat().st_size > 0:
            with open(self._path, "rb+") as handle:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    handle.write(b"\n")

    def append(self, unit: PrepUnitResult) -> None:
        self._handle.write(json.dumps(asdict(unit), ensure_ascii=False).encode("utf-8", "surrogateescape") + b"\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()


# ---------------------------------------------------------------------------------------------- work
class FaceCropper:
    """Detect -> select -> align -> crop -> label for one RGB frame; holds the loaded models."""

    def __init__(self, options: PrepOptions, labels: dict[str, np.ndarray] | None) -> None:
        from fgfem.faces import get_backend, resolve_backend_name

        self.options = options
        if options.quick and resolve_backend_name(options.backend) == "dlib":
            from fgfem.faces.dlib_backend import DlibBackend, DlibConfig

            self.backend = DlibBackend(DlibConfig(detect_size=480, verify=False, verify_when_none=True))
        else:
            self.backend = get_backend(options.backend)
        self.labels = labels

    def __call__(self, rgb: np.ndarray, key: str, out_dir: Path, label_key: str | None = None) -> PrepUnitResult:
        from PIL import Image

        from fgfem.au_reading.estimator import estimate_aus
        from fgfem.faces.align import align_faces, landmarks_in_crop

        faces = self.backend.detect(rgb)
        if not faces:
            return PrepUnitResult(source=key, reject="no face found")
        faces = [f for f in faces if _box_side(f.box) >= self.options.min_face]
        if not faces:
            return PrepUnitResult(source=key, reject=f"face smaller than --min-face {self.options.min_face:g} px")
        if self.options.faces == "largest":
            faces = faces[:1]
        label = None
        if self.labels is not None:
            label = _find_label(self.labels, label_key or key)
            if label is None:
                return PrepUnitResult(source=key, reject="no AU label for this file in --labels")
        aligned = align_faces(rgb, faces, size=self.options.size)
        crops = to_uint8(aligned.crops)
        result = PrepUnitResult(source=key)
        for index, (face, crop) in enumerate(zip(faces, crops, strict=True)):
            aus = label if label is not None else estimate_aus(face.landmarks)
            name = crop_name(key, index)
            with atomic_path(out_dir / name) as tmp:
                Image.fromarray(crop).save(tmp, format="PNG")
            in_crop = landmarks_in_crop(face, aligned.matrices[index])
            result.rows.append(
                {"path": name, "source": key, "score": round(float(face.score), 4),
                 "aus": [round(float(v), 4) for v in np.asarray(aus, dtype=np.float32)],
                 # Kept so that AUs can be re-estimated later (`relabel_dataset`) without detecting again.
                 "landmarks": np.round(in_crop, 2).tolist()}
            )
        return result


def _box_side(box: np.ndarray) -> float:
    return float(min(box[2] - box[0], box[3] - box[1]))


def _find_label(labels: dict[str, np.ndarray], key: str) -> np.ndarray | None:
    """Labels are keyed by id, file name or relative path depending on their origin: try all three."""
    name = key.rsplit("/", 1)[-1]
    for candidate in (key, name, name.rsplit(".", 1)[0], key.rsplit(".", 1)[0]):
        if candidate in labels:
            return np.asarray(labels[candidate], dtype=np.float32)
    return None


def _photo_unit(cropper: FaceCropper, path: Path, key: str, out_dir: Path) -> PrepUnitResult:
    from fgfem.media import load_image

    try:
        return cropper(load_image(path).rgb, key, out_dir)
    except FgfemError as problem:
        return PrepUnitResult(source=key, reject=str(problem))


def _video_units(
    cropper: FaceCropper, path: Path, key: str, out_dir: Path, fps: float, done: dict[str, PrepUnitResult]
) -> Iterator[PrepUnitResult]:
    """Results for the sampled frames of one video that are not done yet."""
    from fgfem.video import iter_frames, probe_video

    try:
        info = probe_video(path)
    except FgfemError as problem:
        yield PrepUnitResult(source=key, reject=str(problem))
        return
    stride = max(1, round(info.fps / fps)) if fps > 0 else 1
    for index, frame in enumerate(iter_frames(path)):
        unit_key = f"{key}#frame={index:06d}"
        if index % stride or unit_key in done:
            continue
        try:
            yield cropper(frame, unit_key, out_dir, label_key=f"{key}#{index}")
        except FgfemError as problem:
            yield PrepUnitResult(source=unit_key, reject=str(problem))


_WORKER: dict[str, object] = {}


def _init_worker(options: PrepOptions, labels: dict[str, np.ndarray] | None, out_dir: Path) -> None:
    import torch

    torch.set_num_threads(1)
    _WORKER["cropper"] = FaceCropper(options, labels)
    _WORKER["out_dir"] = out_dir


def _work_photo(item: tuple[str, str]) -> PrepUnitResult:
    key, path = item
    return _photo_unit(_WORKER["cropper"], Path(path), key, _WORKER["out_dir"])  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- driver
def build_dataset(
    raw: Path,
    out_dir: Path,
    options: PrepOptions,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> PrepSummary:
    """Prepare ``out_dir`` from ``raw``; rerunning continues where a previous run stopped."""
    started = time.perf_counter()
    files = list_sources(raw, options.limit)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_compatible(out_dir, options)
    _remove_stale_partials(out_dir)
    labels = _load_labels(options.labels)
    done = read_journal(out_dir)
    done_before = len(done)
    journal = Journal(out_dir)
    processed = 0
    total = len(files)
    finished_files = 0

    def record(unit: PrepUnitResult) -> None:
        nonlocal processed
        journal.append(unit)
        done[unit.source] = unit
        processed += 1

    def tick() -> None:
        nonlocal finished_files
        finished_files += 1
        if progress:
            progress(finished_files, total)

    from fgfem.media import is_video

    photos = [(source_key(raw, p), p) for p in files if not is_video(p)]
    videos = [(source_key(raw, p), p) for p in files if is_video(p)]
    pending = [(k, p) for k, p in photos if k not in done]
    for _ in range(len(photos) - len(pending)):
        tick()
    try:
        if options.workers > 1 and len(pending) > options.workers:
            import multiprocessing

            context = multiprocessing.get_context("spawn")
            with context.Pool(options.workers, initializer=_init_worker, initargs=(options, labels, out_dir)) as pool:
                for unit in pool.imap_unordered(_work_photo, [(k, str(p)) for k, p in pending], chunksize=8):
                    record(unit)
                    tick()
        else:
            cropper = FaceCropper(options, labels)
            for key, path in pending:
                record(_photo_unit(cropper, path, key, out_dir))
                tick()
        if videos:
            cropper = FaceCropper(options, labels)
            for key, path in videos:
                for unit in _video_units(cropper, path, key, out_dir, options.fps, done):
                    record(unit)
                tick()
    finally:
        journal.close()
        write_outputs(out_dir, done, options, seconds=time.perf_counter() - started, processed=processed)
    units = list(done.values())
    return PrepSummary(
        out_dir=out_dir,
        sources=total,
        done_before=done_before,
        processed=processed,
        faces=sum(len(u.rows) for u in units),
        rejects=sum(1 for u in units if u.reject),
        seconds=time.perf_counter() - started,
    )


def _remove_stale_partials(out_dir: Path) -> None:
    """Delete the temporary files of writes a killed run left half done (``.name.partial-*``, see atomic_path)."""
    for folder in (out_dir, out_dir / "crops"):
        if folder.is_dir():
            for stale in folder.glob(".*.partial-*"):
                stale.unlink(missing_ok=True)


def _load_labels(path: Path | None) -> dict[str, np.ndarray] | None:
    if path is None:
        return None
    from fgfem.prep.labels import read_labels

    labels = read_labels(path)
    bad = [k for k, v in labels.items() if np.asarray(v).shape != (NUM_AUS,)]
    if bad:
        raise FgfemError(f"--labels {path}: {len(bad)} entries do not hold {NUM_AUS} AUs (e.g. {bad[0]!r})")
    return labels


def _check_compatible(out_dir: Path, options: PrepOptions) -> None:
    """Refuse to mix crops of another size or template into an existing dataset."""
    from fgfem.faces.align import TEMPLATE_VERSION

    manifest_path = out_dir / "manifest.json"
    if not manifest_path.exists():
        return
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except ValueError:
        raise FgfemError(f"{manifest_path} is not valid JSON; remove it to rebuild from the journal") from None
    if not isinstance(manifest, dict):
        raise FgfemError(f"{manifest_path} is not an fgfem dataset manifest; remove it to rebuild from the journal")
    if manifest.get("size") != options.size or manifest.get("template") != TEMPLATE_VERSION:
        raise FgfemError(
            f"{out_dir} holds {manifest.get('size')} px crops ({manifest.get('template')}); "
            f"use another output folder for --size {options.size}"
        )


def write_outputs(
    out_dir: Path, done: dict[str, PrepUnitResult], options: PrepOptions, *, seconds: float, processed: int
) -> None:
    """Rewrite ``aus.csv`` and ``manifest.json`` from the journal, atomically."""
    from fgfem.faces.align import TEMPLATE_VERSION
    from fgfem.media import describe_path
    from fgfem.prep.labels import AURow, write_aus_csv

    units = sorted(done.values(), key=lambda u: u.source)
    rows = [
        AURow(path=str(r["path"]), source=describe_path(str(r["source"])),
              score=float(r["score"]), aus=np.asarray(r["aus"], dtype=np.float32))
        for u in units for r in u.rows
    ]
    write_aus_csv(out_dir / "aus.csv", rows)
    # non-UTF-8 source names (kept exactly in the journal) are \xNN-escaped here: both files stay valid UTF-8
    rejects = [{"source": describe_path(u.source), "reason": describe_path(u.reject)} for u in units if u.reject]
    manifest = {
        "format": DATASET_FORMAT,
        "version": DATASET_VERSION,
        "size": options.size,
        "template": TEMPLATE_VERSION,
        "backend": options.backend,
        "au_source": f"labels:{options.labels.name}" if options.labels else "fgfem estimator",
        "fgfem_version": __version__,
        "counts": {"units": len(units), "faces": len(rows), "rejects": len(rejects)},
        "last_run": {"processed": processed, "seconds": round(seconds, 2),
                     "units_per_second": round(processed / seconds, 3) if seconds > 0 else None},
        "rejects": rejects,
    }
    write_text(out_dir / "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


def relabel_dataset(out_dir: Path) -> int:
    """Re-estimate every crop's AUs from the landmarks kept in the journal; returns the rows changed.

    Lets a dataset follow an improved AU estimator without running detection again.
    """
    from fgfem.au_reading.estimator import estimate_aus

    done = read_journal(out_dir)
    manifest = json.loads((out_dir / "manifest.json").read_text(encoding="utf-8"))
    if str(manifest.get("au_source", "")).startswith("labels:"):
        raise FgfemError(f"{out_dir} uses AU labels from {manifest['au_source'][7:]}; there is nothing to re-estimate")
    changed = 0
    for unit in done.values():
        for row in unit.rows:
            if "landmarks" in row:
                row["aus"] = [round(float(v), 4) for v in estimate_aus(np.asarray(row["landmarks"], np.float32))]
                changed += 1
    rewritten = out_dir / (JOURNAL_NAME + ".new")
    with atomic_path(rewritten) as tmp:
        tmp.write_bytes(b"".join(
            json.dumps(asdict(u), ensure_ascii=False).encode("utf-8", "surrogateescape") + b"\n" for u in done.values()
        ))
    os.replace(rewritten, out_dir / JOURNAL_NAME)
    options = PrepOptions(size=int(manifest["size"]), backend=str(manifest.get("backend", "auto")))
    write_outputs(out_dir, done, options, seconds=0.0, processed=0)
    return changed
