"""Command-line entry point: ``fgfem <subcommand>``; one module per subcommand."""

from __future__ import annotations

import sys

from fgfem.cli import aus as _aus  # noqa: F401  (registers `fgfem aus`)
from fgfem.cli import edit as _edit  # noqa: F401  (registers `fgfem edit`)
from fgfem.cli import eval as _eval  # noqa: F401  (registers `fgfem eval`)
from fgfem.cli import info as _info  # noqa: F401  (registers `fgfem info`)
from fgfem.cli import interpolate as _interpolate  # noqa: F401  (registers `fgfem interpolate`)
from fgfem.cli import prep as _prep  # noqa: F401  (registers `fgfem prep`)
from fgfem.cli import render as _render  # noqa: F401  (registers `fgfem render`)
from fgfem.cli import serve as _serve  # noqa: F401  (registers `fgfem serve`)
from fgfem.cli import train as _train  # noqa: F401  (registers `fgfem train` and `fgfem export`)
from fgfem.cli import weights as _weights  # noqa: F401  (registers `fgfem weights`)
from fgfem.cli.app import app, run

__all__ = ["app", "main", "run"]


def main() -> None:
    sys.exit(run())
