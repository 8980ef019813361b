"""Where fgfem finds the files it ships and the data it is pointed at.

The default weights live in the repository's ``weights/`` folder; a wheel install
copies them to ``<prefix>/share/fgfem/weights``. ``FGFEM_WEIGHTS`` overrides both.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DEFAULT_WEIGHTS_NAME = "default.safetensors"
PACKAGE_DIR = Path(__file__).resolve().parent
SOURCE_ROOT = PACKAGE_DIR.parent


def default_weights_candidates() -> list[Path]:
    """Places searched for the default model, most specific first."""
    candidates: list[Path] = []
    if env := os.environ.get("FGFEM_WEIGHTS"):
        candidates.append(Path(env))
    candidates.append(Path.cwd() / "weights" / DEFAULT_WEIGHTS_NAME)
    candidates.append(SOURCE_ROOT / "weights" / DEFAULT_WEIGHTS_NAME)
    candidates.append(Path(sys.prefix) / "share" / "fgfem" / "weights" / DEFAULT_WEIGHTS_NAME)
    return candidates


def find_default_weights() -> Path | None:
    """The first default-weights file that exists, or None."""
    for candidate in default_weights_candidates():
        if candidate.is_file():
            return candidate
    return None


def shared_dir() -> Path:
    """The shared data folder used by tests and benchmarks (``FGFEM_SHARED``, default ``../shared``)."""
    return Path(os.environ.get("FGFEM_SHARED", SOURCE_ROOT.parent / "shared"))
