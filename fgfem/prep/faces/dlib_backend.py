"""dlib backend: HOG face detector + 68-point shape predictor, offline from PyPI packages.

``dlib-bin`` brings the library, ``face-recognition-models`` the model files
(``shape_predictor_68_face_landmarks.dat`` in the iBUG layout, ``mmod_human_face_detector.dat``).
That package's ``__init__`` imports ``pkg_resources`` (gone from new setuptools), so its
folder is located with ``importlib`` instead of importing it.

How detection works, and why:

- HOG runs on a copy whose long side is ``detect_size`` px: fast on 4000 px photos and,
  because tiny images are scaled *up*, faces below HOG's 80 px window are found too.
- HOG alone is either blind to hard faces (sunglasses, turned heads) or, with a lower
  threshold, sees faces in clothing. So boxes above ``accept_score`` are taken at once;
  marginal ones (down to ``candidate_score``) are confirmed by dlib's MMOD CNN run on
  a small crop around the box only: ~0.3 s per candidate instead of ~6 s for a CNN pass
  over the whole image. Measured on the samples: this finds the fifth face (sunglasses)
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
from fgfem.prep.faces.base import (
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


@dataclass(frozen=True)
class DlibConfig:
    """Detection knobs; the defaults were tuned on the real samples (see the module docstring)."""

    detect_size: int = 800
    """Long side (px) of the copy that the detector scans."""
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
    """``hog`` (default, fast) or ``cnn`` (MMOD over the whole image: slow, ~6 s on a CPU)."""


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
        taller than the face) that is ~110 ms instead of ~1 s.
        """
        return self._detect(rgb, largest_only=True)

    def _detect(self, rgb: np.ndarray, *, largest_only: bool) -> list[Face]:
        rgb = as_rgb(rgb)
        scale = detection_scale(rgb.shape, self.config.detect_size)
        small = _resized(rgb, scale)
        if self.config.detector == "cnn":
            found = [(box, score) for box, score in self._cnn_boxes(small, self.config.upsample)]
        else:
            found = self._hog_boxes(small, largest_only=largest_only)
        boxes = [np.concatenate([box / scale, [score]]) for box, score in found]
        return sort_largest_first(self.landmarks_for_boxes(rgb, boxes))

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


def _area(box: np.ndarray) -> float:
    return float((box[2] - box[0]) * (box[3] - box[1]))


def _resized(rgb: np.ndarray, scale: float) -> np.ndarray:
    """``rgb`` scaled by ``scale`` (PIL's bilinear filter, which also low-passes when shrinking)."""
    if abs(scale - 1.0) < 1e-3:
        return rgb
    height, width = rgb.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
