"""Training: the paper's WGAN-GP with relative AUs, resumable and multi-process (``torchrun``).

``config`` holds every hyper-parameter, ``data`` the faces and relative-AU sampling,
``losses`` the critic and generator objectives, ``loop`` the loop itself, ``checkpoint``
pickle-free resumable state, ``distributed`` the DDP glue and ``preview`` the image grids.
"""

from fgfem.train.config import TrainConfig
from fgfem.train.loop import TrainResult, export_generator, read_metrics, train

__all__ = ["TrainConfig", "TrainResult", "export_generator", "read_metrics", "train"]
