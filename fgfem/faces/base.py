"""The face interface every backend speaks: a ``Face`` record and the ``FaceBackend`` base class.

Everything downstream (alignment, AU estimation, paste-back, video tracking) only
needs a box, a score and 68 landmarks in the iBUG order, in full-resolution image
pixels (integer = pixel centre, the convention of dlib and FAN). Backends therefore
differ only in how they find faces; swapping one for another is a name on the
command line (the layout of 1adrianb/face-alignment's ``detection/core.py``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fgfem.errors import FgfemError

NUM_LANDMARKS = 68


@dataclass
class Face:
    """One detected face: box (x0, y0, x1, y1), detector score and 68 iBUG landmarks, all in image pixels."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray

    def __post_init__(self) -> None:
        self.box = np.asarray(self.box, dtype=np.float32).reshape(4)
        self.landmarks = np.asarray(self.landmarks, dtype=np.float32).reshape(NUM_LANDMARKS, 2)
        self.score = float(self.score)

    @property
    def size(self) -> float:
        """Face size in px: geometric mean of the landmarks' width and height; "largest face" sorts by it.

        Taken from the landmarks rather than the box because boxes differ between
        detectors (and HOG boxes come in a few fixed sizes), so ties and backend swaps
        would change which face is "largest".
        """
        extent = self.landmarks.max(0) - self.landmarks.min(0)
        return float(np.sqrt(max(float(extent[0]), 0.0) * max(float(extent[1]), 0.0)))

    @property
    def center(self) -> np.ndarray:
        """Centre of the box (x, y)."""
        return np.array([(self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2], dtype=np.float32)

    @property
    def interocular(self) -> float:
        """Distance between the two eye centres: a scale that does not depend on the detector's box style."""
        right, left = self.landmarks[36:42].mean(0), self.landmarks[42:48].mean(0)
        return float(np.linalg.norm(left - right))


@dataclass(frozen=True)
class BackendStatus:
    """Whether a backend can run here, and why not; computed without loading any model."""

    name: str
    available: bool
    detail: str


class FaceBackend(ABC):
    """Finds faces and their 68 landmarks in an RGB image.

    Subclasses implement ``detect`` (find and landmark every face) and
    ``landmarks_for_boxes`` (landmark only, for video where last frame's box is reused
    instead of detecting again, which is several times cheaper).
    """

    name: str = "base"

    @abstractmethod
    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Every face in ``rgb`` (H x W x 3 uint8), largest first."""

    def detect_largest(self, rgb: np.ndarray) -> list[Face]:
        """Faces for a caller that keeps only the largest (``--face largest``, a ``--target``).

        The same as ``detect`` unless a backend can skip work for faces that could not be chosen.
        """
        return self.detect(rgb)

    def smallest_face(self, shape: tuple[int, ...]) -> float | None:
        """About the smallest face (px across, landmark extent) found in an image of ``shape``; None if unknown.

        For the "no face found" message: it tells a user whether the face was simply too small.
        """
        return None

    @abstractmethod
    def landmarks_for_boxes(self, rgb: np.ndarray, boxes: Sequence[np.ndarray]) -> list[Face]:
        """One Face per box (x0, y0, x1, y1[, score]), same order; the box is used as given."""


def as_rgb(image: np.ndarray) -> np.ndarray:
    """A contiguous H x W x 3 uint8 view of ``image``; greyscale is repeated, alpha dropped.

    Backends accept what ``fgfem.media.load_image`` gives, but also the odd array a
    library user passes directly, so they do not each repeat these checks.
    """
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise FgfemError(f"face detection needs an 8-bit image, got dtype {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or min(array.shape[:2]) < 1:
        raise FgfemError(f"face detection needs an H x W x 3 RGB image, got shape {array.shape}")
    return np.ascontiguousarray(array[:, :, :3])


def as_boxes(boxes: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """N x 5 float32 (x0, y0, x1, y1, score); a missing score becomes 1.0 (the box was given, not found)."""
    rows = [np.asarray(b, dtype=np.float32).reshape(-1) for b in boxes]
    out = np.ones((len(rows), 5), dtype=np.float32)
    for i, row in enumerate(rows):
        if row.size not in (4, 5):
            raise FgfemError(f"a face box has 4 or 5 numbers (x0, y0, x1, y1[, score]), got {row.size}")
        out[i, : row.size] = row
    return out


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def detection_scale(shape: tuple[int, ...], long_side: int) -> float:
    """Factor that brings the image's long side to ``long_side`` (down for big photos, up for tiny ones).

    Detectors scan a fixed window (dlib HOG: 80 px), so a face must be neither tiny nor
    enormous in the image they see; landmarks are still fitted at full resolution.
    """
    return float(long_side) / float(max(shape[0], shape[1]))


def sort_largest_first(faces: list[Face]) -> list[Face]:
    return sorted(faces, key=lambda f: f.size, reverse=True)
