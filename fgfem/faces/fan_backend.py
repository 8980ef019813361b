"""FAN backend (the ``face-alignment`` package): S3FD detector + 2D-FAN 68-point landmarks.

More accurate and more pose-robust than dlib, but its weights are not in the wheel:
``face_alignment.FaceAlignment`` downloads them into ``torch.hub.get_dir()/checkpoints``
on first use and, offline, fails deep inside urllib. So the files are checked *before*
the package is even imported (importing it alone takes seconds), and a missing file
becomes one line saying which file, which folder and which URL. Nothing here touches
the network.

File names and URLs are those of face-alignment 1.5 (``api.models_urls['2DFAN-4']`` and
``detection/sfd/sfd_detector.models_urls['s3fd']``).
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fgfem.errors import FgfemError
from fgfem.faces.base import (
    BackendStatus,
    Face,
    FaceBackend,
    as_boxes,
    as_rgb,
    detection_scale,
    sort_largest_first,
)

FAN_FILES: dict[str, str] = {
    "2DFAN4-11f355bf06.pth.tar": "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar",
    "s3fd-619a316812.pth": "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
}


@dataclass(frozen=True)
class FanConfig:
    detect_size: int = 1024
    """Long side (px) of the copy S3FD scans; big photos are shrunk, landmarks use full resolution."""
    min_score: float = 0.5
    """S3FD confidence below which a box is dropped."""


def checkpoint_dir() -> Path:
    """Where face-alignment looks for its weights: ``torch.hub.get_dir()/checkpoints``.

    Without importing torch when it is not loaded yet (seconds, and ``fgfem info`` must be
    quick): torch's documented rule is ``$TORCH_HOME/hub``, else ``$XDG_CACHE_HOME/torch/hub``,
    else ``~/.cache/torch/hub``.
    """
    if "torch" in sys.modules:
        return Path(sys.modules["torch"].hub.get_dir()) / "checkpoints"
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "torch")
    return Path(os.path.expanduser(home)) / "hub" / "checkpoints"


def missing_files() -> list[str]:
    """Names of the FAN weight files not present in ``checkpoint_dir()``."""
    folder = checkpoint_dir()
    return [name for name in FAN_FILES if not (folder / name).is_file()]


def missing_message(missing: Sequence[str]) -> str:
    """One actionable line: the files, the folder to put them in, where they come from."""
    urls = " ".join(FAN_FILES[name] for name in missing)
    return (f"FAN backend needs {', '.join(missing)} in {checkpoint_dir()} (download: {urls}); "
            "or use --backend dlib, which works offline")


def status() -> BackendStatus:
    """Cheap availability check: package importable and weight files on disk, nothing loaded."""
    if importlib.util.find_spec("face_alignment") is None:
        return BackendStatus("fan", False, "package face-alignment missing (pip install face-alignment)")
    missing = missing_files()
    if missing:
        return BackendStatus("fan", False, f"{', '.join(missing)} not in {checkpoint_dir()}")
    return BackendStatus("fan", True, f"S3FD + 2D-FAN-4 ({checkpoint_dir()})")


class FanBackend(FaceBackend):
    """S3FD boxes on a downscaled copy, then FAN landmarks on the full-resolution image."""

    name = "fan"

    def __init__(self, device: str = "cpu", config: FanConfig | None = None) -> None:
        self.config = config or FanConfig()
        if importlib.util.find_spec("face_alignment") is None:
            raise FgfemError("FAN backend needs the face-alignment package (pip install face-alignment)")
        missing = missing_files()
        if missing:
            raise FgfemError(missing_message(missing))
        import face_alignment

        kwargs: dict[str, Any] = {"device": str(device), "flip_input": False, "face_detector": "sfd",
                                  "face_detector_kwargs": {"filter_threshold": self.config.min_score}}
        if "compile" in inspect.signature(face_alignment.FaceAlignment.__init__).parameters:
            kwargs["compile"] = False  # torch.compile costs minutes and writes a cache in $HOME
        try:
            self._fa = face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, **kwargs)
        except Exception as problem:  # a truncated or wrong file: say which folder to fix
            raise FgfemError(f"FAN weights in {checkpoint_dir()} could not be loaded ({type(problem).__name__}: "
                             f"{str(problem).splitlines()[0] if str(problem) else ''}); delete them and download "
                             "again, or use --backend dlib") from None

    def detect(self, rgb: np.ndarray) -> list[Face]:
        from fgfem.faces.dlib_backend import _resized

        rgb = as_rgb(rgb)
        scale = min(1.0, detection_scale(rgb.shape, self.config.detect_size))
        found = self._fa.face_detector.detect_from_image(_resized(rgb, scale).copy())
        boxes = [np.concatenate([np.asarray(b[:4], dtype=np.float32) / scale, [float(b[4])]]) for b in found]
        return sort_largest_first(self.landmarks_for_boxes(rgb, boxes))

    def landmarks_for_boxes(self, rgb: np.ndarray, boxes: Sequence[np.ndarray]) -> list[Face]:
        rgb = as_rgb(rgb)
        rows = as_boxes(boxes)
        if len(rows) == 0:
            return []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            landmarks = self._fa.get_landmarks_from_image(rgb, detected_faces=list(rows))
        return [Face(box=row[:4], score=float(row[4]), landmarks=np.asarray(points)[:, :2])
                for row, points in zip(rows, landmarks or [], strict=True)]
