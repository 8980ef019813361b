"""Atomic file writes: a reader never sees half a file, a crash never leaves one.

Every output of fgfem (images, videos, CSVs, checkpoints, weights) goes through
these helpers: write to a temporary file in the destination folder, flush and
fsync, then ``os.replace`` it over the final name.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str], *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it over ``final`` only on success.

    The temporary name keeps ``final``'s suffix (or ``suffix``) so that writers which
    choose a format from the extension (PIL, imageio, ffmpeg) still do the right thing.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    keep_suffix = suffix if suffix is not None else final.suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.stem}.partial-", suffix=keep_suffix, dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp makes 0600 files (and some writers recreate the file): give the result the permissions
        # a plain open() would, 0666 minus the umask.
        os.chmod(tmp, 0o666 & ~_UMASK)
        _fsync_file(tmp)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask is process-wide, so toggling it later could race with writer threads.
_UMASK = _read_umask()


def write_bytes(final: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``final`` atomically."""
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def write_text(final: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``final`` atomically."""
    write_bytes(final, text.encode("utf-8"))


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
