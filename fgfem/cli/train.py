"""`fgfem train DATA --run RUN` and `fgfem export RUN`: thin commands over ``fgfem.train``.

The training options are not written here: each is made from its setting's declaration in
``fgfem.train.config`` (help, flag, default, whether --help lists it), so a setting, its
option, its default and its check exist once. Every setting, listed or not, can also be
given as ``--set KEY=VALUE`` or in a ``--config`` JSON file.

``export`` is its own command rather than ``train export``: a command group whose default
action takes a positional DATA argument cannot tell ``export`` from a data folder.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from fgfem.cli.app import app, console, err_console
from fgfem.cli.options import OPTIONS, Command
from fgfem.errors import FgfemError
from fgfem.train.config import SETTINGS, SHORTHANDS
from fgfem.train.settings import HIDDEN, REMOVED, SHOWN, Setting, parse_assignments

_RESUME_HELP = "Continue the run in --run from its latest checkpoint, bit for bit (its own settings are kept)."
_PANELS = {"nets": "Networks", "data": "Data", "loss": "Loss", "optim": "Optimisation", "run": "Run"}
_TRAIN_HELP = """Train the generator and critic (WGAN-GP with relative AUs, Ling et al. 2020).

    Ctrl-C or SIGTERM finishes the current step, saves a checkpoint and exits; continue with --resume.

    Training on several GPUs or in several processes is started with torchrun, for example \
[bold]torchrun --nproc-per-node 4 -m fgfem train ...[/]

    The options listed are the shipped model's recipe and the documented uses; every other setting \
(the keys of a run's config.json) is given with --set KEY=VALUE or --config FILE.

    Examples:
      [bold]fgfem train data/faces --run runs/lite --preset lite --epochs 20[/]
      [bold]fgfem train data/faces --run runs/lite --resume --max-steps 20000[/]
      [bold]fgfem train data/faces --run runs/cyc --config runs/lite/config.json --set lambda_cyc=60[/]
    """


def _fixed_options(
    data: Path = typer.Argument(..., help="Training set: `fgfem prep` output, GANimation or Expression-manipulator."),
    run: Path = typer.Option(..., "--run", "--run-dir", "-r", help="Run folder: checkpoints, metrics, previews."),
    config: Path | None = typer.Option(None, "--config", help="Start from the settings in this JSON file (a run's "
                                       "config.json works); options and --set override them."),
    assignments: list[str] | None = typer.Option(None, "--set", metavar="KEY=VALUE",
                                                 help="Any setting by its key in a run's config.json, e.g. "
                                                      "--set lambda_cyc=60 (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help=_RESUME_HELP),
    force: bool = typer.Option(False, "--force", help="Start over in a non-empty --run folder (clears it)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """The options of ``fgfem train`` that are not training settings (their signature is reused)."""


def command_line_settings() -> list[Setting]:
    """The settings with a flag (listed, hidden or refused), and the shorthands, in declaration order."""
    found = [s for s in SETTINGS.values() if s.cli in (SHOWN, HIDDEN, REMOVED)]
    for key, shorthand in SHORTHANDS.items():
        first = SETTINGS[shorthand.sets[0]]
        at = next(i for i, s in enumerate(found) if s.group == first.group)
        found.insert(at, dataclasses.replace(first, key=key, flag=f"--{key}", cli=SHOWN, help=shorthand.help,
                                             resumable=False))
    return found


def _option(setting: Setting) -> inspect.Parameter:
    """A typer option for ``setting``: None means "not given", so a resumed run keeps its own value."""
    flag = setting.flag or f"--{setting.key.replace('_', '-')}"
    decls = [f"{flag}/--no-{flag[2:]}"] if setting.kind is bool and setting.cli != REMOVED else [flag]
    default = f" Default: {_default_text(setting.default)}." if setting.default is not None else ""
    place = {"hidden": setting.cli != SHOWN, "rich_help_panel": _PANELS[setting.group]}
    shared = OPTIONS.get(setting.key)
    if shared is not None:  # an option every command shares (--device): its spelling, help and parser
        info = typer.Option(None, *shared.decls, help=shared.help + default, **place, **dict(shared.settings))
        return inspect.Parameter(setting.key, inspect.Parameter.KEYWORD_ONLY, default=info,
                                 annotation=shared.annotation | None)
    info = typer.Option(None, *decls, help=escape(setting.help + default), show_default=False, **place)
    kind = str if setting.cli == REMOVED else setting.kind
    return inspect.Parameter(setting.key, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=kind | None)


def _default_text(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _train(*, data: Path, run: Path, config: Path | None, assignments: list[str] | None, resume: bool, force: bool,
           quiet: bool, settings: dict[str, Any]) -> None:
    from fgfem.train import TrainConfig
    from fgfem.train import train as run_training

    if resume and force:
        raise FgfemError("--resume continues a run and --force starts it over; give one of them")
    given = _given_settings(settings, assignments or [])
    if resume:
        if config is not None:
            raise FgfemError("--resume keeps the run's own settings; --config is for starting a run")
        result = run_training(data, run, overrides=given, resume=True, show_progress=not quiet, console=err_console)
    else:
        base = TrainConfig.from_file(config) if config is not None else None
        result = run_training(data, run, TrainConfig.from_cli(given, base), force=force, show_progress=not quiet,
                              console=err_console)
    if result.rank != 0:
        return
    if result.interrupted:
        console.print(f"stopped at step {result.step}; saved {escape(str(result.checkpoint))}. "
                      f"Continue with: fgfem train {escape(str(data))} --run {escape(str(run))} --resume")
        raise typer.Exit(code=130)
    console.print(f"trained {result.step} steps ({result.images_seen} images seen)"
                  + (f"; generator: {escape(str(result.exported))}" if result.exported else ""))


def _given_settings(options: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """The settings given as options and as ``--set``, by key; a refused flag or a setting given twice is an error."""
    given = {key: value for key, value in options.items() if value is not None}
    for key, value in given.items():
        if SETTINGS.get(key) is not None and SETTINGS[key].cli == REMOVED:
            raise FgfemError(f"{SETTINGS[key].flag} is no longer an option of fgfem train: the shipped model does not "
                             f"use it (a tried experiment, see weights/MODEL_CARD.md); to run it anyway, give "
                             f"--set {key}={value} or put {key} in a --config file")
    assigned = parse_assignments(assignments, SETTINGS)
    twice = sorted(set(given) & set(assigned))
    if twice:
        raise FgfemError(f"{SETTINGS[twice[0]].label} and --set {twice[0]}=... are both given; give one")
    return {**given, **assigned}


def _train_command(**arguments: Any) -> None:
    settings = {key: arguments.pop(key) for key in _SETTING_KEYS}
    _train(settings=settings, **arguments)


_FIXED = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
          for p in inspect.signature(_fixed_options, eval_str=True).parameters.values()]
_GENERATED = [_option(s) for s in command_line_settings()]
_SETTING_KEYS = [p.name for p in _GENERATED]
_train_command.__signature__ = inspect.Signature([*_FIXED[:4], *_GENERATED, *_FIXED[4:]])  # type: ignore[attr-defined]
_train_command.__annotations__ = {p.name: p.annotation for p in [*_FIXED, *_GENERATED]}
app.command("train", cls=Command, help=_TRAIN_HELP)(_train_command)


@app.command("export")
def export(
    run: Path = typer.Argument(..., help="A run folder written by `fgfem train`."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Default RUN/generator.safetensors."),
    force: bool = typer.Option(False, "--force", help="Overwrite OUTPUT if it exists."),
    dtype: str = typer.Option("float32", "--dtype", help="Storage: float32, float16 (half the size) or bfloat16."),
    rig: bool = typer.Option(True, "--rig/--no-rig",
                             help="Put the shipped model's AU rig into the file, so its edits are geometry first "
                                  "(the rig does not depend on the generator). A run trained with --rig always "
                                  "exports with the rig it was trained behind."),
) -> None:
    """Export a run's latest generator as a .safetensors weights file with its training summary.

    Example: [bold]fgfem export runs/lite -o weights/lite.safetensors[/]
    """
    from fgfem.rig.model import load_rig
    from fgfem.train import export_generator

    path = export_generator(run, output, force=force, dtype=dtype)
    note = ""
    if load_rig(path) is not None:
        note = " with the AU rig it was trained behind"
    elif rig:
        from fgfem.paths import find_default_weights
        from fgfem.rig.store import put_rig

        shipped = find_default_weights()
        found = load_rig(shipped) if shipped is not None else None
        if found is not None:
            put_rig(path, found)
            note = " with the shipped AU rig (--no-rig leaves it out)"
    console.print(f"wrote {escape(str(path))}{note}")
