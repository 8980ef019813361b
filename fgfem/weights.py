"""Generator weights on disk: safetensors with self-describing metadata, never pickle.

A weights file carries everything needed to rebuild and trust the generator: the
network config, the AU order it was trained on, the crop template its inputs must
follow, who wrote it and a training summary. Metadata values are JSON strings
(safetensors metadata is a flat ``str -> str`` map).

Loading checks the file before building anything, so that every way a user can hand
us the wrong file (missing, truncated, a renamed ``.pth``, another preset, another
AU list) ends in one line saying what is wrong and what to do.

The reference implementation (junleen/Expression-manipulator) saves pickled state
dicts; ``convert_reference_checkpoint`` turns one into our format, the only place
where fgfem touches a pickle, with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fgfem import __version__
from fgfem.atomic import atomic_path
from fgfem.aus import AU_CODES
from fgfem.errors import FgfemError
from fgfem.nets import Generator, NetConfig, get_preset
from fgfem.rig.model import RIG_PREFIX

FORMAT = "fgfem-generator-v1"
DEFAULT_CROP_TEMPLATE = "fgfem-crop-v1"
REQUIRED_METADATA = ("fgfem_format", "config", "aus", "image_size", "crop_template", "fgfem_version", "training")
STORAGE_DTYPES: dict[torch.dtype, str] = {
    torch.float32: "float32",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
}
# A safetensors header is small JSON; a larger claimed length means the file is not one.
_MAX_HEADER_BYTES = 100 * 1024 * 1024
_SAFETENSORS_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
                            "U8": 1, "BOOL": 1}


@dataclass(frozen=True)
class WeightsInfo:
    """What a weights file declares about itself (read from its header only)."""

    cfg: NetConfig
    aus: tuple[str, ...]
    crop_template: str
    training: dict[str, Any]
    version: str  # fgfem version that wrote the file
    format: str = FORMAT
    dtype: str = "float32"  # storage dtype; loading always gives float32
    num_params: int = 0
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def preset(self) -> str:
        return self.cfg.name

    @property
    def image_size(self) -> int:
        return self.cfg.image_size


# ---------------------------------------------------------------------------- saving


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
    _check_shapes({k: tuple(v.shape) for k, v in state.items()}, cfg, source="the generator to save")
    tensors = {
        key: value.detach().to("cpu", storage if value.is_floating_point() else value.dtype).contiguous()
        for key, value in state.items()
    }
    metadata = {
        "fgfem_format": FORMAT,
        "config": cfg.to_dict(),
        "aus": list(AU_CODES[: cfg.num_aus]),
        "image_size": cfg.image_size,
        "crop_template": str(crop_template),
        "fgfem_version": __version__,
        "training": dict(training or {}),
        "dtype": STORAGE_DTYPES[storage],
    }
    encoded = {key: _to_json(key, value) for key, value in metadata.items()}

    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=encoded)


def _to_json(key: str, value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True, default=_json_default)
    except (TypeError, ValueError) as problem:
        raise FgfemError(f"weights metadata {key!r} cannot be stored as JSON: {problem}") from None


def _json_default(value: Any) -> Any:
    """Accept the non-JSON values a training summary naturally holds (numpy scalars, paths, tensors)."""
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path | tuple | set):
        return str(value) if isinstance(value, Path) else list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# ---------------------------------------------------------------------------- reading


# What ``fgfem train`` writes: ``RUN/checkpoints/step-N.safetensors`` (both networks, optimisers) and,
# at the end, ``RUN/generator.safetensors`` (``fgfem export``). Their generator tensors are prefixed so.
RUN_EXPORT = "generator.safetensors"
CHECKPOINT_KEY = "fgfem_checkpoint"
CHECKPOINT_GENERATOR_PREFIX = "G/"


def resolve_weights(path: str | Path) -> Path:
    """The file that ``--weights PATH`` stands for: a weights file or checkpoint as given, or a run folder's newest.

    A run folder of ``fgfem train`` gives its exported ``generator.safetensors`` when that was
    exported from the newest checkpoint (it is a fraction of the size), else the newest checkpoint.
    """
    path = Path(path)
    if not path.is_dir():
        return path  # a missing or damaged file is reported by whoever reads it
    from fgfem.train.checkpoint import latest_checkpoint

    newest = latest_checkpoint(path)
    exported = path / RUN_EXPORT
    if exported.is_file() and (newest is None or _exported_from(exported) == newest.name):
        return exported
    if newest is None:
        raise FgfemError(f"{path} is a folder without checkpoints/ or {RUN_EXPORT}: give a weights file "
                         "(.safetensors) or the run folder of fgfem train")
    return newest


def _exported_from(exported: Path) -> str | None:
    """The checkpoint name an exported generator records (``fgfem export``), None when unreadable."""
    try:
        return read_weights_info(exported).training.get("checkpoint")
    except FgfemError:
        return None


def is_training_checkpoint(path: str | Path) -> bool:
    """True for a ``step-N.safetensors`` that ``fgfem train`` wrote (it holds the generator among the rest)."""
    metadata = _read_header(Path(path)).get("__metadata__")
    return isinstance(metadata, dict) and CHECKPOINT_KEY in metadata


def read_weights_info(path: str | Path) -> WeightsInfo:
    """Validate ``path``'s header and metadata against fgfem's networks, without loading tensors.

    ``path`` may also be a training checkpoint or a run folder: its generator part is described.
    """
    path = resolve_weights(path)
    header = _read_header(path)
    metadata = header.get("__metadata__")
    if isinstance(metadata, dict) and CHECKPOINT_KEY in metadata:
        info = _checkpoint_metadata(path, metadata[CHECKPOINT_KEY])
        shapes = {k.removeprefix(CHECKPOINT_GENERATOR_PREFIX): tuple(v["shape"]) for k, v in header.items()
                  if k.startswith(CHECKPOINT_GENERATOR_PREFIX)}
    else:
        info = _parse_metadata(path, metadata)
        # Tensors under ``rig.`` are the AU rig's (``fgfem.rig``), not the generator's.
        shapes = {k: tuple(v["shape"]) for k, v in header.items()
                  if k != "__metadata__" and not k.startswith(RIG_PREFIX)}
    _check_shapes(shapes, info.cfg, source=f"{path.name} (declares preset {info.cfg.name!r}, "
                                           f"conv_dim {info.cfg.conv_dim})")
    num_params = sum(_numel(shape) for shape in shapes.values())
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

        tensors = load_checkpoint(path).tensors
        return {k.removeprefix(CHECKPOINT_GENERATOR_PREFIX): v for k, v in tensors.items()
                if k.startswith(CHECKPOINT_GENERATOR_PREFIX)}
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as problem:  # safetensors raises its own error types for damaged files
        raise FgfemError(f"{path} is damaged and cannot be read ({_first_line(problem)}); copy it again") from None


def _checkpoint_metadata(path: Path, text: str) -> WeightsInfo:
    """What a training checkpoint says about its generator: the network, and a summary like ``fgfem export``'s."""
    try:
        meta = json.loads(text)
        cfg = NetConfig.from_dict(meta["net"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as problem:
        raise FgfemError(f"{path} is an fgfem training checkpoint with unreadable metadata ({_first_line(problem)}); "
                         "use an older checkpoint of the run") from None
    if cfg.num_aus != len(AU_CODES):
        raise FgfemError(f"{path} was trained with {cfg.num_aus} AUs; fgfem uses the {len(AU_CODES)} OpenFace AUs")
    training = {"steps": meta.get("step"), "epochs": meta.get("epoch"), "images_seen": meta.get("images_seen"),
                "checkpoint": path.name}
    return WeightsInfo(cfg=cfg, aus=AU_CODES, crop_template=DEFAULT_CROP_TEMPLATE, training=training,
                       version=str(meta.get("fgfem_version", __version__)), format=FORMAT)


def describe_weights(path: str | Path) -> str:
    """One line about a weights file (used by ``fgfem info``)."""
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


def _read_header(path: Path) -> dict[str, Any]:
    """The safetensors JSON header, after checking that the file is one and is complete."""
    if not path.exists():
        raise FgfemError(f"weights file not found: {path}")
    if not path.is_file():
        raise FgfemError(f"weights path is not a file: {path}")
    size = path.stat().st_size
    with open(path, "rb") as handle:
        start = handle.read(8)
        if _looks_like_pickle(start):
            raise FgfemError(
                f"{path} is a PyTorch pickle checkpoint, not safetensors; fgfem never unpickles weights. "
                f"If it comes from a source you trust, convert it: fgfem weights convert {path.name} NEW.safetensors"
            )
        if len(start) < 8:
            raise FgfemError(f"{path} is not a safetensors file (only {size} bytes); copy it again")
        header_len = int.from_bytes(start, "little")
        if header_len > min(_MAX_HEADER_BYTES, size - 8):
            raise FgfemError(f"{path} is not a safetensors file or is truncated (bad header); copy it again")
        raw = handle.read(header_len)
    try:
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        data_end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        for key, entry in header.items():
            if key != "__metadata__":
                _check_entry(key, entry)
    except (ValueError, KeyError, TypeError, IndexError) as problem:
        raise FgfemError(f"{path} is not a valid safetensors file ({_first_line(problem)})") from None
    expected = 8 + header_len + data_end
    if size < expected:
        raise FgfemError(f"{path} is truncated ({size:,} of {expected:,} bytes); copy or download it again")
    if size > expected:
        raise FgfemError(f"{path} has {size - expected:,} unexpected bytes after its tensors; it is damaged")
    return header


def _check_entry(key: str, entry: Any) -> None:
    begin, end = (int(x) for x in entry["data_offsets"])
    width = _SAFETENSORS_DTYPE_BYTES.get(entry["dtype"])
    if width is None:
        raise ValueError(f"tensor {key!r} has unsupported dtype {entry['dtype']!r}")
    if end - begin != width * _numel(entry["shape"]):
        raise ValueError(f"tensor {key!r} has {end - begin} bytes for shape {entry['shape']}")


def _looks_like_pickle(start: bytes) -> bool:
    """torch.save writes a zip archive; older torch and plain pickle start with PROTO (0x80, 2..5).

    A safetensors file starts with its header length (little-endian u64), which may
    begin with those two bytes too, but then its high bytes are zero.
    """
    if start.startswith(b"PK\x03\x04"):
        return True
    return len(start) == 8 and start[0] == 0x80 and 2 <= start[1] <= 5 and any(start[2:])


def _parse_metadata(path: Path, metadata: Any) -> WeightsInfo:
    if not isinstance(metadata, dict) or "fgfem_format" not in metadata:
        raise FgfemError(
            f"{path} has no fgfem metadata, so fgfem cannot tell which network it fits: give a file written by "
            f"fgfem export or fgfem train (or its run folder); a reference .pth checkpoint is converted first "
            f"with: fgfem weights convert OLD.pth NEW.safetensors"
        )
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise FgfemError(f"{path} lacks the metadata {', '.join(missing)}; re-export it with fgfem")
    try:
        values = {key: json.loads(metadata[key]) for key in (*REQUIRED_METADATA, "dtype") if key in metadata}
    except json.JSONDecodeError as problem:
        raise FgfemError(f"{path} has unreadable metadata ({problem}); re-export it with fgfem") from None
    if values["fgfem_format"] != FORMAT:
        raise FgfemError(
            f"{path} is in format {values['fgfem_format']!r}, this fgfem ({__version__}) reads {FORMAT!r}; "
            f"upgrade fgfem"
        )
    cfg = NetConfig.from_dict(values["config"])
    aus = tuple(values["aus"]) if isinstance(values["aus"], list) else ()
    if aus != AU_CODES or cfg.num_aus != len(AU_CODES):
        extra = sorted(set(aus) - set(AU_CODES))
        lacking = [code for code in AU_CODES if code not in aus]
        detail = (f"extra {extra}" if extra else "") + (f" missing {lacking}" if lacking else "")
        raise FgfemError(
            f"{path} was trained on AUs {list(aus)} but fgfem uses the {len(AU_CODES)} OpenFace AUs "
            f"{', '.join(AU_CODES)} in that order ({detail.strip() or 'different order'}); it cannot be used"
        )
    if values["image_size"] != cfg.image_size:
        raise FgfemError(
            f"{path} is inconsistent: image_size {values['image_size']} but config says {cfg.image_size}"
        )
    training = values["training"] if isinstance(values["training"], dict) else {"summary": values["training"]}
    return WeightsInfo(
        cfg=cfg, aus=aus, crop_template=str(values["crop_template"]), training=training,
        version=str(values["fgfem_version"]), format=FORMAT, dtype=str(values.get("dtype", "float32")),
    )


@functools.lru_cache(maxsize=8)
def expected_shapes(cfg: NetConfig) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of ``Generator(cfg)``, computed on the meta device (no memory, no init)."""
    with torch.device("meta"):
        generator = Generator(cfg)
    return {key: tuple(value.shape) for key, value in generator.state_dict().items()}


def _check_shapes(shapes: Mapping[str, tuple[int, ...]], cfg: NetConfig, *, source: str) -> None:
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
    hint = _guess_preset(shapes)
    raise FgfemError(
        f"{source} does not fit the {cfg.name!r} generator: {'; '.join(problems)}"
        + (f"; the tensors look like preset {hint!r}" if hint and hint != cfg.name else "")
    )


def _guess_preset(shapes: Mapping[str, tuple[int, ...]]) -> str | None:
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


def _numel(shape: Any) -> int:
    count = 1
    for dim in shape:
        count *= int(dim)
    return count


def _first_line(problem: BaseException) -> str:
    text = str(problem).strip()
    return text.splitlines()[0] if text else type(problem).__name__


def _as_device(device: str | torch.device) -> torch.device:
    """A torch.device as given, or a device spec (``auto``, ``cuda:1``) checked by ``resolve_device``."""
    if isinstance(device, torch.device):
        return device
    from fgfem.devices import resolve_device

    return resolve_device(device).device


# ---------------------------------------------------------------------------- reference checkpoints

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
    _check_shapes({k: tuple(v.shape) for k, v in ours.items()}, cfg, source=pth_path.name)
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
    if not _looks_like_pickle(start):
        raise FgfemError(f"{path} is not a PyTorch .pth checkpoint (already safetensors? see: fgfem weights show)")
    warn(PICKLE_WARNING.format(name=path.name))
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as problem:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        raise FgfemError(
            f"cannot read {path} as a plain tensor checkpoint ({_first_line(problem)}); "
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
