"""Weights files in one line, for people: ``fgfem info``, ``fgfem weights convert`` and evaluation reports."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fgfem.weights.format import read_weights_info
from fgfem.weights.locate import resolve_weights


def describe_weights(path: str | Path) -> str:
    """One line about a weights file: preset, size, parameters, dtype, crop, version, training, rig."""
    info = read_weights_info(path)
    parts = [
        f"preset {info.preset} (conv_dim {info.cfg.conv_dim})",
        f"{info.image_size} px",
        f"{info.num_params / 1e6:.1f}M params",
        info.dtype,
        f"crop {info.crop_template}",
        f"fgfem {info.version}",
    ]
    if info.training:
        parts.append("training: " + summarise_training(info.training))
    from fgfem.rig.model import load_rig

    parts.append("AU rig" if load_rig(resolve_weights(path)) is not None else "no AU rig")
    return ", ".join(parts)


def summarise_training(training: Mapping[str, Any], limit: int = 80) -> str:
    """``key=value`` pairs of the scalar entries of a training summary, cut to ``limit`` characters."""
    text = " ".join(f"{k}={_short(v)}" for k, v in training.items() if isinstance(v, str | int | float | bool))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
