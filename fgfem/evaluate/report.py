"""The numbers of one evaluation: per-face values gathered batch by batch, reduced to means, written as JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fgfem.aus import AU_CODES, NUM_AUS
from fgfem.evaluate.config import EvalConfig
from fgfem.evaluate.crops import FACE_BOX, SAME_PERSON_THRESHOLD


@dataclass
class AUEditMetrics:
    """Quality of +intensity edits of one AU, averaged over the faces."""

    au: str
    requested: float  # mean requested change (clip(src + intensity, 0, 5) - src)
    measured_change: float  # mean AUs(G(x, r)) - AUs(x) on this AU
    mse: float  # mean (measured change - requested change)^2
    leakage_mae: float  # mean |change| of the AUs not asked for
    leakage_mse: float
    leakage_by_au: dict[str, float]  # mean |change| of each AU not asked for
    cycle_psnr: float  # mean PSNR of G(G(x, r), -r) vs x
    identity_distance: float | None = None  # mean descriptor distance G(x, r) vs x
    identity_same_person: float | None = None  # fraction of faces below SAME_PERSON_THRESHOLD


@dataclass
class EvalReport:
    """Every number of one evaluation, with what it was measured on."""

    faces: int
    image_size: int
    intensity: float
    reconstruction: dict[str, float | None]
    edits: list[AUEditMetrics]
    summary: dict[str, float | None]
    landmarks: str
    identity_model: str
    seconds: float
    weights: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    face_keys: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Accumulator:
    """Per-face numbers of all batches, reduced to means at the end."""

    def __init__(self, indices: list[int], identity: bool) -> None:
        self.indices = indices
        self.identity = identity
        self.zero: dict[str, list[Any]] = {"psnr": [], "ssim": [], "au_drift": [], "identity": []}
        self.edits: list[dict[str, list[Any]]] = [
            {"requested": [], "change": [], "cycle_psnr": [], "identity": []} for _ in indices
        ]

    def add(self, zero: dict[str, Any], per_edit: list[dict[str, Any]]) -> None:
        for key, value in zero.items():
            self.zero[key].append(value)
        for store, values in zip(self.edits, per_edit, strict=True):
            for key, value in values.items():
                store[key].append(value)

    def report(self, config: EvalConfig, *, image_size: int, identity_note: str, seconds: float) -> EvalReport:
        zero = {key: _cat(values) for key, values in self.zero.items()}
        edits = [self._edit_metrics(index, {k: _cat(v) for k, v in store.items()})
                 for index, store in zip(self.indices, self.edits, strict=True)]
        reconstruction = {
            "psnr": _mean(zero["psnr"]), "ssim": _mean(zero["ssim"]), "au_drift_mae": _mean(zero["au_drift"]),
            "identity_distance": _mean(zero["identity"]) if zero["identity"] is not None else None,
        }
        summary = {
            "au_mse": _mean([e.mse for e in edits]),
            "measured_change": _mean([e.measured_change for e in edits]),
            "leakage_mae": _mean([e.leakage_mae for e in edits]),
            "cycle_psnr": _mean([e.cycle_psnr for e in edits]),
            "identity_distance": _mean([e.identity_distance for e in edits]) if self.identity else None,
        }
        return EvalReport(
            faces=len(zero["psnr"]), image_size=image_size, intensity=config.intensity,
            reconstruction=reconstruction, edits=edits, summary=summary,
            landmarks=f"dlib 68-point predictor on the fixed box {list(FACE_BOX)} of the aligned crop",
            identity_model=identity_note if self.identity else f"none ({identity_note})", seconds=round(seconds, 2),
        )

    def _edit_metrics(self, index: int, values: dict[str, np.ndarray | None]) -> AUEditMetrics:
        change, requested = values["change"], values["requested"]
        assert change is not None and requested is not None
        others = [i for i in range(NUM_AUS) if i != index]
        leak = change[:, others]
        identity = values["identity"]
        return AUEditMetrics(
            au=AU_CODES[index],
            requested=_mean(requested),
            measured_change=_mean(change[:, index]),
            mse=_mean((change[:, index] - requested) ** 2),
            leakage_mae=_mean(np.abs(leak)),
            leakage_mse=_mean(leak**2),
            leakage_by_au={AU_CODES[i]: _mean(np.abs(change[:, i])) for i in others},
            cycle_psnr=_mean(values["cycle_psnr"]),
            identity_distance=_mean(identity) if identity is not None else None,
            identity_same_person=_mean(identity < SAME_PERSON_THRESHOLD) if identity is not None else None,
        )


def _cat(values: list[Any]) -> np.ndarray | None:
    if not values or values[0] is None:
        return None
    return np.concatenate([v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for v in values])


def _mean(values: Any) -> float:
    return round(float(np.mean(np.asarray(values, dtype=np.float64))), 6)


def write_report(report: EvalReport, path: str | Path, *, force: bool = False) -> Path:
    """Write the report as JSON, atomically; an existing file needs ``force``."""
    import json

    from fgfem.atomic import write_text
    from fgfem.media import check_writable

    path = check_writable(path, force=force)
    write_text(path, json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n")
    return path
