"""The training loop, top to bottom: set up, (resume), iterate, log, preview, checkpoint, export.

One iteration ("step") is one critic update; every ``critic_steps``-th step also updates
the generator (the reference trains G on iterations 0, 4, 8, ...). The generator's edit
G(x, r) is computed once per step: detached for the critic, attached for the generator.
Everything random in a step comes from seeds derived from (seed, step), so a run resumed
from a checkpoint computes exactly the losses the uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from fgfem.atomic import write_text
from fgfem.devices import DeviceChoice, cpu_has_bf16, resolve_device
from fgfem.errors import FgfemError
from fgfem.nets import Critic, Generator, NetConfig
from fgfem.train import distributed
from fgfem.train.checkpoint import (
    CHECKPOINT_DIR,
    latest_checkpoint,
    load_checkpoint,
    restore,
    save_checkpoint,
)
from fgfem.train.config import TrainConfig
from fgfem.train.data import FaceDataset, FaceSet, batches_per_epoch, epoch_loader, load_faces, preview_faces
from fgfem.train.losses import CriticLoss, GeneratorLoss, landmark_flow_l1, pair_l1, single_au_probes, warp_au_l1
from fgfem.train.pairs import PairSampler, crop_landmarks, find_pairs
from fgfem.train.preview import preview_grid, save_preview
from fgfem.train.warm_start import warm_start

METRICS = "metrics.jsonl"
PREVIEWS = "previews"
CONFIG = "config.json"
EXPORT = "generator.safetensors"
RUN_OUTPUTS = (CHECKPOINT_DIR, PREVIEWS, METRICS, CONFIG, EXPORT, "tensorboard")


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


@dataclass
class Nets:
    """The two networks (possibly DDP-wrapped), their unwrapped selves and their optimisers."""

    generator: torch.nn.Module
    critic: torch.nn.Module
    raw_generator: Generator
    raw_critic: Critic
    opt_g: torch.optim.Adam
    opt_d: torch.optim.Adam


# --- the public entry points --------------------------------------------------------------------------------


def train(data_dir: str | Path, run_dir: str | Path, config: TrainConfig | None = None, *,
          overrides: dict[str, Any] | None = None, resume: bool = False, force: bool = False,
          show_progress: bool = True, export: bool = True, console: Console | None = None) -> TrainResult:
    """Train (or continue training) on ``data_dir`` into ``run_dir``; see the module docstring."""
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
    choice = resolve_device(config.device, bf16=config.bf16)
    if config.bf16 is None and choice.device.type == "cpu":
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
         checkpoint: Any, *, show_progress: bool, export: bool, console: Console) -> TrainResult:
    main = dist_info.is_main
    device = choice.device
    autocast = choice.autocast

    # Data.
    faces = load_faces(data_dir, holdout=cfg.holdout, limit=cfg.limit)
    wanting = [name for name, weight in (("--lambda-flow", cfg.lambda_flow), ("--lambda-warp-au", cfg.lambda_warp_au))
               if weight > 0]
    landmarks = crop_landmarks(data_dir, cfg.image_size) if wanting else None
    if landmarks == {}:
        raise FgfemError(f"{' and '.join(wanting)} need{'s' if len(wanting) == 1 else ''} the landmarks that "
                         f"fgfem prep keeps; {data_dir} has none (prepare it with fgfem prep)")
    dataset = FaceDataset(faces.train, cfg.image_size, target_jitter=cfg.target_jitter,
                          source_jitter=cfg.source_jitter, hflip=cfg.hflip, pad=cfg.pad,
                          landmarks=landmarks if cfg.lambda_warp_au > 0 else None,
                          single_au_targets=cfg.single_au_targets, single_au_change=cfg.single_au_change)
    pair_sampler = None
    if cfg.lambda_pair > 0:
        assert cfg.pair_pattern is not None  # TrainConfig checks it
        pair_sampler = PairSampler(faces.train, find_pairs(faces.train, cfg.pair_pattern), cfg.image_size,
                                   hflip=cfg.hflip, landmarks=landmarks if cfg.lambda_flow > 0 else None)
    per_epoch = batches_per_epoch(len(dataset), cfg.batch, dist_info.world_size)
    total_steps = cfg.epochs * per_epoch if cfg.max_steps is None else min(cfg.max_steps, cfg.epochs * per_epoch)
    preview_batch = preview_faces(faces, cfg.image_size) if main else None

    # Networks, optimisers, losses.
    torch.manual_seed(cfg.seed)
    net_cfg = cfg.net_config()
    nets = build_nets(net_cfg, cfg, device, dist_info)
    critic_loss = CriticLoss(lambda_cond=cfg.lambda_d_cond, regularizer=cfg.regularizer, lambda_gp=cfg.lambda_gp,
                             r1_gamma=cfg.r1_gamma, r1_every=cfg.r1_every)
    generator_loss = GeneratorLoss(lambda_cond=cfg.lambda_g_cond, lambda_idt=cfg.lambda_idt,
                                   lambda_cyc=cfg.lambda_cyc, lambda_tv=cfg.lambda_tv,
                                   lambda_cond_changed=cfg.lambda_cond_changed)

    # Where we stand.
    step, images_seen = 0, 0
    if checkpoint is not None:
        restore(checkpoint, generator=nets.raw_generator, critic=nets.raw_critic, opt_g=nets.opt_g, opt_d=nets.opt_d)
        step, images_seen = checkpoint.step, int(checkpoint.meta["images_seen"])
    elif cfg.init is not None:
        started = warm_start(cfg.init, generator=nets.raw_generator, critic=nets.raw_critic)
        if main:
            console.print(escape(started.summary()))
    if main:
        write_text(run_dir / CONFIG, json.dumps({"train": cfg.to_dict(), "net": net_cfg.to_dict(),
                                                 "data": faces.summary()}, indent=2) + "\n")
    log = MetricsLog(run_dir / METRICS, keep_before=step) if main else None
    board = _tensorboard(run_dir) if main else None

    def snapshot(at_step: int) -> Path | None:
        if not main:
            return None
        meta = {"step": at_step, "epoch": at_step // per_epoch, "images_seen": images_seen,
                "config": cfg.to_dict(), "net": net_cfg.to_dict(), "data": faces.summary()}
        return save_checkpoint(run_dir, generator=nets.raw_generator, critic=nets.raw_critic, opt_g=nets.opt_g,
                               opt_d=nets.opt_d, meta=meta, keep_last=cfg.keep_last)

    history: list[dict[str, float]] = []
    last_checkpoint = checkpoint.path if checkpoint is not None else None
    interrupted = False
    with stop_requests() as stop, _progress(console, total_steps, step, enabled=show_progress and main) as bar:
        speed = Throughput()
        while step < total_steps and not interrupted:
            epoch, start = divmod(step, per_epoch)
            set_learning_rates(nets, cfg, epoch)
            loader = epoch_loader(dataset, cfg.batch, seed=cfg.seed, epoch=epoch, rank=dist_info.rank,
                                  world=dist_info.world_size, start=start, num_workers=cfg.num_workers,
                                  pin_memory=device.type == "cuda")
            for batch in loader:
                terms = train_step(nets, batch, step, cfg, critic_loss, generator_loss, device, autocast,
                                   pair_sampler=pair_sampler)
                terms = distributed.mean_over_ranks(terms, dist_info, device)
                images_seen += cfg.batch * dist_info.world_size
                record = {"step": step, "epoch": epoch, "lr_g": nets.opt_g.param_groups[0]["lr"],
                          "lr_d": nets.opt_d.param_groups[0]["lr"], **terms}
                history.append(record)
                step += 1
                rate = speed.update(cfg.batch * dist_info.world_size)
                if log is not None and (step % cfg.log_every == 0 or step == total_steps):
                    log.write(dict(record, img_per_s=round(rate, 3), images_seen=images_seen))
                if board is not None:
                    for key, value in terms.items():
                        board.add_scalar(key, value, step)
                bar.update(step, rate, terms)
                if main and (step % cfg.preview_every == 0 or step == total_steps):
                    grid = preview_grid(nets.raw_generator, preview_batch, autocast=autocast())
                    save_preview(run_dir / PREVIEWS / f"step-{step:08d}.png", grid, cfg.image_size)
                interrupted = distributed.any_rank(stop.requested, dist_info, device)
                if step % cfg.save_every == 0 or step == total_steps or interrupted:
                    last_checkpoint = snapshot(step) or last_checkpoint
                if interrupted or step >= total_steps:
                    break
    if log is not None:
        log.close()
    if board is not None:
        board.close()
    exported = None
    if export and main and not interrupted:
        exported = export_generator(run_dir, run_dir / EXPORT, force=True)
    distributed.barrier(dist_info)
    return TrainResult(run_dir=run_dir, step=step, images_seen=images_seen, interrupted=interrupted,
                       checkpoint=last_checkpoint, exported=exported, history=history,
                       rank=dist_info.rank)


def build_nets(net_cfg: NetConfig, cfg: TrainConfig, device: torch.device, dist_info: distributed.DistInfo) -> Nets:
    """Both networks on ``device`` (channels_last if asked), DDP-wrapped when distributed, with Adam."""
    raw_g, raw_d = Generator(net_cfg).to(device), Critic(net_cfg).to(device)
    if cfg.channels_last:
        raw_g = raw_g.to(memory_format=torch.channels_last)
        raw_d = raw_d.to(memory_format=torch.channels_last)
    opt_g = torch.optim.Adam(raw_g.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
    opt_d = torch.optim.Adam(raw_d.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
    return Nets(generator=distributed.wrap(raw_g, dist_info, device), critic=distributed.wrap(raw_d, dist_info, device),
                raw_generator=raw_g, raw_critic=raw_d, opt_g=opt_g, opt_d=opt_d)


def set_learning_rates(nets: Nets, cfg: TrainConfig, epoch: int) -> None:
    for opt, base in ((nets.opt_g, cfg.lr_g), (nets.opt_d, cfg.lr_d)):
        for group in opt.param_groups:
            group["lr"] = cfg.learning_rate(base, epoch)


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The random source of one step's own draws (the gradient penalty's mixing weights)."""
    state = np.random.SeedSequence([seed, 0x5EED, step, rank]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed((int(state[0]) << 31) ^ int(state[1]))


def train_step(nets: Nets, batch: dict[str, torch.Tensor], step: int, cfg: TrainConfig, critic_loss: CriticLoss,
               generator_loss: GeneratorLoss, device: torch.device,
               autocast: Any, pair_sampler: PairSampler | None = None) -> dict[str, float]:
    """One critic update, plus a generator update on every ``critic_steps``-th step; returns the logged terms."""
    memory = torch.channels_last if cfg.channels_last else torch.contiguous_format
    x = batch["x"].to(device, non_blocking=True).contiguous(memory_format=memory)
    a_x, a_t, rel = (batch[k].to(device, non_blocking=True) for k in ("a_x", "a_t", "rel"))
    train_g = step % cfg.critic_steps == 0
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0

    with torch.set_grad_enabled(train_g), autocast():
        fake = nets.generator(x, rel)

    draws = step_generator(cfg.seed, step, rank)
    with autocast():
        d_total, terms = critic_loss(nets.critic, x, fake, a_x, step=step, generator=draws)
    nets.opt_d.zero_grad(set_to_none=True)
    d_total.backward()
    nets.opt_d.step()

    if train_g:
        # The critic is only a judge here: call it unwrapped (no DDP sync) and without weight gradients.
        nets.raw_critic.requires_grad_(False)
        with autocast():
            g_total, g_terms = generator_loss(nets.generator, nets.raw_critic, x, fake, rel, a_t)
            if pair_sampler is not None:
                pair = pair_sampler.sample(cfg.pair_batch, draws)
                edited, pair_flow = nets.generator(pair.source.to(device), pair.rel.to(device), return_flow=True)
                g_terms["g_pair"] = pair_l1(edited, pair.target.to(device))
                g_total = g_total + cfg.lambda_pair * g_terms["g_pair"]
                if cfg.lambda_flow > 0:
                    assert pair_flow is not None and pair.source_points is not None  # checked before training
                    g_terms["g_flow"] = landmark_flow_l1(pair_flow, pair.source_points, pair.target_points)
                    g_total = g_total + cfg.lambda_flow * g_terms["g_flow"]
            if cfg.lambda_warp_au > 0:
                probes = single_au_probes(x.shape[0], draws).to(device)
                _, probe_flow = nets.generator(x, probes, return_flow=True)
                assert probe_flow is not None  # TrainConfig checks for a warp generator
                g_terms["g_warp_au"] = warp_au_l1(probe_flow, batch["points"], probes)
                g_total = g_total + cfg.lambda_warp_au * g_terms["g_warp_au"]
            g_terms["g_total"] = g_total
        nets.opt_g.zero_grad(set_to_none=True)
        g_total.backward()
        nets.opt_g.step()
        nets.raw_critic.requires_grad_(True)
        terms.update(g_terms)
    values = {key: float(value.detach()) for key, value in terms.items()}
    bad = [key for key, value in values.items() if not np.isfinite(value)]
    if bad:
        raise FgfemError(f"training diverged at step {step}: {', '.join(bad)} not finite; "
                         "lower --lr or train in fp32 (--no-bf16)")
    return values


# --- export -------------------------------------------------------------------------------------------------


def export_generator(
    run_dir: str | Path, out: str | Path | None = None, *, force: bool = False, dtype: str = "float32"
) -> Path:
    """Write the latest checkpoint's generator as a weights file with a training summary.

    ``dtype`` float16 halves the file for shipping; loading casts back to float32.
    """
    from fgfem.weights import STORAGE_DTYPES, save_generator

    by_name = {name: torch_dtype for torch_dtype, name in STORAGE_DTYPES.items()}
    if dtype not in by_name:
        raise FgfemError(f"unknown export dtype {dtype!r}; choose one of: {', '.join(by_name)}")

    run_dir = Path(run_dir)
    found = latest_checkpoint(run_dir)
    if found is None:
        raise FgfemError(f"{run_dir} holds no checkpoint to export; train first (fgfem train DATA --run {run_dir})")
    out = Path(out) if out is not None else run_dir / EXPORT
    if out.exists() and not force:
        raise FgfemError(f"{out} exists; pass --force to overwrite it")
    checkpoint = load_checkpoint(found)
    net_cfg = NetConfig.from_dict(checkpoint.meta["net"])
    generator = Generator(net_cfg)
    generator.load_state_dict({k[2:]: v for k, v in checkpoint.tensors.items() if k.startswith("G/")})
    generator.eval()
    summary = {
        "steps": checkpoint.step,
        "epochs": checkpoint.meta["epoch"],
        "images_seen": checkpoint.meta["images_seen"],
        "data": checkpoint.meta["data"],
        "config": _shareable_config(checkpoint.meta["config"]),
        "checkpoint": found.name,
    }
    save_generator(out, generator, net_cfg, dtype=by_name[dtype], training=summary)
    return out


def _shareable_config(config: dict[str, Any]) -> dict[str, Any]:
    """The training config for a file that gets shared: paths of this machine reduced to file names."""
    shared = dict(config)
    for key in ("holdout", "init"):
        if shared.get(key):
            shared[key] = Path(shared[key]).name
    return shared


# --- small helpers: log, progress, signals, throughput --------------------------------------------------------


class MetricsLog:
    """``metrics.jsonl``: one JSON object per step, appended and flushed as we go.

    On resume the lines at or after the checkpoint's step (written by the interrupted run
    after its last save) and a torn last line are dropped first, atomically, so the log
    never holds a step twice.
    """

    def __init__(self, path: Path, *, keep_before: int) -> None:
        self.path = path
        kept = []
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(json.JSONDecodeError, TypeError, KeyError):
                    if json.loads(line)["step"] < keep_before:
                        kept.append(line + "\n")
        write_text(path, "".join(kept))
        self.handle = path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The metrics log of a run as a list of dicts (for tests, plots and model cards)."""
    path = Path(run_dir) / METRICS
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class Throughput:
    """Images per second, smoothed over recent steps (the first, warm-up step counts less)."""

    def __init__(self, smoothing: float = 0.9) -> None:
        self.smoothing = smoothing
        self.last = time.perf_counter()
        self.rate = 0.0

    def update(self, images: int) -> float:
        now = time.perf_counter()
        current = images / max(now - self.last, 1e-9)
        self.last = now
        self.rate = current if self.rate == 0.0 else self.smoothing * self.rate + (1 - self.smoothing) * current
        return self.rate


class StopRequest:
    requested = False


@contextlib.contextmanager
def stop_requests() -> Iterator[StopRequest]:
    """SIGINT/SIGTERM ask the loop to finish its step, save and return; a second SIGINT aborts at once."""
    request = StopRequest()

    def ask(signum: int, frame: Any) -> None:
        if request.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        request.requested = True

    previous = {}
    with contextlib.suppress(ValueError):  # not the main thread: no handlers, training still works
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, ask)
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Bar:
    def __init__(self, progress: Progress | None, task: int | None) -> None:
        self.progress, self.task = progress, task

    def update(self, step: int, rate: float, terms: dict[str, float]) -> None:
        if self.progress is None or self.task is None:
            return
        shown = ("d_total", "g_total", "g_idt", "g_cyc")
        losses = " ".join(f"{k}={terms[k]:.3g}" for k in shown if k in terms)
        self.progress.update(self.task, completed=step, speed=rate, losses=losses)


@contextlib.contextmanager
def _progress(console: Console, total: int, done: int, *, enabled: bool) -> Iterator[_Bar]:
    if not enabled:
        yield _Bar(None, None)
        return
    progress = Progress(
        TextColumn("step {task.completed}/{task.total}"), BarColumn(), TextColumn("{task.fields[speed]:.1f} img/s"),
        TimeRemainingColumn(), TextColumn("{task.fields[losses]}"), console=console,
    )
    with progress:
        task = progress.add_task("train", total=total, completed=done, speed=0.0, losses="")
        yield _Bar(progress, task)


def _tensorboard(run_dir: Path) -> Any:
    """A TensorBoard writer if the package is installed (it is optional), else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def describe_faces(faces: FaceSet) -> str:
    return f"{len(faces.train)} training faces ({faces.layout} layout), {len(faces.held_out)} held out"
