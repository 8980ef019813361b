"""``fgfem eval`` as one call: the weights file and the held-out faces of a folder, to a report.

The weights file is found by ``fgfem.weights.locate_weights``, the lookup every command
shares, so ``--weights`` means the same file here as in ``fgfem edit``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fgfem.evaluate.config import EvalConfig
from fgfem.evaluate.held_out import select_faces
from fgfem.evaluate.loop import ProgressFn, evaluate_generator
from fgfem.evaluate.report import EvalReport


def evaluate(
    data: str | Path,
    weights: str | Path | None = None,
    *,
    only: str | Path | None = None,
    limit: int | None = None,
    config: EvalConfig = EvalConfig(),
    device: str = "auto",
    progress: ProgressFn | None = None,
) -> EvalReport:
    """Load the generator and the held-out faces of ``data``, then run ``evaluate_generator``."""
    from fgfem.devices import resolve_device
    from fgfem.faces.align import TEMPLATE_VERSION
    from fgfem.train.data import load_image
    from fgfem.weights import load_generator, locate_weights

    config.check()
    path = locate_weights(weights)
    held = select_faces(data, only=only, limit=limit)
    choice = resolve_device(device)
    generator, info = load_generator(path, choice.device)
    size = info.image_size
    report = evaluate_generator(generator, lambda i: load_image(held.records[i].path, size), len(held.records),
                                config=config, device=choice, progress=progress)
    report.weights = weights_summary(path, info)
    report.data = {
        "root": str(data), "layout": held.layout, "only": str(only) if only else None, "limit": limit,
        "unmatched_only_entries": list(held.unmatched), "device": str(choice.device),
        "crop_template_matches": info.crop_template == TEMPLATE_VERSION,
    }
    report.face_keys = [r.key for r in held.records]
    return report


def weights_summary(path: Path, info: Any) -> dict[str, Any]:
    """What the JSON says about the model evaluated (from its metadata)."""
    from fgfem.weights import summarise_training

    return {
        "file": str(path), "name": path.name, "preset": info.preset, "conv_dim": info.cfg.conv_dim,
        "image_size": info.image_size, "num_params": info.num_params, "crop_template": info.crop_template,
        "fgfem_version": info.version, "storage_dtype": info.dtype, "training": info.training,
        "training_summary": summarise_training(info.training),
    }
