"""Face detection + 68 landmarks behind one small interface; backends are chosen by name.

>>> backend = get_backend("auto")          # fan where its weights exist, else dlib
>>> faces = select_faces(backend.detect(rgb), "largest")

``backend_status()`` says what is usable without loading any model (``fgfem info``).
"""

from __future__ import annotations

import functools

import numpy as np

from fgfem.errors import FgfemError
from fgfem.prep.faces.base import BackendStatus, Face, FaceBackend, box_iou

BACKENDS = ("dlib", "fan")

__all__ = ["BACKENDS", "BackendStatus", "Face", "FaceBackend", "backend_status", "box_iou", "get_backend",
           "detect_faces", "resolve_backend_name", "select_faces"]


def backend_status() -> list[BackendStatus]:
    """One status per backend, cheap (file checks only), in the order ``auto`` tries them."""
    from fgfem.prep.faces import dlib_backend, fan_backend

    return [fan_backend.status(), dlib_backend.status()]


def resolve_backend_name(name: str = "auto") -> str:
    """``auto`` -> ``fan`` where its weights are on disk, else ``dlib``; other names pass through, lower-cased."""
    choice = (name or "auto").strip().lower()
    if choice == "auto":
        from fgfem.prep.faces import fan_backend

        choice = "fan" if fan_backend.status().available else "dlib"
    return choice


@functools.lru_cache(maxsize=8)
def get_backend(name: str = "auto", *, device: str = "cpu") -> FaceBackend:
    """A ready backend: ``dlib``, ``fan`` or ``auto`` (fan if its weights are on disk, else dlib).

    ``dlib-cnn`` is dlib with the MMOD CNN detector over the whole image instead of HOG:
    for hard cases, ~6 s per photo on a CPU.

    Cached per (name, device): models load once per process, however many callers ask.
    """
    choice = resolve_backend_name(name)
    if choice in ("dlib", "dlib-cnn"):
        from fgfem.prep.faces.dlib_backend import DlibBackend, DlibConfig

        return DlibBackend(DlibConfig(detector="cnn") if choice == "dlib-cnn" else None)
    if choice == "fan":
        from fgfem.prep.faces.fan_backend import FanBackend

        return FanBackend(device=str(device))
    raise FgfemError(f"unknown face backend {name!r}; use auto, {', '.join(BACKENDS)} (or dlib-cnn)")


def detect_faces(backend: FaceBackend, rgb: np.ndarray, which: str = "largest") -> list[Face]:
    """``select_faces(backend.detect(rgb), which)``, letting the backend skip work for ``largest``.

    Only the largest face is kept then, so ``detect_largest`` may leave out checks of faces
    that could not be chosen (dlib: the ~400 ms CNN check of a marginal box).
    """
    largest = str(which).strip().lower() == "largest"
    found = backend.detect_largest(rgb) if largest else backend.detect(rgb)
    return select_faces(found, which)


def select_faces(faces: list[Face], which: str = "largest") -> list[Face]:
    """The faces chosen by ``--face largest|all|N``.

    ``N`` counts from 0, **left to right** by box centre: that is how a person points at
    a face in a group photo, and unlike size order it does not change when two faces
    are nearly the same size. ``all`` keeps the backend's order (largest first).
    An empty input gives an empty list (the caller decides whether that is an error);
    an ``N`` beyond the faces found is an FgfemError.
    """
    spec = str(which).strip().lower()
    if spec == "all":
        return list(faces)
    if spec == "largest":
        return sorted(faces, key=lambda f: f.size, reverse=True)[:1]
    try:
        index = int(spec)
    except ValueError:
        raise FgfemError(f"--face {which!r}: use largest, all, or a face number (0 = leftmost)") from None
    if not faces:
        return []
    if not 0 <= index < len(faces):
        raise FgfemError(f"--face {index}: only {len(faces)} face(s) found, numbered 0-{len(faces) - 1} left to right")
    return [sorted(faces, key=lambda f: float(f.center[0]))[index]]
