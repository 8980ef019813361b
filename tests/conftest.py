"""Shared fixtures: the real-data folder (``FGFEM_SHARED``) and a skip when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from fgfem.paths import shared_dir


@pytest.fixture(scope="session")
def shared() -> Path:
    """Root of the shared real-face data; tests needing it skip with the reason when it is absent."""
    root = shared_dir()
    if not (root / "data").is_dir():
        pytest.skip(f"shared data not found at {root} (set FGFEM_SHARED to the folder holding data/)")
    return root


@pytest.fixture(scope="session")
def samples(shared: Path) -> Path:
    return shared / "data" / "samples"
