"""The reference code's pickled generators (``.pth``) turned into fgfem weights files.

The reference implementation (junleen/Expression-manipulator, ``UNet_MSF_Generator``) saves
pickled state dicts; ``convert_reference_checkpoint`` maps one onto the ``paper`` form of
fgfem's generator (no residual output, no AU modulation, no warp) and writes it with
``save_generator``. This is the only place where fgfem touches a pickle, and it does so
with ``torch.load(weights_only=True)`` after a warning.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from fgfem.aus import AU_CODES
from fgfem.errors import FgfemError, first_line
from fgfem.nets import Generator, NetConfig, get_preset
from fgfem.weights.format import read_weights_info, save_generator
from fgfem.weights.header import looks_like_pickle
from fgfem.weights.metadata import WeightsInfo
from fgfem.weights.shapes import check_shapes

# Module prefixes: ours -> the reference's (junleen/Expression-manipulator, UNet_MSF_Generator).
# Each of these is a ConvNormAct here and a Sequential(conv, norm, act) there.
_CONV_NORM_PREFIXES: dict[str, str] = {
    "stem": "conv0",
    **{f"down{i}": f"downconv{i}" for i in range(1, 5)},
    "bottleneck": "resblock.0",
    **{f"up{i}": f"upconv{i}" for i in range(1, 5)},
}
for _i in range(1, 4):
    _CONV_NORM_PREFIXES[f"skip{_i}.in_conv"] = f"skipu{_i}.in_conv"
    for _branch in ("hr_to_hr", "lr_to_hr", "hr_to_lr", "lr_to_lr"):
        _CONV_NORM_PREFIXES[f"skip{_i}.fusion.{_branch}"] = f"skipu{_i}.block1.{_branch}"
    _CONV_NORM_PREFIXES[f"skip{_i}.lift"] = f"skipu{_i}.transpose_conv"
    _CONV_NORM_PREFIXES[f"skip{_i}.out3"] = f"skipu{_i}.out_conv1"
    _CONV_NORM_PREFIXES[f"skip{_i}.out5"] = f"skipu{_i}.out_conv2"

# Full tensor names: reference -> ours.
REFERENCE_KEY_MAP: dict[str, str] = {"out_conv.0.weight": "to_rgb.weight"}
for _ours, _theirs in _CONV_NORM_PREFIXES.items():
    REFERENCE_KEY_MAP[f"{_theirs}.0.weight"] = f"{_ours}.conv.weight"
    REFERENCE_KEY_MAP[f"{_theirs}.1.weight"] = f"{_ours}.norm.weight"
    REFERENCE_KEY_MAP[f"{_theirs}.1.bias"] = f"{_ours}.norm.bias"

PICKLE_WARNING = (
    "warning: {name} is a pickle file; it is read with torch.load(weights_only=True), "
    "but only convert checkpoints that come from a source you trust"
)


def _print_warning(message: str) -> None:
    print(message, file=sys.stderr)


def convert_reference_checkpoint(
    pth_path: str | Path,
    out_path: str | Path,
    preset: str | NetConfig = "paper",
    *,
    warn: Callable[[str], None] = _print_warning,
) -> WeightsInfo:
    """Convert a generator ``.pth`` saved by the reference code into an fgfem ``.safetensors``.

    The reference saves ``net_epoch_<N>_id_G.pth`` (a plain state dict; ``module.``
    prefixes from DataParallel are stripped). Its AU count and width are checked
    against ``preset`` before anything is written.
    """
    pth_path, out_path = Path(pth_path), Path(out_path)
    cfg = preset if isinstance(preset, NetConfig) else get_preset(preset)
    # The reference generator re-synthesises the image (tanh output) and has no AU modulation.
    cfg = dataclasses.replace(cfg, residual_output=False, au_film=False, au_warp=False)
    state = _load_reference_state(pth_path, warn)
    _check_reference_layout(pth_path, state, cfg)
    ours = {REFERENCE_KEY_MAP[key]: value for key, value in state.items()}
    check_shapes({k: tuple(v.shape) for k, v in ours.items()}, cfg, source=pth_path.name)
    with torch.device("meta"):
        generator = Generator(cfg)
    generator.load_state_dict({k: v.float() for k, v in ours.items()}, strict=True, assign=True)
    training = {"source": "junleen/Expression-manipulator checkpoint", "converted_from": pth_path.name}
    save_generator(out_path, generator, cfg, training=training)
    return read_weights_info(out_path)


def _load_reference_state(path: Path, warn: Callable[[str], None]) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FgfemError(f"checkpoint not found: {path}")
    with open(path, "rb") as handle:
        start = handle.read(8)
    if not looks_like_pickle(start):
        raise FgfemError(f"{path} is not a PyTorch .pth checkpoint (already safetensors? see: fgfem weights show)")
    warn(PICKLE_WARNING.format(name=path.name))
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as problem:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        raise FgfemError(
            f"cannot read {path} as a plain tensor checkpoint ({first_line(problem)}); "
            f"it is damaged or holds more than a state dict"
        ) from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise FgfemError(f"{path} does not hold a state dict of tensors")
    return {key.removeprefix("module."): value for key, value in loaded.items()}


def _check_reference_layout(path: Path, state: Mapping[str, torch.Tensor], cfg: NetConfig) -> None:
    """Explain the likely mistakes (critic file, other AU count, other width) before a generic shape error."""
    if any(key.startswith("main.") for key in state) and "conv0.0.weight" not in state:
        raise FgfemError(f"{path} is the reference critic (…_id_D.pth); convert the generator (…_id_G.pth)")
    unknown = [key for key in state if key not in REFERENCE_KEY_MAP]
    lacking = [key for key in REFERENCE_KEY_MAP if key not in state]
    if unknown or lacking:
        example = f"unknown {unknown[0]!r}" if unknown else f"missing {lacking[0]!r}"
        raise FgfemError(
            f"{path} is not a UNet_MSF_Generator state dict of the reference code ({example}, "
            f"{len(unknown)} unknown and {len(lacking)} missing tensors)"
        )
    width = state["conv0.0.weight"].shape[0]
    if width != cfg.conv_dim:
        from fgfem.nets import PRESETS

        match = [name for name, p in PRESETS.items() if p.conv_dim == width]
        raise FgfemError(
            f"{path} has conv_dim (ngf) {width}, preset {cfg.name!r} has {cfg.conv_dim}"
            + (f"; use --preset {match[0]}" if match else "; no fgfem preset has that width")
        )
    num_aus = state["resblock.0.0.weight"].shape[1] - state["downconv4.0.weight"].shape[0]
    if num_aus != cfg.num_aus:
        raise FgfemError(
            f"{path} was trained with {num_aus} AUs (cond_nc {num_aus}); fgfem needs the {cfg.num_aus} "
            f"OpenFace AUs {', '.join(AU_CODES)}, so it cannot be converted"
        )
