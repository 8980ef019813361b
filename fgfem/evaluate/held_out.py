"""Which faces ``fgfem eval`` measures: a data folder's faces, or those an ``--only`` list names.

Held-out lists are written by hand (the kind of file ``fgfem train --holdout`` keeps out of
training) and name faces by their ``aus.csv`` path or by the photo they were cropped from,
so both are accepted; an entry that matches nothing is reported rather than fatal.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fgfem.errors import FgfemError


@dataclass(frozen=True)
class HeldOut:
    """The faces to evaluate and what the ``--only`` list did not match."""

    records: tuple[Any, ...]  # fgfem.train.data.FaceRecord
    layout: str
    unmatched: tuple[str, ...] = ()


def select_faces(root: str | Path, *, only: str | Path | None = None, limit: int | None = None) -> HeldOut:
    """The faces of ``root`` (any training layout), or those whose path or source is listed in ``only``.

    ``only`` is a text file with one entry per line (an ``aus.csv`` path such as
    ``crops/x.png``, or the ``source`` photo it was cropped from); blank lines and
    ``#`` comments are skipped. An entry that matches nothing is reported, not fatal;
    a list that matches nothing is an error.
    """
    from fgfem.train.data import load_faces

    root = Path(root)
    faces = load_faces(root)
    records = list(faces.train) + list(faces.held_out)
    unmatched: tuple[str, ...] = ()
    if only is not None:
        wanted = _read_list(Path(only))
        names = _names_by_key(root, faces.layout, records)
        chosen = [r for r in records if names[r.key] & wanted]
        found = set().union(*(names[r.key] for r in chosen)) if chosen else set()
        unmatched = tuple(sorted(wanted - found))
        if not chosen:
            raise FgfemError(f"--only {only}: none of its {len(wanted)} entries is a face of {root} "
                             f"(list aus.csv paths such as {records[0].key!r}, or source photos)")
        records = chosen
    if limit is not None:
        if limit < 1:
            raise FgfemError(f"--limit {limit}: must be at least 1")
        records = records[:limit]
    return HeldOut(records=tuple(records), layout=faces.layout, unmatched=unmatched)


def _read_list(path: Path) -> set[str]:
    if not path.is_file():
        raise FgfemError(f"--only {path}: no such file (expected a text file with one face path or source per line)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise FgfemError(f"--only {path} is not a UTF-8 text file") from None
    entries = {_normal(line) for line in lines if line.strip() and not line.lstrip().startswith("#")}
    if not entries:
        raise FgfemError(f"--only {path} lists no faces")
    return entries


def _normal(name: str) -> str:
    text = name.strip().replace("\\", "/")
    return text[2:] if text.startswith("./") else text


def _names_by_key(root: Path, layout: str, records: Sequence[Any]) -> dict[str, set[str]]:
    """Every name a face may be listed under: its key, its path relative to ``root``, its source photo."""
    sources: dict[str, str] = {}
    if layout == "fgfem":
        from fgfem.prep.labels import read_aus_csv

        sources = {row.path: row.source for row in read_aus_csv(root / "aus.csv") if row.source}
    names: dict[str, set[str]] = {}
    for record in records:
        found = {_normal(record.key)}
        with contextlib.suppress(ValueError):  # a path outside root (GANimation's imgs/ is inside)
            found.add(_normal(record.path.relative_to(root).as_posix()))
        if record.key in sources:
            found.add(_normal(sources[record.key]))
        names[record.key] = found
    return names
