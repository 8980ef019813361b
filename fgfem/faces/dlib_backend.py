"""dlib backend: HOG face detector + 68-point shape predictor, offline from PyPI packages.

``dlib-bin`` brings the library, ``face-recognition-models`` the model files
(``shape_predictor_68_face_landmarks.dat`` in the iBUG layout, ``mmod_human_face_detector.dat``).
That package's ``__init__`` imports ``pkg_resources`` (gone from new setuptools), so its
folder is located with ``importlib`` instead of importing it.

How detection works, and why:

- HOG runs on a copy scaled so that a face of ``min_face`` px in the photo is still
  ``SCAN_FACE`` px in the copy (HOG's window is 80 px; faces much smaller than that in the
  image it scans are missed): a fixed 800 px copy of a 2000 px photo loses every face
  under ~120 px. The copy is never smaller than ``detect_size`` (tiny images are scaled
  *up*) and never longer than ``max_scan`` px (HOG time grows with the pixels scanned;
  timings in ``benchmarks/README.md``), so the smallest face found in
  a photo depends on its size (``smallest_face``; 40 px up to 2560 px photos).
- The cheap ``detect_size`` copy is scanned first and the finer one only when that finds
  nothing, or when a face it found is near its smallest size, so that others a little
  smaller may have been missed (``detect_largest`` follows the same rule, so both return
  the same boxes). Photos whose faces are large (most) cost one 800 px scan, as before.
- HOG alone is either blind to hard faces (sunglasses, turned heads) or, with a lower
  threshold, sees faces in clothing. So boxes above ``accept_score`` are taken at once;
  marginal ones (down to ``candidate_score``) are confirmed by dlib's MMOD CNN run on
  a small crop around the box only: a fraction of the time of a CNN pass over the whole
  image (timings in ``benchmarks/README.md``). Measured on the samples: this finds the fifth face (sunglasses)
  in ``multi_face.jpg`` and rejects the false boxes on ``astronaut.png``.
- The 68-point predictor then runs on the full-resolution image.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fgfem.errors import FgfemError
from fgfem.faces.base import (
    BackendStatus,
    Face,
    FaceBackend,
    as_boxes,
    as_rgb,
    box_iou,
    detection_scale,
    sort_largest_first,
)

LANDMARKS_68 = "shape_predictor_68_face_landmarks.dat"
MMOD_CNN = "mmod_human_face_detector.dat"
_VERIFY_CROP = 200  # px: the candidate box is ~half of it, above MMOD's ~80 px smallest face
# The smallest face (landmark extent, px) HOG finds reliably in the image it scans. Measured on a real
# portrait pasted at 40-150 px into 640-2000 px photos: found from ~45 px in the scanned copy, missed at 35.
SCAN_FACE = 50.0


@dataclass(frozen=True)
class DlibConfig:
    """Detection knobs; the defaults were tuned on the real samples (see the module docstring)."""

    detect_size: int = 800
    """Long side (px) of the copy that the detector scans at least (and ``detect_largest`` scans first)."""
    min_face: float = 40.0
    """Smallest face (px across, in the photo) the scan is scaled to find, within ``max_scan``."""
    max_scan: int = 3200
    """Longest side (px) of a scanned copy: bounds the time spent on very large photos."""
    upsample: int = 0
    """dlib's own pyramid upsampling of that copy (1 finds faces ~half as big, 4x slower)."""
    accept_score: float = 0.5
    """HOG margin above which a box is a face without further checks."""
    candidate_score: float = -0.6
    """HOG margin above which a box is checked by the CNN (only when ``verify`` is on)."""
    verify: bool = True
    """Confirm marginal HOG boxes with the MMOD CNN on a local crop."""
    verify_when_none: bool = False
    """With ``verify`` off: still confirm marginal boxes when no box reaches ``accept_score`` (the
    CNN then runs only on the few images the fast pass would call faceless)."""
    max_verify: int = 4
    """At most this many marginal boxes are checked, best first (bounds the worst-case time)."""
    detector: str = "hog"
    """``hog`` (default, fast) or ``cnn`` (MMOD over the whole image: slow on a CPU)."""


def models_dir() -> Path | None:
    """Folder of the face-recognition-models files, found without importing that package."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def status() -> BackendStatus:
    """Cheap availability check: packages and model files present, nothing loaded."""
    if importlib.util.find_spec("dlib") is None:
        return BackendStatus("dlib", False, "package dlib missing (pip install dlib-bin)")
    folder = models_dir()
    if folder is None:
        missing = "package face-recognition-models missing"
        return BackendStatus("dlib", False, f"{missing} (pip install face-recognition-models)")
    if not (folder / LANDMARKS_68).is_file():
        return BackendStatus("dlib", False, f"{LANDMARKS_68} not found in {folder}")
    return BackendStatus("dlib", True, f"HOG detector + 68-point predictor ({folder})")


class DlibBackend(FaceBackend):
    """HOG (+ CNN check of marginal boxes) detection and dlib's 68-point landmark predictor."""

    name = "dlib"

    def __init__(self, config: DlibConfig | None = None) -> None:
        self.config = config or DlibConfig()
        if self.config.detector not in ("hog", "cnn"):
            raise FgfemError(f"unknown dlib detector {self.config.detector!r}; use hog or cnn")
        state = status()
        if not state.available:
            raise FgfemError(f"dlib face backend unavailable: {state.detail}")
        import dlib

        self._dlib = dlib
        folder = models_dir()
        assert folder is not None  # status() checked it
        self._folder = folder
        self._predictor = dlib.shape_predictor(str(folder / LANDMARKS_68))
        self._hog = dlib.get_frontal_face_detector()
        self._cnn: Any = None

    # ------------------------------------------------------------------ public
    def detect(self, rgb: np.ndarray) -> list[Face]:
        return self._detect(rgb, largest_only=False)

    def detect_largest(self, rgb: np.ndarray) -> list[Face]:
        """``detect`` for callers that keep only the largest face (``--face largest``, a ``--target``).

        Marginal HOG boxes not clearly larger (by ``LARGER`` in area) than a face already
        accepted skip the CNN check that ``detect`` gives them: a smaller one could never be
        chosen, and of two faces of about the same size the clear one is the better pick. On
        a 1024 px portrait with one clear face and two marginal boxes (one of them 1 px
        taller than the face) that skips both CNN checks, most of the detection's time
        (timings in ``benchmarks/README.md``).
        """
        return self._detect(rgb, largest_only=True)

    def smallest_face(self, shape: tuple[int, ...]) -> float | None:
        """The smallest face (px across, landmark extent) the scan of an image of ``shape`` finds."""
        return SCAN_FACE / self.scan_scale(shape)

    def scan_scale(self, shape: tuple[int, ...]) -> float:
        """Scale of the copy that HOG scans: ``min_face`` px faces become ``SCAN_FACE``, within the bounds.

        The CNN detector keeps the ``detect_size`` copy: over a whole large image it takes seconds.
        """
        cfg = self.config
        coarse = detection_scale(shape, cfg.detect_size)
        if cfg.detector == "cnn":
            return coarse
        fine = min(SCAN_FACE / max(cfg.min_face, 1.0), detection_scale(shape, cfg.max_scan))
        return max(coarse, fine)

    def _detect(self, rgb: np.ndarray, *, largest_only: bool) -> list[Face]:
        rgb = as_rgb(rgb)
        coarse, fine = detection_scale(rgb.shape, self.config.detect_size), self.scan_scale(rgb.shape)
        scale = coarse
        found = self._scan(rgb, coarse, largest_only=largest_only)
        if fine > coarse * 1.05 and not (found and _all_clear(found)):
            scale = fine
            found = self._scan(rgb, fine, largest_only=largest_only)
        boxes = [np.concatenate([box / scale, [score]]) for box, score in found]
        return sort_largest_first(self.landmarks_for_boxes(rgb, boxes))

    def _scan(self, rgb: np.ndarray, scale: float, *, largest_only: bool) -> list[tuple[np.ndarray, float]]:
        """Face boxes (in the scaled copy's pixels) and scores found in ``rgb`` scaled by ``scale``."""
        small = _resized(rgb, scale)
        if self.config.detector == "cnn":
            return list(self._cnn_boxes(small, self.config.upsample))
        return self._hog_boxes(small, largest_only=largest_only)

    def landmarks_for_boxes(self, rgb: np.ndarray, boxes: Sequence[np.ndarray]) -> list[Face]:
        rgb = as_rgb(rgb)
        faces = []
        for x0, y0, x1, y1, score in as_boxes(boxes):
            # dlib rectangles include their right/bottom pixel; our boxes end one past it.
            rect = self._dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)) - 1, int(round(y1)) - 1)
            shape = self._predictor(rgb, rect)
            points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
            faces.append(Face(box=np.array([x0, y0, x1, y1]), score=float(score), landmarks=points))
        return faces

    # ------------------------------------------------------------------ detection stages
    def _hog_boxes(self, small: np.ndarray, *, largest_only: bool = False) -> list[tuple[np.ndarray, float]]:
        cfg = self.config
        floor = cfg.candidate_score if cfg.verify or cfg.verify_when_none else cfg.accept_score
        rects, scores, _ = self._hog.run(small, cfg.upsample, floor)
        ranked = sorted(zip(rects, scores, strict=True), key=lambda rs: -rs[1])
        accepted: list[tuple[np.ndarray, float]] = []
        checked = 0
        for rect, score in ranked:
            box = np.array([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1], dtype=np.float32)
            if any(box_iou(box, kept) > 0.3 for kept, _ in accepted):
                continue
            if score < cfg.accept_score:
                if largest_only and accepted and _area(box) <= LARGER * max(_area(kept) for kept, _ in accepted):
                    continue
                if checked >= cfg.max_verify or (not cfg.verify and accepted):
                    break
                checked += 1
                if not self._confirmed_by_cnn(small, box):
                    continue
            accepted.append((box, float(score)))
        return accepted

    def _confirmed_by_cnn(self, small: np.ndarray, box: np.ndarray) -> bool:
        """Run MMOD on a square crop twice the box's size around it; True if it sees the same face."""
        side = 2.0 * max(box[2] - box[0], box[3] - box[1])
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        origin = np.array([cx - side / 2, cy - side / 2], dtype=np.float32)
        zoom = _VERIFY_CROP / side
        crop = Image.fromarray(small).transform(
            (_VERIFY_CROP, _VERIFY_CROP), Image.Transform.EXTENT,
            (float(origin[0]), float(origin[1]), float(origin[0] + side), float(origin[1] + side)),
            Image.Resampling.BILINEAR,
        )
        target = np.concatenate([(box[:2] - origin) * zoom, (box[2:] - origin) * zoom])
        return any(box_iou(target, found) >= 0.3 for found, _ in self._cnn_boxes(np.asarray(crop), 0))

    def _cnn_boxes(self, image: np.ndarray, upsample: int) -> list[tuple[np.ndarray, float]]:
        if self._cnn is None:
            path = self._folder / MMOD_CNN
            if not path.is_file():
                raise FgfemError(f"dlib CNN face detector {MMOD_CNN} not found in {self._folder}")
            self._cnn = self._dlib.cnn_face_detection_model_v1(str(path))
        out = []
        for det in self._cnn(np.ascontiguousarray(image), upsample):
            r = det.rect
            out.append((np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1], dtype=np.float32),
                        float(det.confidence)))
        return out


# How much larger (in area) a marginal box must be than an accepted face to be checked by detect_largest.
LARGER = 1.25


# A face whose box in the scanned copy is below this many times HOG's 80 px window is "near the limit":
# faces a little smaller would be missed, so ``detect`` looks again at the finer scale.
NEAR_LIMIT = 2.0
_HOG_WINDOW = 80.0


def _all_clear(found: list[tuple[np.ndarray, float]]) -> bool:
    """True when every face found is well above the smallest the scan sees (no smaller ones likely missed)."""
    return min(min(box[2] - box[0], box[3] - box[1]) for box, _ in found) >= NEAR_LIMIT * _HOG_WINDOW


def _area(box: np.ndarray) -> float:
    return float((box[2] - box[0]) * (box[3] - box[1]))


def _resized(rgb: np.ndarray, scale: float) -> np.ndarray:
    """``rgb`` scaled by ``scale`` (PIL's bilinear filter, which also low-passes when shrinking)."""
    if abs(scale - 1.0) < 1e-3:
        return rgb
    height, width = rgb.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
