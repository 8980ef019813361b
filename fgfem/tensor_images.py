"""The networks' images as pixels: ``[-1, 1]`` float tensors to ``uint8`` arrays, in one place.

Every crop a person, dlib or an image file sees from a generator (edits, references,
evaluation crops, prep crops) goes through ``to_uint8``, so they all round the same way.
"""

from __future__ import annotations

import numpy as np
import torch


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``... x 3 x H x W`` in [-1, 1] -> ``... x H x W x 3`` uint8 on the CPU (clamped, rounded to nearest)."""
    scaled = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round()
    return scaled.to(torch.uint8).movedim(-3, -1).cpu().numpy()
