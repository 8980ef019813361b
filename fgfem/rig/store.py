"""Put a rig into a weights file, or read what a file holds about one.

The rig rides in the generator's safetensors file (tensors ``rig.*`` and metadata key
``rig``) so that one file is one model: what ``fgfem edit`` asks of the geometry and what
the generator was trained to add on top of it cannot be mixed up between files. Nothing is
unpickled; the file is rewritten atomically.
"""

from __future__ import annotations

from pathlib import Path

from fgfem.errors import FgfemError
from fgfem.rig.model import METADATA_KEY, RIG_PREFIX, AURig


def put_rig(path: str | Path, rig: AURig | None) -> None:
    """Rewrite ``path`` with ``rig`` in it (replacing any rig it had); None removes the rig."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from fgfem.atomic import atomic_path

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            names = list(handle.keys())  # safe_open handles are not iterable
            tensors = {k: handle.get_tensor(k) for k in names if not k.startswith(RIG_PREFIX)}
    except Exception as problem:  # safetensors raises its own error types
        raise FgfemError(f"{path}: cannot read it to add the rig ({str(problem).splitlines()[0]})") from None
    metadata.pop(METADATA_KEY, None)
    if rig is not None:
        tensors.update(rig.tensors())
        metadata.update(rig.metadata())
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
