"""Shared fixtures: the real-data folder (``FGFEM_SHARED``) and a skip when it is absent, tiny models.

Builders that take arguments live in ``helpers.py``; test files import those, never each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings

from fgfem.paths import shared_dir

if TYPE_CHECKING:
    from fgfem.editor import Editor

# Hypothesis's default 200 ms deadline per example is a wall-clock assertion: on a loaded 2-core
# machine it failed a correct property test. Tests assert behaviour, never timings.
settings.register_profile("fgfem", deadline=None)
settings.load_profile("fgfem")


@pytest.fixture(scope="session")
def shipped() -> Path:
    """The shipped weights file with its AU rig; tests needing it skip when the checkout has none."""
    from fgfem.paths import find_default_weights
    from fgfem.rig.model import load_rig

    weights = find_default_weights()
    if weights is None or load_rig(weights) is None:
        pytest.skip("weights/default.safetensors with its rig is absent in this checkout")
    return weights


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


@pytest.fixture(scope="session")
def tiny_train_data(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny real-face training set of ``helpers.build_tiny_dataset``, built once: runs only read it."""
    from helpers import build_tiny_dataset

    return build_tiny_dataset(samples, tmp_path_factory.mktemp("train-data"))


@pytest.fixture()
def one_torch_thread() -> Iterator[None]:
    """One torch thread: on a shared 2-core machine two threads contend and can run ~10x slower."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def editor() -> Editor:
    """An editor around a randomly initialised tiny generator: the pipeline properties tested with it
    (zero edit, paste-back, batching, frame counts) hold for any generator."""
    from helpers import tiny_generator

    from fgfem.editor import Editor

    return Editor(tiny_generator()[0], image_size=128, device="cpu", backend="dlib")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``helpers.tiny_generator`` saved like a real model, for ``--weights`` (zero edits hold for any G)."""
    from helpers import save_tiny_generator

    return save_tiny_generator(tmp_path_factory.mktemp("weights") / "tiny.safetensors")


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
