"""The 17 OpenFace intensity Action Units and the ``--au`` edit language.

Every AU vector in fgfem (files, tensors, CLI) uses the order of ``AU_CODES``.
Intensities are on OpenFace's 0-5 scale everywhere a person sees them; only the
networks see them divided by ``AU_SCALE``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from fgfem.errors import FgfemError

AU_SCALE = 5.0
AU_MIN, AU_MAX = 0.0, 5.0
# A relative edit larger than this cannot mean anything on a 0-5 scale.
MAX_ABS_EDIT = 10.0


@dataclass(frozen=True)
class ActionUnit:
    number: int
    name: str

    @property
    def code(self) -> str:
        return f"AU{self.number:02d}"


ACTION_UNITS: tuple[ActionUnit, ...] = (
    ActionUnit(1, "inner_brow_raiser"),
    ActionUnit(2, "outer_brow_raiser"),
    ActionUnit(4, "brow_lowerer"),
    ActionUnit(5, "upper_lid_raiser"),
    ActionUnit(6, "cheek_raiser"),
    ActionUnit(7, "lid_tightener"),
    ActionUnit(9, "nose_wrinkler"),
    ActionUnit(10, "upper_lip_raiser"),
    ActionUnit(12, "lip_corner_puller"),
    ActionUnit(14, "dimpler"),
    ActionUnit(15, "lip_corner_depressor"),
    ActionUnit(17, "chin_raiser"),
    ActionUnit(20, "lip_stretcher"),
    ActionUnit(23, "lip_tightener"),
    ActionUnit(25, "lips_part"),
    ActionUnit(26, "jaw_drop"),
    ActionUnit(45, "blink"),
)
AU_CODES: tuple[str, ...] = tuple(au.code for au in ACTION_UNITS)
AU_NAMES: tuple[str, ...] = tuple(au.name for au in ACTION_UNITS)
NUM_AUS = len(ACTION_UNITS)
# OpenFace CSV column for each AU, e.g. "AU01_r" (OpenFace pads names with a space; strip before matching).
OPENFACE_COLUMNS: tuple[str, ...] = tuple(f"{code}_r" for code in AU_CODES)

_INDEX_BY_KEY: dict[str, int] = {}
for _i, _au in enumerate(ACTION_UNITS):
    for _key in (_au.code.lower(), str(_au.number), f"{_au.number:02d}", f"au{_au.number}", _au.name):
        _INDEX_BY_KEY[_key] = _i


def valid_aus_text() -> str:
    """The list of accepted AUs, for error messages."""
    return ", ".join(f"{au.code} ({au.name})" for au in ACTION_UNITS)


def au_index(key: str | int) -> int:
    """Position of an AU given as ``12``, ``"AU12"``, ``"au12"`` or ``"lip_corner_puller"``."""
    normalised = str(key).strip().lower().replace("-", "_").replace(" ", "_")
    if normalised in _INDEX_BY_KEY:
        return _INDEX_BY_KEY[normalised]
    raise FgfemError(f"unknown action unit {str(key)!r}; valid AUs: {valid_aus_text()}")


@dataclass(frozen=True)
class AUEdit:
    """One ``--au`` item: a relative change (``+1``/``-0.5``) or an absolute target (``3``).

    ``scale`` is ``--intensity`` folded into the edit, so that the 0-5 clamp of the target
    (``relative_vector``) sees the change that is really applied, not the unscaled one.
    """

    index: int
    value: float
    relative: bool
    scale: float = 1.0

    @property
    def code(self) -> str:
        return AU_CODES[self.index]

    @property
    def change(self) -> float | None:
        """The relative change asked for (value x scale); None for an absolute target (it needs the source)."""
        return self.value * self.scale if self.relative else None


class AUClampWarning(UserWarning):
    """An AU target fell outside OpenFace's 0-5 scale and was clamped; ``key`` groups repeats of one request."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


_SPEC = re.compile(r"^\s*(?P<key>[A-Za-z0-9_\- ]+?)\s*[=:]\s*(?P<value>\S.*?)\s*$")


def parse_au_spec(spec: str) -> AUEdit:
    """Parse one ``KEY=VALUE``; a leading sign on the value makes it relative."""
    match = _SPEC.match(spec)
    if match is None:
        raise FgfemError(
            f"cannot read --au {spec!r}: expected AU=VALUE such as 12=+1.0 (relative) or AU12=3 (absolute)"
        )
    index = au_index(match["key"])
    raw = match["value"]
    relative = raw[0] in "+-"
    try:
        value = float(raw)
    except ValueError:
        raise FgfemError(f"cannot read --au {spec!r}: {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise FgfemError(f"cannot read --au {spec!r}: the value must be a finite number")
    code = AU_CODES[index]
    if relative and abs(value) > MAX_ABS_EDIT:
        raise FgfemError(f"--au {spec!r}: a change of {value:+g} is outside -{MAX_ABS_EDIT:g}..+{MAX_ABS_EDIT:g}")
    if not relative and not AU_MIN <= value <= AU_MAX:
        raise FgfemError(f"--au {spec!r}: absolute {code} must be within {AU_MIN:g}..{AU_MAX:g}")
    return AUEdit(index=index, value=value, relative=relative)


def parse_au_specs(specs: Iterable[str]) -> list[AUEdit]:
    """Parse several ``--au`` items; an AU named twice is a conflict, not a silent override.

    Each item may also hold a comma-separated list (``12=+1,4=-0.5``).
    """
    edits: list[AUEdit] = []
    seen: dict[int, str] = {}
    for spec in specs:
        for part in _split_commas(spec):
            edit = parse_au_spec(part)
            if edit.index in seen:
                raise FgfemError(
                    f"{edit.code} is given twice (--au {seen[edit.index]!r} and --au {part!r}); give each AU once"
                )
            seen[edit.index] = part
            edits.append(edit)
    return edits


def _split_commas(spec: str) -> list[str]:
    parts = [p for p in spec.split(",") if p.strip()]
    if not parts:
        raise FgfemError(f"cannot read --au {spec!r}: expected AU=VALUE such as 12=+1.0")
    return parts


def scaled_edits(edits: Sequence[AUEdit], intensity: float) -> list[AUEdit]:
    """``edits`` with ``intensity`` folded in: the clamp to 0-5 then applies to the change really made."""
    return [dataclasses.replace(edit, scale=edit.scale * float(intensity)) for edit in edits]


def check_combined_change(edits: Sequence[AUEdit], intensities: Iterable[float], option: str = "--intensity") -> None:
    """Refuse a relative change whose size times an intensity is beyond +-MAX_ABS_EDIT.

    Each ``--au`` is checked on its own when parsed, but ``--au 12=+10 --intensity 10``
    asks for +100, which no face survives: the product is what the generator sees.
    """
    strongest = max((abs(float(k)) for k in intensities), default=0.0)
    for edit in edits:
        if edit.relative and abs(edit.value) * strongest > MAX_ABS_EDIT:
            raise FgfemError(
                f"--au {edit.code}={edit.value:+g} with {option} {strongest:g} asks for a change of "
                f"{edit.value * strongest:+g}, outside -{MAX_ABS_EDIT:g}..+{MAX_ABS_EDIT:g}; lower one of them"
            )


def relative_vector(edits: Sequence[AUEdit], source: np.ndarray | None = None) -> np.ndarray:
    """The 17-vector of relative changes (0-5 scale) that ``edits`` ask of a face with AUs ``source``.

    Absolute targets need the source's AUs. With the source known, every target is clamped
    to 0-5 (what OpenFace can measure and the model was trained on) and an
    ``AUClampWarning`` says what was asked and what is applied instead; an AU already
    outside 0-5 is never pushed further out, and is never moved by a zero request.
    """
    delta = np.zeros(NUM_AUS, dtype=np.float32)
    for edit in edits:
        if not edit.relative and source is None:
            raise FgfemError(f"absolute {edit.code} needs the source's AUs, and none were measured")
        if source is None:
            delta[edit.index] = edit.value * edit.scale
            continue
        start = float(source[edit.index])
        asked = edit.value * edit.scale if edit.relative else (edit.value - start) * edit.scale
        delta[edit.index] = _clamped_change(edit, start, asked)
    return delta


_CLAMP_TOLERANCE = 1e-4


def _clamped_change(edit: AUEdit, start: float, asked: float) -> float:
    """``asked``, cut so that ``start + change`` stays within 0-5 (or within where the AU already is)."""
    low, high = min(AU_MIN, start), max(AU_MAX, start)
    target = start + asked
    if low - _CLAMP_TOLERANCE <= target <= high + _CLAMP_TOLERANCE:
        return asked
    applied = float(np.clip(target, low, high)) - start
    request = f"{edit.code} {edit.value:+.2f}" if edit.relative else f"{edit.code} ={edit.value:.2f}"
    if edit.scale != 1.0:
        request += f" x{edit.scale:g}"
    warnings.warn(
        AUClampWarning(
            f"{request} on a face at {edit.code} {start:.2f} asks for {target:.2f}: the target is clamped to "
            f"{AU_MIN:g}..{AU_MAX:g}, so {edit.code} {applied:+.2f} is applied (to {start + applied:.2f})",
            key=f"{request} clamped to {AU_MIN:g}..{AU_MAX:g}",
        ),
        stacklevel=3,
    )
    return applied


def needs_source_aus(edits: Sequence[AUEdit]) -> bool:
    return any(not e.relative for e in edits)


def format_edits(edits: Sequence[AUEdit]) -> str:
    """Human-readable summary, e.g. ``AU12 +1.00, AU04 =3.00``."""
    return ", ".join(f"{e.code} {e.value:+.2f}" if e.relative else f"{e.code} ={e.value:.2f}" for e in edits)
