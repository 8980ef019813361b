"""`fgfem train DATA --run RUN` and `fgfem export RUN`: thin commands over ``fgfem.train``.

``export`` is its own command rather than ``train export``: a command group whose default
action takes a positional DATA argument cannot tell ``export`` from a data folder.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from fgfem.cli.app import app, console, err_console

_RESUME_HELP = "Continue the run in --run from its latest checkpoint, bit for bit (its own settings are kept)."


@app.command()
def train(
    data: Path = typer.Argument(..., help="Training set: `fgfem prep` output, GANimation or Expression-manipulator."),
    run: Path = typer.Option(..., "--run", "--run-dir", "-r", help="Run folder: checkpoints, metrics, previews."),
    preset: str | None = typer.Option(None, "--preset", help="Network preset: paper (default) or lite (CPU)."),
    size: int | None = typer.Option(None, "--size", help="Image side in px, a multiple of 64 (default 128)."),
    batch: int | None = typer.Option(None, "--batch", help="Images per step and process (default 16)."),
    lr: float | None = typer.Option(None, "--lr", help="Learning rate of both networks (default 1e-4)."),
    epochs: int | None = typer.Option(None, "--epochs", help="Epochs; the last 20 decay the lr to 1e-5 (default 50)."),
    decay_epochs: int | None = typer.Option(None, "--decay-epochs", help="Epochs at the end whose lr falls "
                                            "linearly to 1e-5 (default 20; 0 keeps it constant)."),
    critic_steps: int | None = typer.Option(None, "--critic-steps", help="Train G every N-th step (default 4)."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Stop after N steps whatever --epochs says."),
    lambda_d_cond: float | None = typer.Option(None, "--lambda-d-cond", help="Critic AU regression (default 150)."),
    lambda_gp: float | None = typer.Option(None, "--lambda-gp", help="Gradient penalty (default 10)."),
    lambda_g_cond: float | None = typer.Option(None, "--lambda-g-cond", help="Generator AU condition (default 150)."),
    lambda_idt: float | None = typer.Option(None, "--lambda-idt", help="Identity L1 |G(x,0)-x| (default 30)."),
    lambda_cyc: float | None = typer.Option(None, "--lambda-cyc", help="Cycle L1 |G(G(x,r),-r)-x| (default 30)."),
    lambda_tv: float | None = typer.Option(None, "--lambda-tv", help="Total variation (default 1e-5)."),
    lambda_cond_changed: float | None = typer.Option(None, "--lambda-cond-changed", help="Generator AU condition "
                                                     "weighted by how far each AU is asked to move (default 0, "
                                                     "off)."),
    lambda_pair: float | None = typer.Option(None, "--lambda-pair",
                                             help="L1 on same-person expression pairs (default 0, off)."),
    pair_pattern: str | None = typer.Option(None, "--pair-pattern",
                                            help="Regex; faces whose named groups agree are one person (pairs)."),
    pair_batch: int | None = typer.Option(None, "--pair-batch", help="Pairs per generator step (default 4)."),
    lambda_flow: float | None = typer.Option(None, "--lambda-flow", help="Warp vs the pairs' landmark motion "
                                             "(px; needs --lambda-pair and --warp; default 0, off)."),
    lambda_warp_au: float | None = typer.Option(None, "--lambda-warp-au", help="AUs read from each face's "
                                                "landmarks moved by the warp vs those asked for (needs --warp "
                                                "and a fgfem prep folder; default 0, off)."),
    single_au_targets: float | None = typer.Option(None, "--single-au-targets", help="Share of targets that move "
                                                   "one random AU of the face's own (default 0, off)."),
    single_au_change: float | None = typer.Option(None, "--single-au-change", help="Largest change of such a "
                                                  "target, 0-5 units (default 2)."),
    regularizer: str | None = typer.Option(None, "--regularizer", help="wgan-gp (paper) or r1 (lazy R1, cheaper)."),
    conv_dim: int | None = typer.Option(None, "--conv-dim", help="Override the preset's generator width."),
    critic_dim: int | None = typer.Option(None, "--critic-dim", help="Override the preset's critic width."),
    limit: int | None = typer.Option(None, "--limit", help="Train on the first N faces only."),
    holdout: Path | None = typer.Option(None, "--holdout", help="Text file of aus.csv paths kept out of training."),
    init: Path | None = typer.Option(None, "--init", help="Start from these weights instead of random ones: a run "
                                     "folder, a checkpoint or an exported generator (fine-tuning)."),
    warp: bool | None = typer.Option(None, "--warp/--no-warp", help="Per-AU displacement fields in the generator "
                                     "(residual presets; default: the preset's)."),
    save_every: int | None = typer.Option(None, "--save-every", help="Checkpoint every N steps (default 1000)."),
    keep_last: int | None = typer.Option(None, "--keep-last", help="Checkpoints to keep (default 3)."),
    preview_every: int | None = typer.Option(None, "--preview-every", help="Preview grid every N steps (default 500)."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed (default 0)."),
    device: str | None = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N or mps (default auto)."),
    bf16: bool | None = typer.Option(None, "--bf16/--no-bf16", help="bf16 autocast (default: where native)."),
    channels_last: bool | None = typer.Option(None, "--channels-last/--no-channels-last", help="NHWC (default on)."),
    workers: int | None = typer.Option(None, "--workers", help="Data loader processes (default 0)."),
    resume: bool = typer.Option(False, "--resume", help=_RESUME_HELP),
    force: bool = typer.Option(False, "--force", help="Start over in a non-empty --run folder (clears it)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train the generator and critic (WGAN-GP with relative AUs, Ling et al. 2020).

    Ctrl-C or SIGTERM finishes the current step, saves a checkpoint and exits; continue
    with --resume. Several GPUs or processes: [bold]torchrun --nproc-per-node 4 -m fgfem train ...[/]

    Examples:
      [bold]fgfem train data/faces --run runs/lite --preset lite --epochs 20[/]
      [bold]fgfem train data/faces --run runs/lite --resume --max-steps 20000[/]
    """
    from fgfem.errors import FgfemError
    from fgfem.train import train as run_training

    if resume and force:
        raise FgfemError("--resume continues a run and --force starts it over; give one of them")
    overrides = {
        "preset": preset, "image_size": size, "conv_dim": conv_dim, "critic_dim": critic_dim, "batch": batch,
        "lr": lr, "epochs": epochs, "decay_epochs": decay_epochs,
        "critic_steps": critic_steps, "max_steps": max_steps, "lambda_d_cond": lambda_d_cond,
        "lambda_gp": lambda_gp, "lambda_g_cond": lambda_g_cond, "lambda_idt": lambda_idt,
        "lambda_cyc": lambda_cyc, "lambda_tv": lambda_tv,
        "lambda_cond_changed": lambda_cond_changed, "lambda_pair": lambda_pair,
        "pair_pattern": pair_pattern, "pair_batch": pair_batch, "lambda_flow": lambda_flow,
        "lambda_warp_au": lambda_warp_au, "single_au_targets": single_au_targets,
        "single_au_change": single_au_change,
        "regularizer": regularizer, "limit": limit,
        "holdout": str(holdout) if holdout is not None else None, "save_every": save_every,
        "keep_last": keep_last, "preview_every": preview_every, "seed": seed, "device": device, "bf16": bf16,
        "channels_last": channels_last, "num_workers": workers,
        "init": str(init) if init is not None else None, "warp": warp,
    }
    result = run_training(data, run, overrides=overrides, resume=resume, force=force, show_progress=not quiet,
                          console=err_console)
    if result.rank != 0:
        return
    if result.interrupted:
        console.print(f"stopped at step {result.step}; saved {escape(str(result.checkpoint))}. "
                      f"Continue with: fgfem train {escape(str(data))} --run {escape(str(run))} --resume")
        raise typer.Exit(code=130)
    console.print(f"trained {result.step} steps ({result.images_seen} images seen)"
                  + (f"; generator: {escape(str(result.exported))}" if result.exported else ""))


@app.command("export")
def export(
    run: Path = typer.Argument(..., help="A run folder written by `fgfem train`."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Default RUN/generator.safetensors."),
    force: bool = typer.Option(False, "--force", help="Overwrite OUTPUT if it exists."),
    dtype: str = typer.Option("float32", "--dtype", help="Storage: float32, float16 (half the size) or bfloat16."),
    rig: bool = typer.Option(True, "--rig/--no-rig",
                             help="Put the shipped model's AU rig into the file, so its edits are geometry first "
                                  "(the rig does not depend on the generator)."),
) -> None:
    """Export a run's latest generator as a .safetensors weights file with its training summary.

    Example: [bold]fgfem export runs/lite -o weights/lite.safetensors[/]
    """
    from fgfem.train import export_generator

    path = export_generator(run, output, force=force, dtype=dtype)
    note = ""
    if rig:
        from fgfem.paths import find_default_weights
        from fgfem.rig.model import load_rig
        from fgfem.rig.store import put_rig

        shipped = find_default_weights()
        found = load_rig(shipped) if shipped is not None else None
        if found is not None:
            put_rig(path, found)
            note = " with the shipped AU rig (--no-rig leaves it out)"
    console.print(f"wrote {escape(str(path))}{note}")
