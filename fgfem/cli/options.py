"""Options shared by every command that runs the generator, defined once.

Kept apart from any one command's module so that commands owned by different people
share the same spelling, help and validation.
"""

from __future__ import annotations

import typer

PRECISION_OPTION = typer.Option(
    "auto", "--precision",
    help="auto (bf16 where the hardware runs it natively and the model keeps >= 40 dB PSNR against fp32, "
         "checked once per model file), fp32 or bf16.",
)


def check_precision(value: str) -> str:
    """The precision as ``fgfem.perf`` spells it, or a one-line error before any model is loaded."""
    from fgfem.perf import check_precision_name

    return check_precision_name(value)
