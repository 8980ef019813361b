"""Training checkpoints without pickle: one ``.safetensors`` file per save, verified on load.

Tensors (both networks, both Adam states, torch RNG states) are the file's tensors; the rest
(step, epoch, config, optimiser settings, numpy/python RNG states) is JSON in its metadata,
together with a SHA-256 over all of it, so a damaged file is refused instead of resumed from.
Files are written atomically; ``checkpoints/latest`` names the newest one and is replaced
only after that file is complete, so a ``kill -9`` at any moment leaves a usable run.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import nn

from fgfem.atomic import write_bytes, write_text
from fgfem.errors import FgfemError
from fgfem.weights.keys import CRITIC_PREFIX, GENERATOR_PREFIX, with_prefix, without_prefix

FORMAT = "fgfem-train-checkpoint/1"
CHECKPOINT_DIR = "checkpoints"
LATEST = "latest"
_NAME = re.compile(r"^step-(\d+)\.safetensors$")


@dataclass
class Checkpoint:
    """A verified checkpoint read back into memory."""

    path: Path
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.meta["step"])


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}.safetensors"


# --- save -----------------------------------------------------------------------------------------------


def save_checkpoint(run_dir: Path, *, generator: nn.Module, critic: nn.Module, opt_g: torch.optim.Optimizer,
                    opt_d: torch.optim.Optimizer, meta: dict[str, Any], keep_last: int) -> Path:
    """Write ``checkpoints/step-N.safetensors`` (N = ``meta["step"]``), point ``latest`` at it, prune old ones."""
    tensors: dict[str, torch.Tensor] = {}
    tensors.update(with_prefix(GENERATOR_PREFIX, generator.state_dict()))
    tensors.update(with_prefix(CRITIC_PREFIX, critic.state_dict()))
    optimizers = {}
    for name, opt in (("opt_g", opt_g), ("opt_d", opt_d)):
        opt_tensors, optimizers[name] = _split_optimizer(opt.state_dict())
        tensors.update(with_prefix(f"{name}/", opt_tensors))
    tensors["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{index}"] = state
    full_meta = dict(meta, format=FORMAT, optimizers=optimizers, rng=_host_rng_states())
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    header = json.dumps(full_meta, sort_keys=True)
    metadata = {"fgfem_checkpoint": header, "sha256": _digest(header, tensors)}

    folder = checkpoint_dir(run_dir)
    path = folder / checkpoint_name(int(meta["step"]))
    write_bytes(path, safetensors.torch.save(tensors, metadata=metadata))
    write_text(folder / LATEST, path.name + "\n")
    prune_checkpoints(folder, keep_last, protect=path.name)
    return path


def _split_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Adam's state dict as (tensors, JSON): moments and step counts are tensors, settings are JSON."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}/{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _host_rng_states() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": [version, list(internal), gauss],
    }


def _digest(header: str, tensors: dict[str, torch.Tensor]) -> str:
    sha = hashlib.sha256(header.encode("utf-8"))
    for key in sorted(tensors):
        value = tensors[key]
        sha.update(f"{key}|{value.dtype}|{tuple(value.shape)}".encode())
        sha.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()


def prune_checkpoints(folder: Path, keep_last: int, *, protect: str | None = None) -> None:
    """Delete all but the newest ``keep_last`` checkpoints (never ``protect``) and stale partial files."""
    for stale in folder.glob(".step-*.partial-*"):
        stale.unlink(missing_ok=True)
    for path in list_checkpoints(folder)[:-keep_last]:
        if path.name != protect:
            path.unlink(missing_ok=True)


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoint files in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m[1]), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


# --- load -----------------------------------------------------------------------------------------------


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint ``latest`` names, else the newest file present, else None."""
    folder = checkpoint_dir(run_dir)
    pointer = folder / LATEST
    if pointer.is_file():
        name = pointer.read_text(encoding="utf-8").strip()
        if _NAME.match(name) and (folder / name).is_file():
            return folder / name
    found = list_checkpoints(folder)
    return found[-1] if found else None


def load_checkpoint(path: Path) -> Checkpoint:
    """Read and verify ``path``; any damage is one FgfemError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FgfemError(f"checkpoint {path} does not exist")
    corrupt = f"checkpoint {path} is corrupt"
    data = path.read_bytes()
    try:
        (header_len,) = struct.unpack("<Q", data[:8])
        metadata = json.loads(data[8 : 8 + header_len])["__metadata__"]
        tensors = safetensors.torch.load(data)
        header, expected = metadata["fgfem_checkpoint"], metadata["sha256"]
        meta = json.loads(header)
    except Exception as problem:  # any parse failure means the bytes are damaged
        raise FgfemError(f"{corrupt} ({type(problem).__name__}); resume from an older one or retrain") from None
    if _digest(header, tensors) != expected:
        raise FgfemError(f"{corrupt} (SHA-256 mismatch); resume from an older one or retrain")
    if meta.get("format") != FORMAT:
        raise FgfemError(f"{path} is not an fgfem training checkpoint (format {meta.get('format')!r})")
    return Checkpoint(path=path, tensors=tensors, meta=meta)


def restore(checkpoint: Checkpoint, *, generator: nn.Module, critic: nn.Module, opt_g: torch.optim.Optimizer,
            opt_d: torch.optim.Optimizer, rng: bool = True) -> None:
    """Put networks, optimisers and (with ``rng``) every random generator back where the checkpoint left them."""
    generator.load_state_dict(without_prefix(GENERATOR_PREFIX, checkpoint.tensors))
    critic.load_state_dict(without_prefix(CRITIC_PREFIX, checkpoint.tensors))
    for name, opt in (("opt_g", opt_g), ("opt_d", opt_d)):
        opt.load_state_dict(_join_optimizer(without_prefix(f"{name}/", checkpoint.tensors),
                                            checkpoint.meta["optimizers"][name]))
    if rng:
        torch.set_rng_state(checkpoint.tensors["rng/torch"])
        cuda_states = [v for k, v in sorted(checkpoint.tensors.items()) if k.startswith("rng/cuda/")]
        if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        kind, keys, pos, has_gauss, cached = checkpoint.meta["rng"]["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        version, internal, gauss = checkpoint.meta["rng"]["python"]
        random.setstate((version, tuple(internal), gauss))


def _join_optimizer(tensors: dict[str, torch.Tensor], stored: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, name = key.split("/", 1)
        state.setdefault(int(index), {})[name] = value
    for index, values in stored["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": stored["param_groups"]}
