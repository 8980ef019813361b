"""`fgfem weights`: convert reference checkpoints and inspect weights files."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from fgfem.cli.app import app, console, err_console
from fgfem.cli.options import Command, Shared, shared_options
from fgfem.errors import FgfemError

weights_app = typer.Typer(
    help="Convert and inspect generator weights (.safetensors).",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
app.add_typer(weights_app, name="weights")


@weights_app.command("convert", cls=Command)
@shared_options("force")
def convert(
    checkpoint: Path = typer.Argument(..., help="Reference generator checkpoint, e.g. net_epoch_30_id_G.pth."),
    output: Path = typer.Argument(..., help="Where to write the .safetensors file."),
    preset: str = typer.Option("paper", "--preset", help="Network preset the checkpoint was trained with."),
    *,
    shared: Shared,
) -> None:
    """Convert a junleen/Expression-manipulator generator .pth into fgfem .safetensors.

    The .pth is a pickle: it is read with torch.load(weights_only=True), but convert
    only files from a source you trust. The checkpoint must use the 17 OpenFace AUs.

    Example: [bold]fgfem weights convert net_epoch_30_id_G.pth weights/paper.safetensors[/]
    """
    from fgfem.media import check_writable
    from fgfem.weights import convert_reference_checkpoint, describe_weights

    check_writable(output, force=shared.force)
    if output.resolve() == checkpoint.resolve():
        raise FgfemError("OUTPUT must differ from the checkpoint it is converted from")
    convert_reference_checkpoint(
        checkpoint, output, preset, warn=lambda message: err_console.print(escape(message), style="yellow")
    )
    console.print(f"wrote {escape(str(output))}: {escape(describe_weights(output))}")


@weights_app.command("show")
def show(path: Path = typer.Argument(..., help="A .safetensors weights file.")) -> None:
    """Show the metadata of a weights file: preset, sizes, AUs, crop template, training summary, AU rig.

    Example: [bold]fgfem weights show weights/default.safetensors[/]
    """
    from fgfem.rig.model import describe_rig
    from fgfem.weights import read_weights_info, resolve_weights

    info = read_weights_info(path)
    table = Table(title=escape(path.name), show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", overflow="fold")
    cfg = info.cfg
    table.add_row("format", info.format)
    table.add_row("preset", f"{cfg.name} (generator conv_dim {cfg.conv_dim}, critic_dim {cfg.critic_dim})")
    table.add_row("output", cfg.output_form)
    table.add_row("image size", f"{info.image_size} px")
    table.add_row("parameters", f"{info.num_params:,} (generator)")
    table.add_row("storage dtype", info.dtype)
    table.add_row("AUs", f"{len(info.aus)}: {' '.join(info.aus)}")
    table.add_row("crop template", escape(info.crop_template))
    table.add_row("written by", f"fgfem {escape(info.version)}")
    for key, value in info.training.items():
        text = value if isinstance(value, str) else json.dumps(value)
        table.add_row(f"training: {escape(str(key))}", escape(text))
    table.add_row("AU rig", escape(describe_rig(resolve_weights(path))))
    console.print(table)
