"""`fgfem eval --photos`: the whole-photo measures of ``fgfem.photo_eval``, as a table."""

from __future__ import annotations

import json
from pathlib import Path

from rich import box
from rich.markup import escape
from rich.table import Table

from fgfem.cli.app import console
from fgfem.errors import FgfemError

MAX_JITTER = 64
"""More shifts than this only multiply the landmark time: 9 already take dlib's noise to a third."""
SHOWN_CUES = ("lip_corner_rise", "mouth_width", "inner_brow_gap", "inner_brow_rise", "inner_lip_gap", "eye_opening")


def run_photo_eval(data: Path, weights: Path | None, *, aus: str, intensity: float, pairs: Path | None,
                   neutral_pairs: Path | None, identity: bool, device: str, out: Path | None, force: bool,
                   jitter: int = 1) -> None:
    """Check the inputs, edit and judge every photo of ``data``, print the table, write JSON if asked."""
    from fgfem.atomic import write_text
    from fgfem.aus import AU_CODES, au_index
    from fgfem.cli.options import load_editor
    from fgfem.media import check_writable, iter_image_files
    from fgfem.photo_eval import evaluate_photos, read_pairs

    if not 1 <= jitter <= MAX_JITTER:
        raise FgfemError(f"--landmark-jitter {jitter}: from 1 (one dlib reading) to {MAX_JITTER} sub-pixel shifts")
    if out is not None:
        check_writable(out, force=force)
    if not data.is_dir():
        raise FgfemError(f"--photos: {data} is not a folder of photos")
    codes = [AU_CODES[au_index(a.strip())] for a in aus.split(",") if a.strip()]
    photos = iter_image_files(data)
    if not photos:
        raise FgfemError(f"no photos in {data}")
    transfer_pairs = read_pairs(pairs) if pairs else ()  # a bad list fails here, before the model loads
    ceiling_pairs = read_pairs(neutral_pairs) if neutral_pairs else ()
    editor = load_editor(weights, device, "dlib")
    report = evaluate_photos(editor, photos, aus=codes, intensity=intensity, pairs=transfer_pairs,
                             neutral_pairs=ceiling_pairs, identity=identity, jitter=jitter)
    show_photo_report(report, len(photos))
    if out is not None:
        write_text(out, json.dumps(report.to_dict(), indent=1))
        console.print(f"wrote {escape(str(out))}")


def show_photo_report(report: object, count: int) -> None:
    """Per AU: landmark cues (IOD), locality, sharpness ratio and identity; then round trip and transfer."""
    summary = report.summary()  # type: ignore[attr-defined]
    jitter = report.jitter  # type: ignore[attr-defined]
    reading = "dlib landmarks" if jitter == 1 else f"dlib landmarks averaged over {jitter} sub-pixel shifts"
    # Headers no wider than the numbers (a legend below says what they are): the table fits the 80
    # columns rich assumes when the output is a file or a pipe, where it used to cut the numbers to "+0.0…".
    table = Table(title=f"whole-photo edits on {count} photos ({reading}, inter-ocular units)",
                  box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1), collapse_padding=True)
    for name in ("edit", "corner", "width", "brgap", "brrise", "lips", "eyes", "local", "sharp", "id"):
        table.add_column(name, justify="left" if name == "edit" else "right", no_wrap=True)
    for key, row in summary.items():
        table.add_row(key, *(f"{row[c]:+.3f}" for c in SHOWN_CUES), f"{row['locality']:.4f}",
                      f"{row['sharpness_ratio']:.3f}", f"{row['identity']:.3f}")
    console.print(table)
    console.print("corner: lip-corner rise; width: mouth width; brgap, brrise: inner-brow gap and rise; lips: "
                  "inner-lip gap; eyes: lid opening; local: motion of the landmarks outside the AU's region; "
                  "sharp: sharpness ratio; id: identity distance (dlib, same person < 0.6)")
    floor = report.locality_floor  # type: ignore[attr-defined]
    if floor is not None and floor == floor:  # not NaN
        console.print(f"locality floor (the photos re-saved as JPEG q95, a change no one sees): {floor:.4f}")
    trips = report.round_trip_psnr  # type: ignore[attr-defined]
    if trips:
        console.print(f"+r then -r on the whole photo: {sum(trips) / len(trips):.1f} dB")
    transfer = report.transfer  # type: ignore[attr-defined]
    if transfer.get("share") is not None:
        ceiling = f", ceiling {transfer['ceiling']:.3f}" if "ceiling" in transfer else ""
        console.print(f"--target transfer share on {transfer['pairs']:.0f} pairs: {transfer['share']:.3f}{ceiling}")
    skipped = report.skipped  # type: ignore[attr-defined]
    if skipped:
        names = escape(", ".join(skipped[:3]))
        console.print(f"[yellow]no face found in {len(skipped)} photo(s) or edit(s): {names}[/]")
