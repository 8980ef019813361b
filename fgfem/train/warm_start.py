"""Start a new run from trained weights (``fgfem train --init``) instead of random ones.

Why: a CPU hour is precious, and a change to the networks (a new output head, say) or to
the data should not throw away what an earlier run learnt. Every tensor whose name and
shape match is copied; the rest keep their fresh initialisation and are listed, so a
fine-tune that silently loaded nothing is impossible. Optimisers and the step count
start afresh: this is a new run, not a resumed one (that is ``--resume``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
import torch
from torch import nn

from fgfem.errors import FgfemError
from fgfem.train.checkpoint import latest_checkpoint, load_checkpoint
from fgfem.weights import is_training_checkpoint, read_weights_info
from fgfem.weights.keys import CRITIC_PREFIX, GENERATOR_PREFIX, without_prefix


@dataclass(frozen=True)
class WarmStart:
    source: Path
    loaded: int  # tensors copied into the networks
    fresh: tuple[str, ...]  # network tensors the source lacked (or had with another shape)
    ignored: tuple[str, ...]  # source tensors the networks have no place for
    critic: bool  # whether the critic was warm-started too (only checkpoints carry one)

    def summary(self) -> str:
        parts = [f"started from {self.source.name}: {self.loaded} tensors loaded"]
        if not self.critic:
            parts.append("critic from scratch (the file holds a generator only)")
        if self.fresh:
            parts.append(f"{len(self.fresh)} new ({', '.join(self.fresh[:3])}{', ...' if len(self.fresh) > 3 else ''})")
        if self.ignored:
            parts.append(f"{len(self.ignored)} not used ({', '.join(self.ignored[:3])}"
                         f"{', ...' if len(self.ignored) > 3 else ''})")
        return "; ".join(parts)


def warm_start(source: str | Path, *, generator: nn.Module, critic: nn.Module) -> WarmStart:
    """Copy the matching tensors of ``source`` into the networks (before training starts)."""
    path = Path(source)
    generator_state, critic_state = _read_states(path)
    loaded_g, fresh_g, ignored_g = _copy_matching(generator, generator_state)
    loaded_d, fresh_d, ignored_d = (0, [], []) if critic_state is None else _copy_matching(critic, critic_state)
    if loaded_g == 0:
        raise FgfemError(f"--init {path}: none of its tensors fits this run's generator; was it trained with "
                         "another preset or width?")
    return WarmStart(source=path, loaded=loaded_g + loaded_d, fresh=tuple(fresh_g + [f"D/{k}" for k in fresh_d]),
                     ignored=tuple(ignored_g + [f"D/{k}" for k in ignored_d]), critic=critic_state is not None)


def _read_states(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """Generator (and critic, for a checkpoint) tensors of a run folder, checkpoint or weights file."""
    if path.is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise FgfemError(f"--init {path}: this folder has no checkpoints (expected a run folder of fgfem train)")
        path = latest
    if not path.is_file():
        raise FgfemError(f"--init {path} does not exist")
    if _is_checkpoint(path):
        tensors = load_checkpoint(path).tensors
        return without_prefix(GENERATOR_PREFIX, tensors), without_prefix(CRITIC_PREFIX, tensors)
    read_weights_info(path)  # one clear line if it is not an fgfem weights file
    return safetensors.torch.load_file(str(path)), None


def _is_checkpoint(path: Path) -> bool:
    """``fgfem.weights.is_training_checkpoint``, its refusal worded for ``--init``."""
    try:
        return is_training_checkpoint(path)
    except FgfemError as problem:  # not a safetensors file at all, or a damaged one
        raise FgfemError(f"--init {path} is not a .safetensors checkpoint or weights file ({problem})") from None


def _copy_matching(network: nn.Module, state: dict[str, torch.Tensor]) -> tuple[int, list[str], list[str]]:
    own = network.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    with torch.no_grad():
        for key, value in fitting.items():
            own[key].copy_(value.to(own[key].dtype))
    fresh = [k for k in own if k not in fitting]
    ignored = [k for k in state if k not in fitting]
    return len(fitting), fresh, ignored
