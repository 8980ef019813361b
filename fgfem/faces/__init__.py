"""Run-time face code: find a face, frame it for the model, put the edit back.

This module is detection + 68 landmarks behind one small interface (``base.FaceBackend``;
``dlib_backend``, ``fan_backend``), backends chosen by name. Beside it: ``align`` (the
similarity crop every model input goes through), ``paste`` (the edit back into the full
photo) and ``smoothing`` (landmarks steadied over video frames). Everything here runs on
every edit; building training sets is ``fgfem.prep`` and reading AUs ``fgfem.au_reading``.

>>> backend = get_backend("auto")          # fan where its weights exist, else dlib
>>> faces = select_faces(backend.detect(rgb), "largest")

``backend_status()`` says what is usable without loading any model (``fgfem info``).
"""

from __future__ import annotations

import functools

import numpy as np

from fgfem.errors import FgfemError
from fgfem.faces.base import BackendStatus, Face, FaceBackend, box_iou

BACKENDS = ("dlib", "fan")

__all__ = ["BACKENDS", "BackendStatus", "Face", "FaceBackend", "backend_status", "box_iou", "get_backend",
           "detect_faces", "no_face_message", "numbered_faces", "resolve_backend_name", "rotated_face",
           "select_faces"]


def backend_status() -> list[BackendStatus]:
    """One status per backend, cheap (file checks only), in the order ``auto`` tries them."""
    from fgfem.faces import dlib_backend, fan_backend

    return [fan_backend.status(), dlib_backend.status()]


def resolve_backend_name(name: str = "auto") -> str:
    """``auto`` -> ``fan`` where its weights are on disk, else ``dlib``; other names pass through, lower-cased."""
    choice = (name or "auto").strip().lower()
    if choice == "auto":
        from fgfem.faces import fan_backend

        choice = "fan" if fan_backend.status().available else "dlib"
    return choice


@functools.lru_cache(maxsize=8)
def get_backend(name: str = "auto", *, device: str = "cpu") -> FaceBackend:
    """A ready backend: ``dlib``, ``fan`` or ``auto`` (fan if its weights are on disk, else dlib).

    ``dlib-cnn`` is dlib with the MMOD CNN detector over the whole image instead of HOG:
    for hard cases, and far slower on a CPU (timings: benchmarks/README.md).

    Cached per (name, device): models load once per process, however many callers ask.
    """
    choice = resolve_backend_name(name)
    if choice in ("dlib", "dlib-cnn"):
        from fgfem.faces.dlib_backend import DlibBackend, DlibConfig

        return DlibBackend(DlibConfig(detector="cnn") if choice == "dlib-cnn" else None)
    if choice == "fan":
        from fgfem.faces.fan_backend import FanBackend

        return FanBackend(device=str(device))
    raise FgfemError(f"unknown face backend {name!r}; use auto, {', '.join(BACKENDS)} (or dlib-cnn)")


def detect_faces(backend: FaceBackend, rgb: np.ndarray, which: str = "largest") -> list[Face]:
    """``select_faces(backend.detect(rgb), which)``, letting the backend skip work for ``largest``.

    Only the largest face is kept then, so ``detect_largest`` may leave out checks of faces
    that could not be chosen (dlib: the CNN check of a marginal box, the costliest step of a
    detection; timings: benchmarks/README.md).
    """
    largest = str(which).strip().lower() == "largest"
    found = backend.detect_largest(rgb) if largest else backend.detect(rgb)
    return select_faces(found, which)


def select_faces(faces: list[Face], which: str = "largest") -> list[Face]:
    """The faces chosen by ``--face largest|all|N``, in left-to-right order (see ``numbered_faces``)."""
    return [face for _number, face in numbered_faces(faces, which)]


def numbered_faces(faces: list[Face], which: str = "largest") -> list[tuple[int, Face]]:
    """The faces chosen by ``--face largest|all|N``, each with its number, left to right.

    Faces are numbered from 0, **left to right** by box centre, in every command (``edit``,
    ``aus``, ``render``): that is how a person points at a face in a group photo, and
    unlike size order it does not change when two faces are nearly the same size. So
    ``--face 2`` edits the face that ``fgfem aus`` lists as face 2, and ``largest`` keeps
    the number it has among all faces.
    An empty input gives an empty list (the caller decides whether that is an error);
    an ``N`` beyond the faces found is an FgfemError.
    """
    spec = str(which).strip().lower()
    ordered = list(enumerate(sorted(faces, key=lambda f: float(f.center[0]))))
    if spec == "all":
        return ordered
    if spec == "largest":
        return sorted(ordered, key=lambda item: item[1].size, reverse=True)[:1]
    try:
        index = int(spec)
    except ValueError:
        raise FgfemError(f"--face {which!r}: use largest, all, or a face number (0 = leftmost)") from None
    if not faces:
        return []
    if not 0 <= index < len(faces):
        raise FgfemError(f"--face {index}: only {len(faces)} face(s) found, numbered 0-{len(faces) - 1} left to right")
    return [ordered[index]]


# Quarter turns (numpy's rot90 ``k``) a sideways or upside-down photo needs to show an upright face.
_ROTATIONS = {2: "upside down", 1: "on its side", 3: "on its side"}


def no_face_message(backend: FaceBackend, rgb: np.ndarray) -> str:
    """Why no face was found in ``rgb``, for the one-line error: a rotated photo, or the smallest face findable.

    Only called after a detection came back empty, so the extra work (three detections on
    a small rotated copy) costs nothing on photos that have a face.
    """
    turned = rotated_face(backend, rgb)
    if turned is not None:
        return (f"no upright face found (rotated photo? a face shows when the photo is turned {turned}); "
                "rotate it upright or fix its EXIF orientation")
    smallest = backend.smallest_face(rgb.shape)
    size = f"; faces smaller than about {smallest:.0f} px across are not found in a photo this size" if smallest else ""
    return f"no face found in the image (try a larger, frontal, well-lit face, or --backend fan{size})"


def rotated_face(backend: FaceBackend, rgb: np.ndarray, long_side: int = 640) -> str | None:
    """How the photo is turned if a face appears once it is rotated by a quarter or half turn, else None."""
    from PIL import Image

    array = np.ascontiguousarray(np.asarray(rgb)[..., :3])
    if max(array.shape[:2]) > long_side:
        scale = long_side / max(array.shape[:2])
        size = (max(1, round(array.shape[1] * scale)), max(1, round(array.shape[0] * scale)))
        array = np.asarray(Image.fromarray(array).resize(size, Image.Resampling.BILINEAR))
    for turns, how in _ROTATIONS.items():
        if backend.detect_largest(np.ascontiguousarray(np.rot90(array, turns))):
            return how
    return None
