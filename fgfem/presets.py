"""Emotion presets: named AU profiles for ``--expression happy=0.8`` and the buttons of ``fgfem serve``.

The profiles are measured, not guessed: ``benchmarks/measure_presets.py`` reads the AUs of
real posed photos against the same performer's neutral ones with fgfem's own estimator,
so a preset asks the model for the change that estimator saw people make
(``fgfem.preset_profiles`` holds the numbers). Two kinds:

- an emotion (happy, sad, surprise, anger, disgust, fear) is a *relative* change, scaled
  by its weight: ``happy=0.5`` asks for half the measured smile, whatever the face does now;
- ``neutral`` is an *absolute* target (every AU set to the mean neutral face), because
  "remove the expression" depends on the expression there is. A weight would need the
  source's AUs to mean anything, so it takes none: ``--intensity 0.5`` goes half way.

An ``--au`` given with an expression replaces the preset's value for that AU (explicit
beats preset), so ``--expression happy --au 9=+0`` is a smile without the nose wrinkle.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fgfem import preset_profiles as measured
from fgfem.aus import NUM_AUS, AUEdit, parse_au_specs
from fgfem.errors import FgfemError

EMOTIONS: tuple[str, ...] = tuple(measured.RELATIVE)
PRESETS: tuple[str, ...] = (*EMOTIONS, "neutral")
ALIASES = {"happiness": "happy", "smile": "happy", "sadness": "sad", "surprised": "surprise",
           "angry": "anger", "disgusted": "disgust", "fearful": "fear", "afraid": "fear", "calm": "neutral"}
MAX_WEIGHT = 3.0


def preset_name(name: str) -> str:
    """The canonical preset name for ``name`` (case-insensitive, a few aliases); FgfemError if unknown."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in PRESETS:
        raise FgfemError(f"unknown expression {str(name)!r}; choose one of {', '.join(PRESETS)}")
    return key


def relative_profile(name: str) -> np.ndarray:
    """The measured relative 17-vector (0-5 scale) of an emotion at weight 1."""
    key = preset_name(name)
    if key == "neutral":
        raise FgfemError("neutral is an absolute target, not a relative change; use neutral_target()")
    return np.asarray(measured.RELATIVE[key], dtype=np.float32)


def neutral_target() -> np.ndarray:
    """The absolute AUs (0-5) of the mean neutral face: what the ``neutral`` preset moves every AU to."""
    return np.asarray(measured.NEUTRAL_TARGET, dtype=np.float32)


def parse_expression(spec: str) -> tuple[str, float]:
    """``happy`` -> (happy, 1.0); ``surprise=0.5`` -> (surprise, 0.5). The weight scales the measured change."""
    name, sep, raw = str(spec).partition("=")
    if not name.strip():
        raise FgfemError(f"cannot read --expression {spec!r}: expected NAME or NAME=WEIGHT such as happy=0.8")
    key = preset_name(name)
    if not sep:
        return key, 1.0
    try:
        weight = float(raw)
    except ValueError:
        raise FgfemError(f"cannot read --expression {spec!r}: {raw.strip()!r} is not a number") from None
    if not math.isfinite(weight) or abs(weight) > MAX_WEIGHT:
        raise FgfemError(f"--expression {spec!r}: the weight must be between -{MAX_WEIGHT:g} and {MAX_WEIGHT:g}")
    if key == "neutral" and weight != 1.0:
        raise FgfemError("--expression neutral takes no weight (it sets absolute targets); "
                         "use --intensity to go part of the way")
    return key, weight


def expression_edits(specs: Sequence[str], au: Sequence[str] | None = None) -> list[AUEdit]:
    """The ``--au`` edits that ``--expression`` items (plus any ``--au`` items) stand for.

    Several emotions add up (``happy=0.5,surprise=0.5``); an expression named twice is an
    error, like an AU named twice; ``neutral`` combines only with ``--au``.
    """
    explicit = parse_au_specs(au) if au else []
    chosen: dict[str, float] = {}
    for spec in specs:
        for part in (p for p in str(spec).split(",") if p.strip()):
            key, weight = parse_expression(part)
            if key in chosen:
                raise FgfemError(f"expression {key} is given twice; give each expression once")
            chosen[key] = weight
    if not chosen:
        raise FgfemError("--expression needs a name such as happy or surprise=0.5")
    if "neutral" in chosen and len(chosen) > 1:
        raise FgfemError("neutral sets every AU; combine it with --au, not with another expression")
    overridden = {edit.index for edit in explicit}
    if "neutral" in chosen:
        target = neutral_target()
        base = [AUEdit(index=k, value=round(float(target[k]), 4), relative=False) for k in range(NUM_AUS)]
    else:
        total = sum((relative_profile(key) * np.float32(weight) for key, weight in chosen.items()),
                    np.zeros(NUM_AUS, dtype=np.float32))
        base = [AUEdit(index=k, value=round(float(total[k]), 4), relative=True)
                for k in range(NUM_AUS) if total[k] != 0]
    return [edit for edit in base if edit.index not in overridden] + explicit


def check_edit_sources(au: Sequence[str] | None, expression: Sequence[str] | None, target: object) -> None:
    """Say what to change with ``--au`` and/or ``--expression``, or with ``--target`` alone."""
    if target and (au or expression):
        given = " and ".join(name for name, value in (("--au", au), ("--expression", expression)) if value)
        raise FgfemError(f"give --target alone (it sets every AU), not with {given}")
    if not (au or expression or target):
        raise FgfemError("say what to change: give --au, --expression or --target "
                         "(e.g. --au 12=+1.0 or --expression happy=0.8)")


def edits_from_options(au: Sequence[str] | None, expression: Sequence[str] | None) -> list[AUEdit] | None:
    """The edits of ``--au`` and ``--expression`` together; None when neither is given (``--target``)."""
    if expression:
        return expression_edits(expression, au)
    return parse_au_specs(au) if au else None


def preset_sliders(name: str, source_aus: np.ndarray, *, limit: float = 3.0, step: float = 0.01) -> np.ndarray:
    """Relative slider values (17, 0-5 scale) that apply preset ``name`` to a face with ``source_aus``.

    Rounded to the slider ``step`` and clipped to +-``limit``, so that what the page shows,
    what it renders and the command it prints are the same numbers.
    """
    key = preset_name(name)
    values = neutral_target() - np.asarray(source_aus, np.float32) if key == "neutral" else relative_profile(key)
    return np.clip(np.round(values / step) * step, -limit, limit).astype(np.float32)
