"""One-Euro filter for landmarks in video (Casiez, Roussel & Vogel, CHI 2012).

A low-pass filter whose cutoff rises with speed: while a face is still, landmark
jitter is smoothed away (so the crop, and therefore the edit, does not shimmer);
when it moves, the cutoff opens and the landmarks follow without visible lag.
It runs per point and per coordinate on arrays of any shape (68 x 2 here).

Speeds are measured in units of ``scale`` per second; pass the face size (e.g.
inter-ocular distance) as ``scale`` to make the parameters independent of the video's
resolution. Without it, the defaults suit faces of roughly 100-300 px.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OneEuroConfig:
    min_cutoff: float = 1.0
    """Hz: cutoff while still. Lower = smoother, laggier."""
    beta: float = 0.05
    """How fast the cutoff rises with speed (per unit/s). Higher = less lag in fast moves."""
    d_cutoff: float = 1.0
    """Hz: cutoff of the speed estimate itself."""


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    """Smoothing factor of a first-order low-pass with this cutoff at this sampling interval."""
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff))
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Stateful filter: call it once per frame with the landmarks and the frame time."""

    def __init__(self, config: OneEuroConfig | None = None, freq: float = 30.0) -> None:
        self.config = config or OneEuroConfig()
        self.freq = float(freq)
        self.reset()

    def reset(self) -> None:
        """Forget the past (after a cut or when a face is re-acquired)."""
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    def __call__(self, x: np.ndarray, t: float | None = None, scale: float = 1.0) -> np.ndarray:
        """The filtered value for sample ``x`` at time ``t`` seconds (default: one frame after the last)."""
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or self._t is None:
            self._x, self._dx = x.copy(), np.zeros_like(x)
            self._t = 0.0 if t is None else float(t)
            return x.astype(np.float32)
        dt = 1.0 / self.freq if t is None or t <= self._t else float(t) - self._t
        self._t = self._t + dt
        cfg = self.config
        dx = (x - self._x) / dt
        self._dx = self._dx + _alpha(cfg.d_cutoff, dt) * (dx - self._dx)
        cutoff = cfg.min_cutoff + cfg.beta * np.abs(self._dx) / max(float(scale), 1e-9)
        self._x = self._x + _alpha(cutoff, dt) * (x - self._x)
        return self._x.astype(np.float32)
