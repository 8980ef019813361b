"""Tensor names in fgfem's safetensors files: the one place for the ``G/`` and ``D/`` prefixes.

A training checkpoint (``fgfem.train.checkpoint``) holds both networks in one file, so each
network's state dict is stored under a prefix; an exported weights file holds the generator
alone, unprefixed. Everything that writes or reads a checkpoint's networks goes through
``with_prefix`` and ``without_prefix``, so the prefix is spelt once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import torch

GENERATOR_PREFIX = "G/"
CRITIC_PREFIX = "D/"

V = TypeVar("V")


def with_prefix(prefix: str, state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """``state``'s tensors under ``prefix + name`` (non-tensor entries are dropped), ready to store."""
    return {prefix + key: value for key, value in state.items() if isinstance(value, torch.Tensor)}


def without_prefix(prefix: str, stored: Mapping[str, V]) -> dict[str, V]:
    """The entries of ``stored`` under ``prefix``, with the prefix taken off (the rest is left out)."""
    return {key[len(prefix):]: value for key, value in stored.items() if key.startswith(prefix)}
