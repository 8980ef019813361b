"""Which tensors, of which shapes, a generator of a given config has, and what a mismatch looks like.

Shared by reading a weights file, saving one and converting a reference checkpoint, so that
all three refuse a wrong file with the same one-line explanation (and a guess of the preset
the tensors do fit).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Iterable, Mapping

import torch

from fgfem.errors import FgfemError
from fgfem.nets import Generator, NetConfig


@functools.lru_cache(maxsize=8)
def expected_shapes(cfg: NetConfig) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of ``Generator(cfg)``, computed on the meta device (no memory, no init)."""
    with torch.device("meta"):
        generator = Generator(cfg)
    return {key: tuple(value.shape) for key, value in generator.state_dict().items()}


def check_shapes(shapes: Mapping[str, tuple[int, ...]], cfg: NetConfig, *, source: str) -> None:
    """Refuse tensors that are not exactly ``Generator(cfg)``'s, naming ``source`` and what differs."""
    expected = expected_shapes(cfg)
    lacking = [k for k in expected if k not in shapes]
    unknown = [k for k in shapes if k not in expected]
    wrong = [k for k in expected if k in shapes and tuple(shapes[k]) != expected[k]]
    if not (lacking or unknown or wrong):
        return
    problems = []
    if wrong:
        key = wrong[0]
        problems.append(f"{len(wrong)} tensors have other shapes (e.g. {key}: {tuple(shapes[key])}, "
                        f"expected {expected[key]})")
    if lacking:
        problems.append(f"{len(lacking)} tensors are missing (e.g. {lacking[0]})")
    if unknown:
        problems.append(f"{len(unknown)} tensors are unknown (e.g. {unknown[0]})")
    hint = guess_preset(shapes)
    raise FgfemError(
        f"{source} does not fit the {cfg.name!r} generator: {'; '.join(problems)}"
        + (f"; the tensors look like preset {hint!r}" if hint and hint != cfg.name else "")
    )


def guess_preset(shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    """The preset whose generator has exactly these tensors (in any output form), or None."""
    from fgfem.nets import PRESETS

    # With or without the residual output, AU modulation and warp: the widths tell presets apart.
    flags = [(residual, film, warp) for residual, film, warp in itertools.product((True, False), repeat=3)
             if residual or not warp]
    for name, cfg in PRESETS.items():
        for residual, film, warp in flags:
            variant = dataclasses.replace(cfg, residual_output=residual, au_film=film, au_warp=warp)
            if dict(shapes) == expected_shapes(variant):
                return name
    return None


def numel(shape: Iterable[int]) -> int:
    """The number of values in a tensor of ``shape``."""
    count = 1
    for dim in shape:
        count *= int(dim)
    return count
