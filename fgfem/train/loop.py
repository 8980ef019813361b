"""The training loop, top to bottom: set up, (resume), iterate, log, preview, checkpoint, export.

Each iteration is ``fgfem.train.step.train_step``: a critic update, then on every
``critic_steps``-th step the generator update over the paper's terms and the run's extra
ones (``fgfem.train.terms``, built from the config; ``fgfem.train.inputs`` builds the data
they need). Everything random in a step comes from seeds derived from (seed, step), so a
run resumed from a checkpoint computes exactly the losses the uninterrupted run would have.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape

from fgfem.atomic import write_text
from fgfem.devices import DeviceChoice, cpu_has_bf16, resolve_device
from fgfem.errors import FgfemError
from fgfem.nets import Generator, NetConfig
from fgfem.train import distributed
from fgfem.train.checkpoint import (
    CHECKPOINT_DIR,
    Checkpoint,
    latest_checkpoint,
    load_checkpoint,
    restore,
    save_checkpoint,
)
from fgfem.train.config import TrainConfig
from fgfem.train.data import FaceSet, epoch_loader, preview_faces, preview_records
from fgfem.train.inputs import RunInputs, run_inputs
from fgfem.train.losses import CriticLoss, GeneratorLoss
from fgfem.train.preview import preview_grid, save_preview
from fgfem.train.rig_front import RigFront
from fgfem.train.runlog import METRICS, MetricsLog, Throughput, progress_bar, read_metrics, stop_requests, tensorboard
from fgfem.train.step import Autocast, Nets, build_nets, set_learning_rates, train_step
from fgfem.train.terms import extra_terms
from fgfem.train.warm_start import warm_start

PREVIEWS = "previews"
CONFIG = "config.json"
EXPORT = "generator.safetensors"
RUN_OUTPUTS = (CHECKPOINT_DIR, PREVIEWS, METRICS, CONFIG, EXPORT, "tensorboard")
__all__ = ["TrainResult", "build_nets", "export_generator", "read_metrics", "train", "train_step", "training_device"]


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    images_seen: int
    interrupted: bool
    checkpoint: Path | None
    exported: Path | None
    history: list[dict[str, float]] = field(default_factory=list)  # this process's per-step log lines
    rank: int = 0


# --- the public entry points --------------------------------------------------------------------------------


def train(data_dir: str | Path, run_dir: str | Path, config: TrainConfig | None = None, *,
          overrides: dict[str, Any] | None = None, resume: bool = False, force: bool = False,
          show_progress: bool = True, export: bool = True, console: Console | None = None) -> TrainResult:
    """Train (or continue training) on ``data_dir`` into ``run_dir``; see the module docstring.

    ``overrides`` are settings by key (``TrainConfig.from_cli``); with ``resume`` only those
    that cannot change the run's past are taken, on top of the checkpoint's own config.
    """
    run_dir = Path(run_dir)
    checkpoint = None
    if resume:
        found = latest_checkpoint(run_dir)
        if found is None:
            raise FgfemError(f"nothing to resume: {run_dir} holds no checkpoint; start without --resume")
        checkpoint = load_checkpoint(found)
        config = TrainConfig.from_dict(checkpoint.meta["config"]).with_resume_overrides(overrides or {})
    elif config is None:
        config = TrainConfig.from_cli(overrides or {})

    choice = training_device(config)
    dist_info = distributed.setup(choice.device)
    device = distributed.local_device(choice.device, dist_info)
    choice = DeviceChoice(device=device, autocast_dtype=choice.autocast_dtype)
    try:
        if dist_info.is_main and not resume:
            prepare_run_dir(run_dir, force=force)
        distributed.barrier(dist_info)
        return _run(Path(data_dir), run_dir, config, choice, dist_info, checkpoint,
                    show_progress=show_progress, export=export, console=console or Console(stderr=True))
    finally:
        distributed.teardown(dist_info)


def training_device(config: TrainConfig, *, native_cpu_bf16: bool | None = None) -> DeviceChoice:
    """The device and the autocast the run trains with.

    ``--bf16/--no-bf16`` are honoured as asked. By default bf16 autocast is on where the
    hardware runs bf16 natively: CUDA (as ``resolve_device`` decides) and CPUs with
    AVX512-BF16 or AMX, where ``benchmarks/bench_train.py`` measured the training step faster
    than fp32 with finite losses (figures in ``benchmarks/README.md``); on other CPUs bf16 is
    emulated and slower, so they train in fp32. ``native_cpu_bf16`` replaces the CPU probe (tests).
    """
    choice = resolve_device(config.run.device, bf16=config.run.bf16)
    if config.run.bf16 is None and choice.device.type == "cpu":
        native = cpu_has_bf16() if native_cpu_bf16 is None else native_cpu_bf16
        if native:
            choice = DeviceChoice(device=choice.device, autocast_dtype=torch.bfloat16)
    return choice


def prepare_run_dir(run_dir: Path, *, force: bool) -> None:
    """Refuse to mix a new run into an old one; ``force`` clears fgfem's outputs from it first."""
    if run_dir.exists() and not run_dir.is_dir():
        raise FgfemError(f"--run {run_dir} is a file, not a folder")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if not force:
            raise FgfemError(f"run folder {run_dir} is not empty; continue it with --resume or start over with --force")
        for name in RUN_OUTPUTS:
            target = run_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)


# --- one run ------------------------------------------------------------------------------------------------


def _run(data_dir: Path, run_dir: Path, cfg: TrainConfig, choice: DeviceChoice, dist_info: distributed.DistInfo,
         checkpoint: Checkpoint | None, *, show_progress: bool, export: bool, console: Console) -> TrainResult:
    device, autocast, world = choice.device, choice.autocast, dist_info.world_size
    terms = extra_terms(cfg.loss)
    inputs = run_inputs(data_dir, cfg, terms, world)
    torch.manual_seed(cfg.run.seed)
    net_cfg = cfg.net_config()
    nets = build_nets(net_cfg, cfg, device, dist_info)
    if cfg.nets.rig is not None and hasattr(nets.raw_generator, "own_warp"):
        nets.raw_generator.own_warp = False  # the rig makes the geometry, as in fgfem.editor
    critic_loss = CriticLoss.from_config(cfg.loss)
    generator_loss = GeneratorLoss.from_config(cfg.loss, terms)
    step, images_seen = _starting_point(nets, cfg, checkpoint, console if dist_info.is_main else None)
    outputs = _Outputs(run_dir, cfg, net_cfg, inputs, step=step) if dist_info.is_main else None

    history: list[dict[str, float]] = []
    last_checkpoint = checkpoint.path if checkpoint is not None else None
    interrupted = False
    with stop_requests() as stop, progress_bar(console, inputs.total_steps, step,
                                               enabled=show_progress and outputs is not None) as bar:
        speed = Throughput()
        while step < inputs.total_steps and not interrupted:
            epoch, start = divmod(step, inputs.per_epoch)
            set_learning_rates(nets, cfg, epoch)
            loader = epoch_loader(inputs.dataset, cfg.data.batch, seed=cfg.run.seed, epoch=epoch, rank=dist_info.rank,
                                  world=world, start=start, num_workers=cfg.data.num_workers,
                                  pin_memory=device.type == "cuda",
                                  generator_every=cfg.optim.critic_steps if cfg.nets.rig is not None else 0)
            for batch in loader:
                terms_logged = train_step(nets, batch, step, cfg, critic_loss, generator_loss, device, autocast,
                                          pairs=inputs.pairs)
                terms_logged = distributed.mean_over_ranks(terms_logged, dist_info, device)
                images_seen += cfg.data.batch * world
                record = {"step": step, "epoch": epoch, "lr_g": nets.opt_g.param_groups[0]["lr"],
                          "lr_d": nets.opt_d.param_groups[0]["lr"], **terms_logged}
                history.append(record)
                step += 1
                rate = speed.update(cfg.data.batch * world)
                bar.update(step, rate, terms_logged)
                interrupted = distributed.any_rank(stop.requested, dist_info, device)
                if outputs is not None:
                    saved = outputs.after_step(record, step=step, rate=rate, images_seen=images_seen, nets=nets,
                                               autocast=autocast, last=step == inputs.total_steps or interrupted)
                    last_checkpoint = saved or last_checkpoint
                if interrupted or step >= inputs.total_steps:
                    break
    exported = None
    if outputs is not None:
        outputs.close()
        if export and not interrupted:
            exported = export_generator(run_dir, run_dir / EXPORT, force=True)
    distributed.barrier(dist_info)
    return TrainResult(run_dir=run_dir, step=step, images_seen=images_seen, interrupted=interrupted,
                       checkpoint=last_checkpoint, exported=exported, history=history, rank=dist_info.rank)


def _starting_point(nets: Nets, cfg: TrainConfig, checkpoint: Checkpoint | None,
                    console: Console | None) -> tuple[int, int]:
    """(step, images seen) to start from: a checkpoint's (resume), or 0 from fresh or ``--init`` weights."""
    if checkpoint is not None:
        restore(checkpoint, generator=nets.raw_generator, critic=nets.raw_critic, opt_g=nets.opt_g, opt_d=nets.opt_d)
        return checkpoint.step, int(checkpoint.meta["images_seen"])
    if cfg.nets.init is not None:
        started = warm_start(cfg.nets.init, generator=nets.raw_generator, critic=nets.raw_critic)
        if console is not None:
            console.print(escape(started.summary()))
    return 0, 0


def _preview_geometry(inputs: RunInputs, previews: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Behind the rig: the preview faces moved by it for a batch of relative vectors (faces without landmarks stay)."""
    front, landmarks = inputs.dataset.front, inputs.dataset.landmarks
    if front is None or landmarks is None:
        return None
    unknown = np.full((68, 2), np.nan, dtype=np.float32)
    records = preview_records(inputs.faces, len(previews))
    points = torch.from_numpy(np.stack([landmarks.get(r.key, unknown) for r in records]))

    def moved(rel: torch.Tensor) -> torch.Tensor:
        return front.move(points, rel.cpu()).apply(previews)

    return moved


class _Outputs:
    """What the main process writes: config.json, the metrics log, TensorBoard, previews and checkpoints."""

    def __init__(self, run_dir: Path, cfg: TrainConfig, net_cfg: NetConfig, inputs: RunInputs, *, step: int) -> None:
        self.run_dir, self.cfg, self.inputs = run_dir, cfg, inputs
        self.meta = {"config": cfg.to_dict(), "net": net_cfg.to_dict(), "data": inputs.faces.summary()}
        self.previews = preview_faces(inputs.faces, cfg.data.image_size)
        self.preview_geometry = _preview_geometry(inputs, self.previews)
        write_text(run_dir / CONFIG, json.dumps({"train": self.meta["config"], "net": self.meta["net"],
                                                 "data": self.meta["data"]}, indent=2) + "\n")
        self.log = MetricsLog(run_dir / METRICS, keep_before=step)
        self.board = tensorboard(run_dir)

    def after_step(self, record: dict[str, float], *, step: int, rate: float, images_seen: int, nets: Nets,
                   autocast: Autocast, last: bool) -> Path | None:
        """Log the step that just ended (``step`` steps done); preview and checkpoint when due. The checkpoint."""
        run = self.cfg.run
        if step % run.log_every == 0 or step == self.inputs.total_steps:
            self.log.write(dict(record, img_per_s=round(rate, 3), images_seen=images_seen))
        if self.board is not None:
            for key, value in record.items():
                if key not in ("step", "epoch", "lr_g", "lr_d"):
                    self.board.add_scalar(key, value, step)
        if step % run.preview_every == 0 or step == self.inputs.total_steps:
            grid = preview_grid(nets.raw_generator, self.previews, autocast=autocast(),
                                geometry=self.preview_geometry)
            save_preview(self.run_dir / PREVIEWS / f"step-{step:08d}.png", grid, self.cfg.data.image_size)
        if step % run.save_every != 0 and not last:
            return None
        meta = dict(self.meta, step=step, epoch=step // self.inputs.per_epoch, images_seen=images_seen)
        return save_checkpoint(self.run_dir, generator=nets.raw_generator, critic=nets.raw_critic, opt_g=nets.opt_g,
                               opt_d=nets.opt_d, meta=meta, keep_last=run.keep_last)

    def close(self) -> None:
        self.log.close()
        if self.board is not None:
            self.board.close()


# --- export -------------------------------------------------------------------------------------------------


def export_generator(
    run_dir: str | Path, out: str | Path | None = None, *, force: bool = False, dtype: str = "float32"
) -> Path:
    """Write the latest checkpoint's generator as a weights file with a training summary.

    ``dtype`` float16 halves the file for shipping; loading casts back to float32. A run
    trained behind an AU rig (``--rig``) exports with that rig: the generator expects it.
    """
    from fgfem.media import check_writable
    from fgfem.weights import STORAGE_DTYPES, save_generator
    from fgfem.weights.keys import GENERATOR_PREFIX, without_prefix

    by_name = {name: torch_dtype for torch_dtype, name in STORAGE_DTYPES.items()}
    if dtype not in by_name:
        raise FgfemError(f"unknown export dtype {dtype!r}; choose one of: {', '.join(by_name)}")

    run_dir = Path(run_dir)
    found = latest_checkpoint(run_dir)
    if found is None:
        raise FgfemError(f"{run_dir} holds no checkpoint to export; train first (fgfem train DATA --run {run_dir})")
    out = Path(out) if out is not None else run_dir / EXPORT
    check_writable(out, force=force)
    checkpoint = load_checkpoint(found)
    net_cfg = NetConfig.from_dict(checkpoint.meta["net"])
    generator = Generator(net_cfg)
    generator.load_state_dict(without_prefix(GENERATOR_PREFIX, checkpoint.tensors))
    generator.eval()
    summary = {
        "steps": checkpoint.step,
        "epochs": checkpoint.meta["epoch"],
        "images_seen": checkpoint.meta["images_seen"],
        "data": checkpoint.meta["data"],
        "config": _shareable_config(checkpoint.meta["config"]),
        "checkpoint": found.name,
    }
    # The rig is read before anything is written: a moved or missing rig file is one error, not half an export.
    trained_behind = TrainConfig.from_dict(checkpoint.meta["config"]).nets.rig
    rig = None if trained_behind is None else RigFront.from_weights(trained_behind, net_cfg.image_size).rig
    save_generator(out, generator, net_cfg, dtype=by_name[dtype], training=summary)
    if rig is not None:
        from fgfem.rig.store import put_rig

        put_rig(out, rig)
    return out


def _shareable_config(config: dict[str, Any]) -> dict[str, Any]:
    """The training config for a file that gets shared: paths of this machine reduced to file names.

    Grouped (this fgfem) or flat (checkpoints written before the grouping): the paths are found either way.
    """
    shared: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            shared[key] = _shareable_config(value)
        else:
            shared[key] = Path(value).name if key in ("holdout", "init", "rig") and value else value
    return shared


def describe_faces(faces: FaceSet) -> str:
    return f"{len(faces.train)} training faces ({faces.layout} layout), {len(faces.held_out)} held out"
