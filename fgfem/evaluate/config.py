"""What one evaluation measures (``fgfem eval --aus --intensity --batch --identity``), checked up front."""

from __future__ import annotations

import math
from dataclasses import dataclass

from fgfem.aus import AU_MAX, au_index
from fgfem.errors import FgfemError

DEFAULT_EVAL_AUS: tuple[str, ...] = ("AU04", "AU12", "AU15", "AU26")


@dataclass(frozen=True)
class EvalConfig:
    """What ``evaluate_generator`` measures."""

    aus: tuple[str, ...] = DEFAULT_EVAL_AUS
    """AUs edited one at a time (codes, numbers or names)."""
    intensity: float = 1.0
    """Relative change asked of each AU, on the 0-5 scale."""
    batch: int = 16
    """Faces per generator pass (each pass holds 1 + len(aus) images per face)."""
    identity: bool = True
    """Measure identity with dlib's descriptor (the slowest part on a CPU; see ``fgfem.evaluate``)."""

    def au_indices(self) -> list[int]:
        if not self.aus:
            raise FgfemError("no AUs to evaluate; pass e.g. --aus 4,12,15,26")
        indices = [au_index(code) for code in self.aus]
        if len(set(indices)) != len(indices):
            raise FgfemError(f"--aus names an AU twice: {', '.join(self.aus)}")
        return indices

    def check(self) -> None:
        self.au_indices()
        if not math.isfinite(self.intensity) or self.intensity == 0 or abs(self.intensity) > AU_MAX:
            raise FgfemError(f"--intensity {self.intensity}: use a non-zero change within -5..5 (0-5 AU scale)")
        if self.batch < 1:
            raise FgfemError(f"--batch {self.batch}: must be at least 1")
