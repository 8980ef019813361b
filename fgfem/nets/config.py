"""Network presets: one frozen dataclass that fully determines both networks' shapes.

The config travels inside every weights file (``to_dict``/``from_dict``), so a file
always says which networks it fits; nothing about the architecture is guessed later.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fgfem.aus import NUM_AUS
from fgfem.errors import FgfemError

# The critic halves the image six times and its AU head covers what is left in one
# kernel, so a usable image side is a multiple of 2**6.
SIZE_MULTIPLE = 64


@dataclass(frozen=True)
class NetConfig:
    """Shapes of the generator and critic.

    ``conv_dim`` is the generator's base width (the paper's ``ngf``); its widths are
    ``conv_dim * (1, 2, 4, 8)`` and a bottleneck of ``min(bottleneck_cap, 16 * conv_dim)``.
    ``critic_dim`` is the critic's first width (``ndf``), doubled at each of its
    ``critic_layers`` stride-2 convolutions.

    ``residual_output`` makes the generator predict a change added to its input instead of
    a whole new image: ``clamp(x + sum_k r_k * change_k)``, one RGB change map per AU. A zero
    edit is then the identity by construction, so training spends its steps on the
    expression rather than on first learning to copy the face. The paper's generator
    (``False``) re-synthesises every pixel.

    ``au_film`` adds a per-channel scale and shift predicted from the AUs after the
    InstanceNorm of each AU-conditioned layer (``blocks.AUModulation``): the paper's
    constant AU channels are mostly cancelled by that norm.

    ``au_warp`` (with ``residual_output``) also predicts one smooth 2-D displacement field per
    AU and moves the input's pixels along ``sum_k r_k * flow_k`` before the colour change is
    added. Expressions are mostly geometry (lip corners rise, the jaw drops, brows pull
    together); a colour change alone can only paint a blurred average of them.
    """

    name: str
    conv_dim: int
    critic_dim: int
    image_size: int = 128
    num_aus: int = NUM_AUS
    critic_layers: int = 6
    bottleneck_cap: int = 512
    residual_output: bool = False
    au_film: bool = False
    au_warp: bool = False

    def __post_init__(self) -> None:
        for field in ("conv_dim", "critic_dim", "image_size", "num_aus", "critic_layers", "bottleneck_cap"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise FgfemError(f"network config {self.name!r}: {field} must be a positive integer, "
                                 f"got {value!r}")
        for flag in ("residual_output", "au_film", "au_warp"):
            if not isinstance(getattr(self, flag), bool):
                raise FgfemError(f"network config {self.name!r}: {flag} must be true or false")
        if self.au_warp and not self.residual_output:
            raise FgfemError(f"network config {self.name!r}: au_warp needs residual_output (the warp moves "
                             "the input's own pixels)")
        multiple = max(2**self.critic_layers, 16)
        if self.image_size % multiple:
            raise FgfemError(f"image size {self.image_size} is not a multiple of {multiple} "
                             f"(the networks halve it {self.critic_layers} times)")

    @property
    def bottleneck_dim(self) -> int:
        """Channels at the 1/16 scale (512 in the paper)."""
        return min(self.bottleneck_cap, 16 * self.conv_dim)

    @property
    def output_form(self) -> str:
        """How the generator forms its image, in words: what tells two weights files apart for a user."""
        if not self.residual_output:
            form = "new image (tanh), as the paper"
        else:
            form = "input + per-AU colour change" + (" + per-AU warp" if self.au_warp else "")
        return form + (", AU modulation (FiLM)" if self.au_film else "")

    @property
    def au_kernel(self) -> int:
        """Spatial side left after the critic's trunk; the AU head reads it in one kernel."""
        return self.image_size // 2**self.critic_layers

    def with_image_size(self, image_size: int) -> NetConfig:
        """The same networks for another crop size (only the critic's AU head changes)."""
        return dataclasses.replace(self, image_size=image_size)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetConfig:
        """Rebuild a config read from a file; unknown or missing fields are an error, not a guess."""
        known_fields(data, (f.name for f in dataclasses.fields(cls)), "network config")
        missing = [name for name in ("name", "conv_dim", "critic_dim") if name not in data]
        if missing:
            raise FgfemError(f"network config lacks the fields {missing}")
        return cls(**data)


def known_fields(data: Any, known: Iterable[str], what: str) -> dict[str, Any]:
    """``data`` if it is a JSON object whose keys all are in ``known``, else one line saying what is wrong.

    Every config read back from a file (networks here, training in ``fgfem.train.config``) goes
    through this: an unknown key means a newer fgfem (or a typo) wrote it, and guessing what it
    meant would load or train something other than what was asked for.
    """
    if not isinstance(data, dict):
        raise FgfemError(f"{what} must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise FgfemError(f"{what} has unknown fields {unknown}; was it written by a newer fgfem? (then upgrade fgfem)")
    return data


PRESETS: dict[str, NetConfig] = {
    # Ling et al. 2020 / junleen/Expression-manipulator: ngf = ndf = 64 at 128 px.
    "paper": NetConfig(name="paper", conv_dim=64, critic_dim=64),
    # Same topology, a quarter of the generator's width (bottleneck 256) and half the
    # critic's: one 128 px training step (batch 8) costs ~9.8x less CPU time than
    # "paper" (benchmarks/bench_nets_presets.py --threads 1). Residual output and AU
    # modulation: a CPU budget cannot afford the steps the paper's generator spends
    # learning to copy faces and to hear the AUs through InstanceNorm. Warp: expressions are
    # mostly geometry (measured: +1.0 AU12 moved the estimator's AU12 +0.13 without it after
    # 640 steps, +0.25 with it and the landmark-motion loss 200 steps later).
    "lite": NetConfig(name="lite", conv_dim=16, critic_dim=32, residual_output=True, au_film=True, au_warp=True),
}


def get_preset(name: str, image_size: int | None = None) -> NetConfig:
    """The preset called ``name``, optionally at another image size (a multiple of 64)."""
    key = str(name).strip().lower()
    if key not in PRESETS:
        raise FgfemError(f"unknown network preset {name!r}; choose one of: {', '.join(PRESETS)}")
    cfg = PRESETS[key]
    if image_size is None:
        return cfg
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0:
        raise FgfemError(f"image size must be a positive integer, got {image_size!r}")
    if image_size % SIZE_MULTIPLE:
        raise FgfemError(
            f"image size {image_size} is not a multiple of {SIZE_MULTIPLE} (the networks halve it 6 times); "
            f"try {max(SIZE_MULTIPLE, SIZE_MULTIPLE * round(image_size / SIZE_MULTIPLE))}"
        )
    return cfg.with_image_size(image_size)
