"""`fgfem eval`: measure a generator on held-out faces (AU accuracy, leakage, reconstruction, cycle, identity)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich import box
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from fgfem.cli.app import app, console, err_console
from fgfem.cli.options import Command, Shared, shared_options

if TYPE_CHECKING:
    from fgfem.evaluate import EvalReport


@app.command("eval", cls=Command)
@shared_options("weights", "device", "force")
def eval_command(
    data: Path = typer.Argument(..., help="Data folder: fgfem prep output (aus.csv + crops), GANimation or "
                                          "Expression-manipulator layout.", show_default=False),
    only: Path | None = typer.Option(None, "--only",
                                     help="Text file of held-out faces, one aus.csv path or source photo a line."),
    limit: int | None = typer.Option(None, "--limit", "-n", help="Evaluate at most N faces (the first ones)."),
    aus: str = typer.Option("4,12,15,26", "--aus", help="AUs to edit, one at a time (numbers, codes or names)."),
    intensity: float = typer.Option(1.0, "--intensity", "-i", help="Relative change asked of each AU (0-5 scale)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write every number as JSON here (e.g. metrics.json)."),
    batch: int = typer.Option(16, "--batch", help="Faces per generator pass."),
    identity: bool = typer.Option(True, "--identity/--no-identity",
                                  help="Measure identity with dlib's face descriptor (the slowest part on a CPU)."),
    photos: bool = typer.Option(False, "--photos",
                                help="DATA is a folder of photos: edit them whole (rig, generator, paste-back) and "
                                     "judge with dlib landmarks (IOD), face descriptors and sharpness."),
    pairs: Path | None = typer.Option(None, "--pairs", help="With --photos: lines 'neutral.jpg posed.jpg' of one "
                                                             "person each, for the --target transfer share."),
    neutral_pairs: Path | None = typer.Option(None, "--neutral-pairs",
                                              help="With --pairs: two neutral photos of one person a line (the "
                                                   "share's ceiling)."),
    landmark_jitter: int = typer.Option(1, "--landmark-jitter",
                                        help="With --photos: average dlib's landmarks over N sub-pixel shifts of "
                                             "each photo (9: about a third of its noise; N times the landmark "
                                             "time)."),
    *,
    shared: Shared,
) -> None:
    """Measure a generator on held-out faces at its image size.

    Each AU of --aus is raised by --intensity on every face; AUs are measured on the input and the edited crop.
    Per AU: measured change, MSE against the request, leakage into the other AUs, cycle PSNR, identity distance.
    Zero edit G(x, 0): PSNR, SSIM and AU drift against the input.

    Examples:
      [bold]fgfem eval data/faces128 --only data/heldout.txt -o metrics.json[/]
      [bold]fgfem eval data/faces128 -w runs/x/generator.safetensors --limit 200 --aus 12,26 --intensity 1.5[/]
      [bold]fgfem eval photos/ --photos --aus 1,4,12,15,26 --pairs pairs.txt -o photo-metrics.json[/]
    """
    if photos:
        from fgfem.cli.eval_photos import run_photo_eval

        run_photo_eval(data, shared.weights, aus=aus, intensity=intensity, pairs=pairs, neutral_pairs=neutral_pairs,
                       identity=identity, jitter=landmark_jitter, device=shared.device, out=out, force=shared.force)
        return
    run_crop_eval(data, shared, only=only, limit=limit, aus=aus, intensity=intensity, batch=batch, identity=identity,
                  out=out)


def run_crop_eval(data: Path, shared: Shared, *, only: Path | None, limit: int | None, aus: str, intensity: float,
                  batch: int, identity: bool, out: Path | None) -> None:
    """Check the output and settings, evaluate the aligned crops of ``data`` with a progress bar, report."""
    from fgfem.evaluate import EvalConfig, evaluate, write_report

    if out is not None:
        from fgfem.media import check_writable

        check_writable(out, force=shared.force)  # before the evaluation, not after it
    config = EvalConfig(aus=tuple(a.strip() for a in aus.split(",") if a.strip()), intensity=intensity,
                        batch=batch, identity=identity)
    config.check()
    with Progress(TextColumn("[bold]eval"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err_console, transient=True) as progress:
        task = progress.add_task("eval", total=None)
        report = evaluate(data, shared.weights, only=only, limit=limit, config=config, device=shared.device,
                          progress=lambda done, total: progress.update(task, completed=done, total=total))
    for entry in report.data.get("unmatched_only_entries", [])[:5]:
        err_console.print(f"warning: --only entry {escape(entry)!r} is no face of {escape(str(data))}",
                          style="yellow")
    if not report.data.get("crop_template_matches", True):
        err_console.print("warning: the weights were trained on another crop template; landmark boxes may be off",
                          style="yellow")
    show_report(report)
    if out is not None:
        write_report(report, out, force=shared.force)
        console.print(f"wrote {escape(str(out))}")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def show_report(report: EvalReport) -> None:
    """The per-AU table and one line each for reconstruction and the summary."""
    w = report.weights
    console.print(
        f"[bold]{escape(str(w.get('name', 'generator')))}[/] ({escape(str(w.get('preset', '?')))}, "
        f"{report.image_size} px) on {report.faces} face{'' if report.faces == 1 else 's'}, "
        f"+{report.intensity:g} per AU, {report.seconds:.0f} s"
    )
    table = Table(title="AU edits (0-5 scale, AUs measured by the landmark estimator)", box=box.SIMPLE_HEAD,
                  show_edge=False)
    # asked/got: mean requested and measured change; leak: mean |change| of the other AUs; id dist: dlib
    # descriptor distance to the input, same: share of faces below dlib's same-person threshold 0.6.
    for name in ("AU", "asked", "got", "MSE", "leak", "top leak", "cycle dB", "id dist", "same"):
        table.add_column(name, justify="left" if name in ("AU", "top leak") else "right")
    for e in report.edits:
        top, amount = max(e.leakage_by_au.items(), key=lambda kv: kv[1])
        same = "-" if e.identity_same_person is None else f"{e.identity_same_person:.0%}"
        table.add_row(e.au, f"{e.requested:+.2f}", f"{e.measured_change:+.2f}", _fmt(e.mse), _fmt(e.leakage_mae),
                      f"{top} {amount:.2f}", f"{e.cycle_psnr:.2f}", _fmt(e.identity_distance), same)
    console.print(table)
    r = report.reconstruction
    console.print(f"zero edit G(x,0): PSNR {r['psnr']:.2f} dB, SSIM {r['ssim']:.4f}, "
                  f"AU drift {_fmt(r['au_drift_mae'])}, identity {_fmt(r['identity_distance'])}")
    s = report.summary
    console.print(f"mean over AUs: MSE {_fmt(s['au_mse'])}, leakage {_fmt(s['leakage_mae'])}, "
                  f"cycle PSNR {_fmt(s['cycle_psnr'], 2)} dB, identity {_fmt(s['identity_distance'])}")
    console.print(f"[dim]landmarks: {escape(report.landmarks)}; identity: {escape(report.identity_model)}[/]")
