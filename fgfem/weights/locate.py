"""Which file ``--weights`` stands for: the one lookup every command shares.

``--weights`` takes a weights file, a training checkpoint or a run folder of ``fgfem train``,
and no ``--weights`` means the shipped model (``fgfem.paths.find_default_weights``). Editing,
evaluation and the web editor all go through ``locate_weights``, so they agree on the file
and word a missing one alike.
"""

from __future__ import annotations

from pathlib import Path

from fgfem.errors import FgfemError

# What ``fgfem train`` writes: ``RUN/checkpoints/step-N.safetensors`` (both networks, optimisers) and,
# at the end, ``RUN/generator.safetensors`` (``fgfem export``).
RUN_EXPORT = "generator.safetensors"


def locate_weights(path: str | Path | None) -> Path:
    """``--weights`` (a weights file, a training checkpoint or a run folder) or the shipped default, as a file."""
    from fgfem.paths import find_default_weights

    if path is None:
        found = find_default_weights()
        if found is None:
            raise FgfemError("no model weights found: pass --weights FILE.safetensors, set FGFEM_WEIGHTS, "
                             "or put the trained model at weights/default.safetensors")
        return found
    resolved = resolve_weights(path)
    if not resolved.is_file():
        raise FgfemError(f"weights file {path} does not exist")
    return resolved


def resolve_weights(path: str | Path) -> Path:
    """The file that ``--weights PATH`` stands for: a weights file or checkpoint as given, or a run folder's newest.

    A run folder of ``fgfem train`` gives its exported ``generator.safetensors`` when that was
    exported from the newest checkpoint (it is a fraction of the size), else the newest checkpoint.
    """
    path = Path(path)
    if not path.is_dir():
        return path  # a missing or damaged file is reported by whoever reads it
    from fgfem.train.checkpoint import latest_checkpoint

    newest = latest_checkpoint(path)
    exported = path / RUN_EXPORT
    if exported.is_file() and (newest is None or _exported_from(exported) == newest.name):
        return exported
    if newest is None:
        raise FgfemError(f"{path} is a folder without checkpoints/ or {RUN_EXPORT}: give a weights file "
                         "(.safetensors) or the run folder of fgfem train")
    return newest


def _exported_from(exported: Path) -> str | None:
    """The checkpoint name an exported generator records (``fgfem export``), None when unreadable."""
    from fgfem.weights.format import read_weights_info

    try:
        return read_weights_info(exported).training.get("checkpoint")
    except FgfemError:
        return None
