"""The AU rig: a change of Action Units -> how each of the 68 landmarks moves.

The inverse of the landmark AU estimator (``fgfem.au_reading.estimator``): the estimator reads
17 AUs off the landmarks, the rig says where the landmarks go when those AUs change. Both
were fitted together (``fgfem.rig.fit``) so that what an edit asks is what ``fgfem aus``
reads back. The rig is linear in the AU change, in the canonical face frame (eye centres
at (+-0.5, 0), y down, inter-ocular units), and each AU moves only the landmarks of its
anatomical region (``fgfem.rig.regions``).

It travels inside the weights file, next to the generator: tensor ``rig.patterns``
(17 x 68 x 2 float32) and metadata key ``rig`` (JSON: version, frame, how it was fitted).
Files without a rig still load; their edits are the generator's alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fgfem.aus import AU_CODES, NUM_AUS
from fgfem.errors import FgfemError
from fgfem.rig.regions import NUM_LANDMARKS, region_mask

RIG_PREFIX = "rig."
"""Tensors of a weights file whose names start with this belong to the rig, not the generator."""
PATTERNS_KEY = RIG_PREFIX + "patterns"
METADATA_KEY = "rig"
RIG_VERSION = "fgfem-rig-v1"
FRAME = "canonical-eyes-v1"
"""Eye centres at (-0.5, 0) and (0.5, 0), x to the image's right, y down, inter-ocular units."""


@dataclass(frozen=True)
class AURig:
    """Per-AU landmark motion patterns for one unit of each AU (OpenFace's 0-5 scale)."""

    patterns: np.ndarray
    """17 x 68 x 2, canonical frame, inter-ocular units per AU unit."""
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        patterns = np.asarray(self.patterns, dtype=np.float32)
        if patterns.shape != (NUM_AUS, NUM_LANDMARKS, 2):
            raise FgfemError(f"a rig holds {NUM_AUS} x {NUM_LANDMARKS} x 2 patterns, got {patterns.shape}")
        if not np.isfinite(patterns).all():
            raise FgfemError("the rig's patterns contain NaN or infinite values")
        outside = np.abs(patterns).sum(axis=2)[~region_mask()]
        if outside.size and outside.max() > 1e-6:
            raise FgfemError("the rig moves landmarks outside the regions its AUs own (fgfem.rig.regions)")
        object.__setattr__(self, "patterns", patterns)

    def canonical_motion(self, deltas: np.ndarray) -> np.ndarray:
        """F x 68 x 2 canonical-frame motion for F x 17 AU changes (or 68 x 2 for one 17-vector)."""
        deltas = np.asarray(deltas, dtype=np.float64)
        motion = np.einsum("fk,kpc->fpc", np.atleast_2d(deltas), self.patterns.astype(np.float64))
        return motion[0] if deltas.ndim == 1 else motion

    def image_motion(self, landmarks: np.ndarray, deltas: np.ndarray) -> np.ndarray:
        """Image-pixel motion (F x 68 x 2) of faces with these landmarks (F x 68 x 2) under ``deltas``.

        The canonical frame of each face is its own eye line: the motion is rotated by the
        face's roll and scaled by its inter-ocular distance, so a tilted or small face moves
        the same way, relative to itself, as an upright large one.
        """
        points = np.asarray(landmarks, dtype=np.float64).reshape(-1, NUM_LANDMARKS, 2)
        motion = np.asarray(self.canonical_motion(np.atleast_2d(deltas)), dtype=np.float64)
        if len(motion) != len(points):
            raise FgfemError(f"{len(points)} faces but {len(motion)} AU changes")
        axis = points[:, 42:48].mean(axis=1) - points[:, 36:42].mean(axis=1)
        iod = np.linalg.norm(axis, axis=1, keepdims=True)
        cos, sin = (axis / np.maximum(iod, 1e-9)).T
        dx = motion[..., 0] * cos[:, None] - motion[..., 1] * sin[:, None]
        dy = motion[..., 0] * sin[:, None] + motion[..., 1] * cos[:, None]
        return np.stack([dx, dy], axis=-1) * iod[:, :, None]

    # ------------------------------------------------------------------ storage
    def tensors(self) -> dict[str, Any]:
        import torch

        return {PATTERNS_KEY: torch.from_numpy(np.ascontiguousarray(self.patterns))}

    def metadata(self) -> dict[str, str]:
        payload = {"version": RIG_VERSION, "frame": FRAME, "aus": list(AU_CODES), **self.info}
        return {METADATA_KEY: json.dumps(payload, sort_keys=True)}


def load_rig(path: str | Path) -> AURig | None:
    """The rig stored in a weights file, or None when the file has none (older files)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            names = list(handle.keys())  # safe_open handles have no __contains__
            if PATTERNS_KEY not in names:
                return None
            metadata = handle.metadata() or {}
            patterns = handle.get_tensor(PATTERNS_KEY).float().numpy()
    except FgfemError:
        raise
    except Exception as problem:  # safetensors raises its own error types for damaged files
        raise FgfemError(f"{Path(path).name}: the rig cannot be read ({str(problem).splitlines()[0]})") from None
    info = _parse_info(metadata.get(METADATA_KEY), Path(path).name)
    return AURig(patterns=patterns, info={k: v for k, v in info.items() if k not in ("version", "frame", "aus")})


def _parse_info(text: str | None, name: str) -> dict[str, Any]:
    if text is None:
        raise FgfemError(f"{name} has rig tensors but no '{METADATA_KEY}' metadata; re-export it")
    try:
        info = json.loads(text)
    except json.JSONDecodeError:
        raise FgfemError(f"{name}: the rig's metadata is not valid JSON") from None
    if not isinstance(info, dict) or info.get("version") != RIG_VERSION or info.get("frame") != FRAME:
        raise FgfemError(f"{name}: the rig is of another version ({str(info)[:80]}); this fgfem reads {RIG_VERSION}")
    if info.get("aus") != list(AU_CODES):
        raise FgfemError(f"{name}: the rig's AU order differs from fgfem's")
    return info


def describe_rig(path: str | Path) -> str:
    """One line on the rig a weights file holds, or that it has none (its edits are the generator's alone)."""
    rig = load_rig(path)
    if rig is None:
        return "none: edits are the generator's alone (geometry from its own warp, if any)"
    reach = np.abs(rig.patterns).sum(axis=2).max(axis=1)
    largest = AU_CODES[int(reach.argmax())]
    text = f"{RIG_VERSION}, {NUM_AUS} AUs x {NUM_LANDMARKS} landmarks, largest motion {largest} " \
           f"{reach.max():.3f} IOD per unit"
    if rig.info.get("fitted_on"):
        text += f"; fitted on {rig.info['fitted_on']}"
    if rig.info.get("prior_only"):
        text += f"; drawn from FACS, not fitted: {', '.join(rig.info['prior_only'])}"
    if rig.info.get("drawn_shape"):
        text += f"; shape drawn, size fitted: {', '.join(rig.info['drawn_shape'])}"
    return text
