"""Generator weights on disk: safetensors with self-describing metadata, never pickle.

A weights file carries everything needed to rebuild and trust the generator: the
network config, the AU order it was trained on, the crop template its inputs must
follow, who wrote it and a training summary (``fgfem.weights.metadata``).

Loading checks the file before building anything (``fgfem.weights.header``, then the
metadata, then every tensor's shape), so that every way a user can hand us the wrong
file (missing, truncated, a renamed ``.pth``, another preset, another AU list) ends in
one line saying what is wrong and what to do. A training checkpoint of ``fgfem train``
is read as its generator part.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fgfem.atomic import atomic_path
from fgfem.errors import FgfemError, first_line
from fgfem.nets import Generator, NetConfig
from fgfem.rig.model import RIG_PREFIX
from fgfem.weights.header import read_header
from fgfem.weights.keys import GENERATOR_PREFIX, without_prefix
from fgfem.weights.locate import resolve_weights
from fgfem.weights.metadata import (
    DEFAULT_CROP_TEMPLATE,
    STORAGE_DTYPES,
    WeightsInfo,
    checkpoint_info,
    encode_metadata,
    parse_metadata,
)
from fgfem.weights.shapes import check_shapes, numel

# The metadata key that marks a training checkpoint (``fgfem.train.checkpoint``).
CHECKPOINT_KEY = "fgfem_checkpoint"


def save_generator(
    path: str | Path,
    generator: Generator,
    cfg: NetConfig,
    *,
    dtype: torch.dtype | None = None,
    crop_template: str = DEFAULT_CROP_TEMPLATE,
    training: dict[str, Any] | None = None,
) -> None:
    """Write ``generator``'s weights to ``path`` atomically, with metadata.

    ``dtype`` (float16/bfloat16) halves the file; ``load_generator`` casts back to
    float32, so the only cost is the storage rounding.
    """
    storage = dtype or torch.float32
    if storage not in STORAGE_DTYPES:
        raise FgfemError(f"cannot store weights as {storage}; choose one of: {', '.join(STORAGE_DTYPES.values())}")
    state = generator.state_dict()
    check_shapes({k: tuple(v.shape) for k, v in state.items()}, cfg, source="the generator to save")
    tensors = {
        key: value.detach().to("cpu", storage if value.is_floating_point() else value.dtype).contiguous()
        for key, value in state.items()
    }
    encoded = encode_metadata(cfg, storage=storage, crop_template=crop_template, training=training)

    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=encoded)


def is_training_checkpoint(path: str | Path) -> bool:
    """True for a ``step-N.safetensors`` that ``fgfem train`` wrote (it holds the generator among the rest)."""
    return CHECKPOINT_KEY in read_header(Path(path)).metadata


def read_weights_info(path: str | Path) -> WeightsInfo:
    """Validate ``path``'s header and metadata against fgfem's networks, without loading tensors.

    ``path`` may also be a training checkpoint or a run folder: its generator part is described.
    """
    path = resolve_weights(path)
    header = read_header(path)
    if CHECKPOINT_KEY in header.metadata:
        info = checkpoint_info(path, header.metadata[CHECKPOINT_KEY])
        shapes = without_prefix(GENERATOR_PREFIX, header.shapes)
    else:
        info = parse_metadata(path, header.metadata)
        # Tensors under ``rig.`` are the AU rig's (``fgfem.rig``), not the generator's.
        shapes = {k: v for k, v in header.shapes.items() if not k.startswith(RIG_PREFIX)}
    check_shapes(shapes, info.cfg, source=f"{path.name} (declares preset {info.cfg.name!r}, "
                                          f"conv_dim {info.cfg.conv_dim})")
    num_params = sum(numel(shape) for shape in shapes.values())
    return WeightsInfo(
        cfg=info.cfg, aus=info.aus, crop_template=info.crop_template, training=info.training,
        version=info.version, format=info.format, dtype=info.dtype, num_params=num_params, shapes=shapes,
    )


def load_generator(
    path: str | Path, device: str | torch.device = "cpu", *, preset: str | None = None
) -> tuple[Generator, WeightsInfo]:
    """Build the generator ``path`` describes and load its weights (float32, eval mode).

    ``preset``, if given, is the preset the caller needs (e.g. to resume training);
    a file of another preset is then an error naming both.
    """
    path = resolve_weights(path)
    info = read_weights_info(path)
    if preset is not None and info.cfg.name != preset:
        raise FgfemError(
            f"{path.name} holds {info.cfg.name!r} weights (conv_dim {info.cfg.conv_dim}), "
            f"but preset {preset!r} was asked for"
        )
    tensors = _generator_tensors(path)
    state = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()
             if not k.startswith(RIG_PREFIX)}
    with torch.device("meta"):
        generator = Generator(info.cfg)
    generator.load_state_dict(state, strict=True, assign=True)
    return generator.to(_as_device(device)).eval(), info


def _generator_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The generator's tensors of a weights file, or of a training checkpoint (verified, then its ``G/`` part)."""
    if is_training_checkpoint(path):
        from fgfem.train.checkpoint import load_checkpoint

        return without_prefix(GENERATOR_PREFIX, load_checkpoint(path).tensors)
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as problem:  # safetensors raises its own error types for damaged files
        raise FgfemError(f"{path} is damaged and cannot be read ({first_line(problem)}); copy it again") from None


def _as_device(device: str | torch.device) -> torch.device:
    """A torch.device as given, or a device spec (``auto``, ``cuda:1``) checked by ``resolve_device``."""
    if isinstance(device, torch.device):
        return device
    from fgfem.devices import resolve_device

    return resolve_device(device).device
