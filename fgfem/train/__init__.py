"""Training: the paper's WGAN-GP with relative AUs, resumable and multi-process (``torchrun``).

``config`` holds every hyper-parameter in groups (``settings`` declares each one once),
``data`` the faces and relative-AU sampling, ``losses`` the critic and generator objectives,
``terms`` the generator's extra terms and what data each needs, ``inputs`` that data,
``step`` one iteration, ``loop`` the loop itself, ``runlog`` its log and progress,
``checkpoint`` pickle-free resumable state, ``distributed`` the DDP glue and ``preview``
the image grids.

The names below load on first use: ``fgfem train --help`` reads ``config`` without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fgfem.train.config import TrainConfig
    from fgfem.train.loop import TrainResult, export_generator, read_metrics, train

__all__ = ["TrainConfig", "TrainResult", "export_generator", "read_metrics", "train"]
_HOMES = {"TrainConfig": "fgfem.train.config", "TrainResult": "fgfem.train.loop",
          "export_generator": "fgfem.train.loop", "read_metrics": "fgfem.train.loop", "train": "fgfem.train.loop"}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
