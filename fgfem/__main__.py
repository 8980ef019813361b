"""``python -m fgfem`` runs the CLI."""

from fgfem.cli import main

main()
