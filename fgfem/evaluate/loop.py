"""The evaluation loop: every metric of ``fgfem eval`` over a generator and a list of face crops.

Per batch of faces the generator runs twice: once for the zero edit and every one-AU edit
together, once for the cycles back. Any module ``(x, rel_aus / 5) -> image`` will do, so a
stand-in that returns ``x`` must score perfectly (the tests check that).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from fgfem.aus import AU_MAX, AU_MIN, AU_SCALE, NUM_AUS
from fgfem.errors import FgfemError
from fgfem.evaluate.config import EvalConfig
from fgfem.evaluate.crops import CropMeasurer, distance, measure
from fgfem.evaluate.metrics import psnr, ssim
from fgfem.evaluate.report import Accumulator, EvalReport

ProgressFn = Callable[[int, int], None]


def evaluate_generator(
    generator: torch.nn.Module,
    images: Sequence[torch.Tensor] | Callable[[int], torch.Tensor],
    count: int,
    *,
    config: EvalConfig = EvalConfig(),
    device: Any = None,
    progress: ProgressFn | None = None,
) -> EvalReport:
    """Run every metric on ``count`` face crops (3 x s x s in [-1, 1]; a list or a loader ``i -> tensor``).

    ``generator`` is any module ``(x, rel_aus / 5) -> image`` (a stand-in returning ``x``
    must score perfectly, which the tests check). ``device`` is a ``DeviceChoice``
    (default: the CPU, no autocast).
    """
    from fgfem.devices import resolve_device

    config.check()
    if count < 1:
        raise FgfemError("no faces to evaluate")
    device = device or resolve_device("cpu")
    load = images if callable(images) else images.__getitem__
    indices = config.au_indices()
    measurer = CropMeasurer(identity=config.identity)
    use_identity = measurer.has_identity
    started = time.perf_counter()
    acc = Accumulator(indices, use_identity)
    generator = generator.eval()
    for start in range(0, count, config.batch):
        x = torch.stack([load(i) for i in range(start, min(count, start + config.batch))]).float()
        acc.add(*_evaluate_batch(generator, x, indices, config.intensity, device, measurer, use_identity))
        if progress:
            progress(min(count, start + config.batch), count)
    return acc.report(config, image_size=int(x.shape[-1]), identity_note=measurer.identity_note,
                      seconds=time.perf_counter() - started)


def _generate(generator: torch.nn.Module, x: torch.Tensor, rel: torch.Tensor, device: Any) -> torch.Tensor:
    """G(x, rel / 5) on the device (autocast where it pays), float32 on the CPU."""
    with torch.inference_mode(), device.autocast():
        out = generator(x.to(device.device), (rel / AU_SCALE).to(device.device))
    return out.float().clamp(-1, 1).cpu()


def _evaluate_batch(generator: torch.nn.Module, x: torch.Tensor, indices: list[int], intensity: float, device: Any,
                    measurer: CropMeasurer, identity: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """All metrics of one batch of faces: one pass for G(x, 0) and every edit, one for the cycles."""
    faces, edits = x.shape[0], len(indices)
    rel = torch.zeros(edits + 1, faces, NUM_AUS)
    for k, index in enumerate(indices):
        rel[k + 1, :, index] = intensity
    out = _generate(generator, x.repeat(edits + 1, 1, 1, 1), rel.flatten(0, 1), device)
    out = out.view(edits + 1, faces, *x.shape[1:])
    back = _generate(generator, out[1:].flatten(0, 1), -rel[1:].flatten(0, 1), device).view(edits, faces, *x.shape[1:])

    source = measure(measurer, x, identity)
    recon = measure(measurer, out[0], identity)
    zero = {
        "psnr": psnr(out[0], x), "ssim": ssim(out[0], x),
        "au_drift": np.abs(recon.aus - source.aus).mean(axis=1),
        "identity": distance(recon, source),
    }
    per_edit = []
    for k, index in enumerate(indices):
        edited = measure(measurer, out[k + 1], identity)
        requested = np.clip(source.aus[:, index] + intensity, AU_MIN, AU_MAX) - source.aus[:, index]
        per_edit.append({
            "requested": requested,
            "change": edited.aus - source.aus,
            "cycle_psnr": psnr(back[k], x),
            "identity": distance(edited, source),
        })
    return zero, per_edit
