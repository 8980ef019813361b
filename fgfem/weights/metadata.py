"""What a weights file declares about itself (docs/design.md, "Weights files"), as JSON strings and back.

safetensors metadata is a flat ``str -> str`` map, so every value is stored as JSON. Reading
checks every key against this fgfem's networks and AU list before a tensor is built, and
says in one line what is wrong with the file and what to do about it. A training
checkpoint carries its own metadata (``fgfem.train.checkpoint``); ``checkpoint_info``
reads the generator's part of it the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fgfem import __version__
from fgfem.aus import AU_CODES
from fgfem.errors import FgfemError, first_line
from fgfem.nets import NetConfig

FORMAT = "fgfem-generator-v1"
DEFAULT_CROP_TEMPLATE = "fgfem-crop-v1"
REQUIRED_METADATA = ("fgfem_format", "config", "aus", "image_size", "crop_template", "fgfem_version", "training")
STORAGE_DTYPES: dict[torch.dtype, str] = {
    torch.float32: "float32",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
}


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


# ---------------------------------------------------------------------------- writing


def encode_metadata(cfg: NetConfig, *, storage: torch.dtype, crop_template: str,
                    training: dict[str, Any] | None) -> dict[str, str]:
    """The metadata of a new weights file for ``cfg``, every value a JSON string."""
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
    return {key: _to_json(key, value) for key, value in metadata.items()}


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


def parse_metadata(path: Path, metadata: dict[str, str]) -> WeightsInfo:
    """The ``WeightsInfo`` an exported weights file declares, or one line on why fgfem cannot use it."""
    if "fgfem_format" not in metadata:
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


def checkpoint_info(path: Path, text: str) -> WeightsInfo:
    """What a training checkpoint says about its generator: the network, and a summary like ``fgfem export``'s."""
    try:
        meta = json.loads(text)
        cfg = NetConfig.from_dict(meta["net"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as problem:
        raise FgfemError(f"{path} is an fgfem training checkpoint with unreadable metadata ({first_line(problem)}); "
                         "use an older checkpoint of the run") from None
    if cfg.num_aus != len(AU_CODES):
        raise FgfemError(f"{path} was trained with {cfg.num_aus} AUs; fgfem uses the {len(AU_CODES)} OpenFace AUs")
    training = {"steps": meta.get("step"), "epochs": meta.get("epoch"), "images_seen": meta.get("images_seen"),
                "checkpoint": path.name}
    return WeightsInfo(cfg=cfg, aus=AU_CODES, crop_template=DEFAULT_CROP_TEMPLATE, training=training,
                       version=str(meta.get("fgfem_version", __version__)), format=FORMAT)
