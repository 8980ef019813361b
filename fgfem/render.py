"""Editing videos: follow the face from frame to frame, edit frames in batches, keep the audio.

A ``FaceTracker`` fits landmarks in the previous frame's box instead of running a full
detection on every frame (re-detecting every few frames, after a scene cut or when the
face jumps), and smooths them over time with a One-Euro filter so the crops, and
therefore the edits, do not jitter. Frames are then edited by the same ``Editor`` as
photos, several at a time.

``render_video`` runs the edit as a pipeline (``fgfem.pipeline``): ffmpeg decodes in its
own process, the tracker, the rig geometry, the generator and the full-resolution
compositing each run in a thread, and x264 encodes in another process, joined by queues
of about one batch, so that on 2 cores neither core waits for the other's stage. Each
stage is the same generator function the sequential path chains in one thread
(``pipeline=False``): same frames, same order, same batches, same output.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fgfem.aus import NUM_AUS
from fgfem.editor import DrivenChange, Editor, EditSpec, as_tensor, check_mode
from fgfem.errors import FgfemError, NoFaceError
from fgfem.faces.base import box_iou
from fgfem.pipeline import Pipeline, Stage, chain_stages, default_compute_threads, limited_threads

if TYPE_CHECKING:
    from fgfem.faces import Face, FaceBackend
def frame_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two frames on a coarse grid: a cheap scene-cut detector."""
    step = max(1, min(a.shape[0], a.shape[1]) // 64)
    return float(np.mean(np.abs(a[::step, ::step].astype(np.int16) - b[::step, ::step].astype(np.int16))))


def box_of(points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return np.concatenate([pts.min(axis=0), pts.max(axis=0)])


@dataclass
class TrackerConfig:
    """How ``FaceTracker`` trades speed for robustness.

    A full detection runs on the first frame, every ``redetect_every`` frames, after a
    scene cut (mean frame difference above ``cut_threshold`` grey levels) and whenever
    the tracked landmarks jump away from the previous box (IoU below ``min_iou``).
    """

    face: str = "largest"
    redetect_every: int = 10
    cut_threshold: float = 30.0
    min_iou: float = 0.3
    smooth: bool = True
    fps: float = 25.0


@dataclass
class _Track:
    """One followed face: its landmark box, and the detector's box in units of that box.

    Backends fit landmarks best inside the kind of box their own detector draws, so the
    box handed to ``landmarks_for_boxes`` is the detector's box carried along with the
    landmarks (same offset and scale relative to them), not the landmark extent itself.
    """

    box: np.ndarray
    detector_offset: np.ndarray
    smoother: Any

    @staticmethod
    def offset_of(detector_box: np.ndarray, landmark_box: np.ndarray) -> np.ndarray:
        centre, side = _centre_side(landmark_box)
        return (np.asarray(detector_box[:4], dtype=np.float64) - np.tile(centre, 2)) / side

    def detector_box(self) -> np.ndarray:
        centre, side = _centre_side(self.box)
        return np.tile(centre, 2) + self.detector_offset * side


def _centre_side(box: np.ndarray) -> tuple[np.ndarray, float]:
    box = np.asarray(box, dtype=np.float64)
    return (box[:2] + box[2:4]) / 2, float(max(box[2] - box[0], box[3] - box[1], 1.0))


class FaceTracker:
    """Faces in consecutive video frames, with temporally smoothed landmarks.

    Between detections the face is *followed*: the landmark model runs inside the box of
    the previous frame's landmarks, which costs a fraction of a detection. Smoothing is
    a One-Euro filter per face (``fgfem.faces.smoothing``), reset whenever a face is
    re-acquired so that it never drags landmarks across a cut.
    """

    def __init__(self, backend: FaceBackend, config: TrackerConfig | None = None) -> None:
        self.backend = backend
        self.config = config or TrackerConfig()
        self.tracks: list[_Track] = []
        self.previous: np.ndarray | None = None
        self.index = 0
        self.detections = 0

    def _detect(self, rgb: np.ndarray) -> list[Face]:
        from fgfem.faces import detect_faces

        self.detections += 1
        return detect_faces(self.backend, rgb, self.config.face)

    def _new_smoother(self) -> Any:
        if not self.config.smooth:
            return None
        from fgfem.faces.smoothing import OneEuroFilter

        return OneEuroFilter(freq=self.config.fps)

    def update(self, rgb: np.ndarray) -> list[Face]:
        """The faces of the next frame (empty when there is none), landmarks smoothed."""
        cfg = self.config
        cut = self.previous is not None and frame_difference(rgb, self.previous) > cfg.cut_threshold
        due = self.index % max(1, cfg.redetect_every) == 0
        self.previous = rgb
        self.index += 1
        faces: list[Face] = []
        if self.tracks and not cut and not due:
            faces = list(self.backend.landmarks_for_boxes(rgb, [t.detector_box() for t in self.tracks]))
            lost = len(faces) != len(self.tracks) or any(
                not np.all(np.isfinite(f.landmarks)) or box_iou(box_of(f.landmarks), t.box) < cfg.min_iou
                for f, t in zip(faces, self.tracks, strict=True)
            )
            if lost:
                faces = []
                self.tracks = []
        if not faces:
            faces = self._detect(rgb)
            self._match(faces, reset=cut)
        return [self._smooth(f, t) for f, t in zip(faces, self.tracks, strict=True)]

    def _match(self, faces: list[Face], *, reset: bool) -> None:
        """Pair fresh detections with existing tracks (by box overlap) to keep their smoothing state."""
        old = [] if reset else self.tracks
        tracks: list[_Track] = []
        for face in faces:
            box = box_of(face.landmarks)
            best = max(old, key=lambda t: box_iou(t.box, box), default=None)
            offset = _Track.offset_of(face.box, box)
            if best is not None and box_iou(best.box, box) >= self.config.min_iou:
                old = [t for t in old if t is not best]
                best.detector_offset = offset
                tracks.append(best)
            else:
                tracks.append(_Track(box=box, detector_offset=offset, smoother=self._new_smoother()))
        self.tracks = tracks

    def _smooth(self, face: Face, track: _Track) -> Face:
        """Smooth the landmarks; the track follows the *raw* landmarks so smoothing lag never loses the face."""
        raw = np.asarray(face.landmarks, dtype=np.float32)
        track.box = box_of(raw)
        if track.smoother is None:
            return face
        landmarks = np.asarray(track.smoother(raw, self.index / self.config.fps), dtype=np.float32)
        return dataclasses.replace(face, landmarks=landmarks)


@dataclass
class FrameEdit:
    """One output frame: the picture and whether a face was edited in it."""

    rgb: np.ndarray
    faces: int


def edit_frames(
    editor: Editor,
    frames: Iterable[np.ndarray],
    spec_for_frame: Callable[[int], EditSpec],
    *,
    tracker: FaceTracker | None = None,
    batch: int = 8,
    mode: str = "delta",
    intensity: float = 1.0,
    pipeline: bool = False,
) -> Iterator[FrameEdit]:
    """Edit a stream of frames, ``batch`` frames per generator call; frames without a face pass unchanged.

    ``spec_for_frame(i)`` gives the edit for frame ``i`` (a fixed ``--au`` edit, or a
    driver's per-frame change). The returned frames are the input arrays themselves when
    no face was found, so "unchanged" is exact before the encoder.

    ``pipeline`` runs the three stages (``edit_stages``) in threads joined by bounded
    queues, so the tracker, the model and the compositing overlap: the same frames, in the
    same order, computed by the same calls on the same batches.
    """
    check_mode(mode)
    tracker = tracker or FaceTracker(editor.backend)
    stages = edit_stages(editor, spec_for_frame, tracker=tracker, batch=batch, mode=mode, intensity=intensity)
    if not pipeline:
        yield from chain_stages(frames, stages)
        return
    with Pipeline(frames, stages) as running:
        yield from running


def edit_stages(
    editor: Editor,
    spec_for_frame: Callable[[int], EditSpec],
    *,
    tracker: FaceTracker,
    batch: int = 8,
    mode: str = "delta",
    intensity: float = 1.0,
) -> list[Stage]:
    """The edit as four stages: track, geometry (align, rig fields, crop warp), model (one call per batch), compose.

    Why these cuts: the tracker is stateful and must see frames in order; the generator
    wants whole batches; compositing at full resolution is per frame; and no stage holds
    much more than a quarter of the CPU work (measured per frame of 720p, one thread each:
    track ~8 ms, geometry ~17, model ~18, compose ~19), so on a busy machine, where every
    thread gets its share of the cores, no single one is left to do most of it. Each queue
    holds about one batch: batch n + 1 is prepared while the model runs batch n and batch
    n - 1 is composited.
    """
    size = max(1, batch)
    return [
        Stage("track", lambda frames: _track_stage(editor, frames, spec_for_frame, tracker), size),
        Stage("geometry", lambda tracked: (_prepare(editor, *item, intensity) for item in tracked), size),
        Stage("model", lambda prepared: _model_stage(editor, prepared, size, intensity), 1),
        Stage("compose", lambda batches: _compose_stage(editor, batches, mode), size),
    ]


@dataclass
class _Prepared:
    """One frame ready for the generator: its faces, their AU changes, crops and rig fields (no face: None)."""

    rgb: np.ndarray
    faces: list[Face]
    deltas: np.ndarray
    changes: np.ndarray | None = None
    aligned: Any = None
    fields: list[Any] = dataclasses.field(default_factory=list)
    crops: torch.Tensor | None = None


@dataclass
class _Generated:
    """A batch of prepared frames and the generator's edit and reference for all their faces, in order."""

    frames: list[_Prepared]
    edited: torch.Tensor | None = None
    reference: torch.Tensor | None = None


def _track_stage(editor: Editor, frames: Iterable[np.ndarray], spec_for_frame: Callable[[int], EditSpec],
                 tracker: FaceTracker) -> Iterator[tuple[np.ndarray, list[Face], np.ndarray, np.ndarray | None]]:
    """Follow the faces frame by frame: each frame, its faces, their AU changes (F x 17, intensity 1)
    and, for a target through the rig, the changes the rig plays (``Editor.rig_changes``)."""
    for index, rgb in enumerate(frames):
        faces = tracker.update(rgb)
        if not faces:
            yield rgb, faces, np.zeros((0, NUM_AUS), np.float32), None
            continue
        spec = spec_for_frame(index)
        deltas = editor.deltas_for(spec, editor.measure_aus(faces))
        yield rgb, faces, deltas, editor.rig_changes(spec, faces, deltas)


def _prepare(editor: Editor, rgb: np.ndarray, faces: list[Face], deltas: np.ndarray,
             changes: np.ndarray | None, intensity: float) -> _Prepared:
    """Align the frame's faces, move them by the rig (fields at this intensity) and warp their crops."""
    from fgfem.rig.field import warp_crops

    if not faces:
        return _Prepared(rgb=rgb, faces=faces, deltas=deltas)
    aligned = editor.align(rgb, faces)
    fields = editor.geometry(aligned, deltas * np.float32(intensity),
                             None if changes is None else changes * intensity)
    crops = warp_crops(as_tensor(aligned.crops, editor.device.device), fields)
    return _Prepared(rgb=rgb, faces=faces, deltas=deltas, changes=changes, aligned=aligned, fields=fields,
                     crops=crops)


def _model_stage(editor: Editor, prepared: Iterable[_Prepared], batch: int,
                 intensity: float) -> Iterator[_Generated]:
    """The generator's appearance on every face of ``batch`` consecutive frames at once."""
    group: list[_Prepared] = []
    for frame in prepared:
        group.append(frame)
        if len(group) >= batch:
            yield _appear(editor, group, intensity)
            group = []
    if group:
        yield _appear(editor, group, intensity)


def _appear(editor: Editor, frames: list[_Prepared], intensity: float) -> _Generated:
    """One generator call over the warped crops of all faces of ``frames`` (none when no frame has a face)."""
    crops = [f.crops for f in frames if f.crops is not None]
    if not crops:
        return _Generated(frames=frames)
    deltas = np.concatenate([f.deltas for f in frames if f.faces]) * np.float32(intensity)
    edited, reference = editor.appearance(torch.cat(crops), deltas)
    return _Generated(frames=frames, edited=edited, reference=reference)


def _compose_stage(editor: Editor, batches: Iterable[_Generated], mode: str) -> Iterator[FrameEdit]:
    """Each frame warped at full resolution by its rig fields with the generator's change pasted."""
    for generated in batches:
        start = 0
        for frame in generated.frames:
            if frame.aligned is None:
                yield FrameEdit(rgb=frame.rgb, faces=0)
                continue
            assert generated.edited is not None and generated.reference is not None
            stop = start + len(frame.faces)
            out = editor.compose(frame.rgb, frame.aligned, frame.fields, generated.edited[start:stop],
                                 generated.reference[start:stop], mode=mode, resample="cubic")  # per-frame cost
            start = stop
            yield FrameEdit(rgb=out, faces=len(frame.faces))


@dataclass
class RenderStats:
    """What a video render did, for the summary line and tests."""

    frames: int = 0
    edited: int = 0
    detections: int = 0
    seconds: float = 0.0
    notes: list[str] = dataclasses.field(default_factory=list)
    """What the output could not keep as it was (odd size padded, audio cut, ...), for the summary line."""

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def driver_deltas(
    editor: Editor, driver: Path, *, neutral: int = 0, tracker_config: TrackerConfig | None = None
) -> np.ndarray:
    """T x 17 relative AUs of a driving video: AUs(frame t) - AUs(frame ``neutral``)."""
    return np.stack([change.deltas for change in driver_changes(editor, driver, neutral=neutral,
                                                                 tracker_config=tracker_config)])


def driver_changes(
    editor: Editor, driver: Path, *, neutral: int = 0, tracker_config: TrackerConfig | None = None
) -> list[DrivenChange]:
    """The driver's change at every frame against frame ``neutral``: AUs, and with a rig its fitted motion.

    With a rig, each frame's landmark motion from the neutral frame (same person, canonical
    frame) is fitted by the rig (``fgfem.rig.transfer``), the estimator's AU difference as
    prior: what the edited face plays is the driver's motion, not only what the estimator reads
    of it. Frames where the driver's face is lost repeat the last measured change (a driver
    who turns away should not snap the edited face back to neutral).
    """
    from fgfem.au_reading.estimator import canonical_landmarks
    from fgfem.rig.transfer import fit_expression_change
    from fgfem.video import iter_frames, probe_video

    info = probe_video(driver)
    config = tracker_config or TrackerConfig(fps=info.fps or 25.0)
    tracker = FaceTracker(editor.backend, config)
    measured: list[tuple[np.ndarray, np.ndarray, np.ndarray] | None] = []
    for rgb in iter_frames(driver):
        faces = tracker.update(rgb)
        measured.append((editor.measure_aus(faces[:1])[0], editor.raw_aus(faces[:1])[0],
                         canonical_landmarks(np.asarray(faces[0].landmarks, dtype=np.float64))) if faces else None)
    if not measured:
        raise FgfemError(f"driving video {driver.name} has no frames")
    if not 0 <= neutral < len(measured):
        raise FgfemError(f"--driver-neutral {neutral} is outside the driving video's {len(measured)} frames")
    base = measured[neutral]
    if base is None:
        raise NoFaceError(f"no face in frame {neutral} of the driving video; choose a neutral frame with "
                          "--driver-neutral N")
    base_aus, base_raw, base_canon = base
    changes: list[DrivenChange] = []
    last = DrivenChange(deltas=np.zeros(NUM_AUS, dtype=np.float32))
    for frame in measured:
        if frame is not None:
            deltas = (frame[0] - base_aus).astype(np.float32)
            rig = None
            if editor.rig is not None:
                prior = editor.rig_change(base_raw[None], deltas[None])
                rig = fit_expression_change(editor.rig, base_canon[None], frame[2], prior, source_raw=base_raw[None])[0]
            last = DrivenChange(deltas=deltas, rig=rig)
        changes.append(last)
    return changes


def render_video(
    editor: Editor,
    src: Path,
    out: Path,
    spec: EditSpec | Callable[[int], EditSpec],
    *,
    batch: int = 8,
    intensity: float = 1.0,
    mode: str = "delta",
    tracker_config: TrackerConfig | None = None,
    keep_audio: bool = True,
    force: bool = False,
    on_frame: Callable[[int, int], None] | None = None,
    encoder_preset: str | None = None,
    pipeline: bool = True,
    threads: int | None = None,
) -> RenderStats:
    """Edit every frame of ``src`` into ``out``: same frames, each at its own presentation time, audio kept.

    Timing, sample aspect ratio and colour tags come from the source (``probe_video``) and
    go to the writer, so a variable-rate clip or one whose video starts after its audio
    stays in sync. SIGTERM ends the render like an error: the partial file is deleted.
    ``spec`` is one edit for all frames or a function of the frame index (``--driver``).
    ``on_frame(done, total)`` reports progress (total is 0 when the container does not say).
    ``encoder_preset`` is x264's speed/size preset (default ``fgfem.video.DEFAULT_X264_PRESET``).
    ``RenderStats.notes`` says what the output could not keep as it was.

    ``pipeline`` (the default) runs decoding, the tracker, the model, compositing and the
    encoder concurrently, with torch limited to ``threads`` intra-op threads (default
    ``default_compute_threads()``) and numpy's BLAS to one while it runs: the stages fill
    the cores, and threads inside each stage would only contend. ``pipeline=False`` is the
    sequential path, threads as they are (the baseline of ``benchmarks/bench_render.py``).
    A failure in any stage ends the render with one line and deletes the partial file.
    """
    import time

    from fgfem.media import check_writable
    from fgfem.video import DEFAULT_X264_PRESET, VideoWriter, open_frames, probe_video, terminate_cleanly

    check_writable(out, force=force)
    with terminate_cleanly():
        info = probe_video(src)
        config = tracker_config or TrackerConfig()
        config = dataclasses.replace(config, fps=info.fps or config.fps)
        tracker = FaceTracker(editor.backend, config)
        spec_for_frame = spec if callable(spec) else (lambda _index: spec)
        stats = RenderStats()
        started = time.perf_counter()
        total = int(info.frame_count or 0)
        writer = VideoWriter(out, info.fps, info.size, force=force, timing=info.timing, sar=info.sar,
                             color=info.color, audio_from=src if keep_audio and info.has_audio else None,
                             preset=encoder_preset or DEFAULT_X264_PRESET)
        limits = limited_threads(threads or default_compute_threads()) if pipeline else contextlib.nullcontext()
        with limits, open_frames(src) as frames, writer:
            for frame in edit_frames(editor, frames, spec_for_frame, tracker=tracker, batch=batch, mode=mode,
                                     intensity=intensity, pipeline=pipeline):
                writer.write(frame.rgb)
                stats.frames += 1
                stats.edited += frame.faces > 0
                if on_frame is not None:
                    on_frame(stats.frames, total)
    stats.notes = list(writer.notes)
    stats.detections = tracker.detections
    stats.seconds = time.perf_counter() - started
    return stats
