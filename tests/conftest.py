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


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow (minutes each)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import os

    if config.getoption("--runslow") or os.environ.get("FGFEM_SLOW") == "1":
        return
    skip_slow = pytest.mark.skip(reason="slow test: run with --runslow or FGFEM_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)
