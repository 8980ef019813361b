"""What a safetensors file says about itself, read without loading a tensor, and why it cannot be read.

``safetensors.safe_open`` validates the header (its length, its JSON, every tensor's dtype,
shape and byte range, and that the tensors cover the file exactly); this module only turns
its refusals into one line that names the file and says what to do. A pickle or zip renamed
``.safetensors`` is recognised by its first bytes before safetensors sees it, so that the
message can point to ``fgfem weights convert`` (nothing here ever unpickles).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fgfem.errors import FgfemError, first_line

_ERROR_PREFIX = "Error while deserializing header: "
_MAX_REASON = 120  # safetensors' reasons can list every dtype it knows; the line stays readable


@dataclass(frozen=True)
class Header:
    """A safetensors file's metadata (a flat ``str -> str`` map, empty if it has none) and tensor shapes."""

    metadata: dict[str, str]
    shapes: dict[str, tuple[int, ...]]


def read_header(path: Path) -> Header:
    """The header of the safetensors file ``path``, after checking that it is one and is complete."""
    if not path.exists():
        raise FgfemError(f"weights file not found: {path}")
    if not path.is_file():
        raise FgfemError(f"weights path is not a file: {path}")
    try:
        with open(path, "rb") as handle:
            start = handle.read(8)
    except OSError as problem:
        raise FgfemError(f"cannot read weights file {path}: {problem.strerror or first_line(problem)}") from None
    if looks_like_pickle(start):
        raise FgfemError(
            f"{path} is a PyTorch pickle checkpoint, not safetensors; fgfem never unpickles weights. "
            f"If it comes from a source you trust, convert it: fgfem weights convert {path.name} NEW.safetensors"
        )
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as opened:
            metadata = dict(opened.metadata() or {})
            shapes = {key: tuple(opened.get_slice(key).get_shape()) for key in opened.keys()}  # noqa: SIM118
    except OSError as problem:
        raise FgfemError(f"cannot read weights file {path}: {problem.strerror or first_line(problem)}") from None
    except Exception as problem:  # safetensors raises its own SafetensorError for every damaged file
        raise FgfemError(_explain(path, problem)) from None
    return Header(metadata=metadata, shapes=shapes)


def _explain(path: Path, problem: BaseException) -> str:
    """One line for a file safetensors refused, from its reason (worded differently across versions)."""
    reason = first_line(problem).removeprefix(_ERROR_PREFIX)
    reason = reason if len(reason) <= _MAX_REASON else reason[: _MAX_REASON - 3] + "..."
    key = reason.lower().replace(" ", "")
    if "headertoosmall" in key:
        return f"{path} is not a safetensors file (only {path.stat().st_size} bytes); copy it again"
    if "headertoolarge" in key:
        return f"{path} is not a safetensors file or is truncated (bad header); copy it again"
    if "incomplete" in key:
        return (f"{path} is truncated or has stray bytes ({path.stat().st_size:,} bytes, not the size its header "
                "declares); copy or download it again")
    return f"{path} is not a valid safetensors file ({reason}); copy it again"


def looks_like_pickle(start: bytes) -> bool:
    """True for the first 8 bytes of a ``torch.save`` zip archive or a plain pickle (PROTO 0x80, 2..5).

    A safetensors file starts with its header length (little-endian u64), which may
    begin with those two bytes too, but then its high bytes are zero.
    """
    if start.startswith(b"PK\x03\x04"):
        return True
    return len(start) == 8 and start[0] == 0x80 and 2 <= start[1] <= 5 and any(start[2:])
