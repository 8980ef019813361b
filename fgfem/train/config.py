"""Every training hyper-parameter, once, in one dataclass (docs/design.md, "Training").

The defaults are the paper's (Ling et al. 2020, reference ``src/launch/train.sh``); the
CLI passes only the flags a user actually gave (``from_cli``), so a resumed run keeps
the settings it was started with unless told otherwise. The config is stored as JSON
inside every checkpoint, which is what makes ``--resume`` need nothing but the run folder.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from fgfem.aus import AU_SCALE
from fgfem.errors import FgfemError
from fgfem.nets import NetConfig, get_preset

REGULARIZERS = ("wgan-gp", "r1")
# Settings that may change when a run is resumed without changing what has been trained so far.
RESUMABLE_OVERRIDES = frozenset(
    {"max_steps", "epochs", "decay_epochs", "save_every", "keep_last", "preview_every", "log_every", "device",
     "num_workers"}
)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run; docs/design.md, "Training", says where each comes from."""

    # Networks and data.
    preset: str = "paper"
    image_size: int = 128
    conv_dim: int | None = None  # override the preset's generator width (small nets for tests and smoke runs)
    critic_dim: int | None = None  # override the preset's critic width
    warp: bool | None = None  # override the preset's au_warp (per-AU displacement fields; needs a residual preset)
    init: str | None = None  # start from these weights (run folder, checkpoint or exported generator), not random
    batch: int = 16
    limit: int | None = None  # use only the first N training faces (quick runs, tests)
    holdout: str | None = None  # text file of aus.csv paths to keep out of training (used for previews)
    num_workers: int = 0
    # Optimisation: Adam(0.5, 0.999), lr 1e-4 for both nets, linear decay to 1e-5 over the last 20 of 50 epochs.
    lr_g: float = 1e-4
    lr_d: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.999
    epochs: int = 50
    decay_epochs: int = 20
    final_lr: float = 1e-5
    critic_steps: int = 4  # the generator trains on every critic_steps-th iteration
    max_steps: int | None = None  # stop after this many iterations (critic steps), whatever the epochs say
    # Loss weights.
    lambda_d_cond: float = 150.0
    lambda_gp: float = 10.0
    lambda_g_cond: float = 150.0
    lambda_idt: float = 30.0
    lambda_cyc: float = 30.0
    lambda_tv: float = 1e-5
    # The generator's AU condition again, weighted towards the AUs each target moves (losses.changed_au_error;
    # not in the paper). Off at 0.
    lambda_cond_changed: float = 0.0
    # Supervised expression pairs (fgfem/train/pairs.py; not in the paper): L1 between G(source, rel) and
    # the same person's photo with the target expression. Off at 0.
    lambda_pair: float = 0.0
    pair_pattern: str | None = None  # regex whose named groups say which faces are one person in one pose
    pair_batch: int = 4
    # How the pairs' 68 landmarks move, asked of the warp's displacement field (pixels; needs lambda_pair > 0,
    # a warp generator and a fgfem prep folder, which keeps the landmarks). Off at 0.
    lambda_flow: float = 0.0
    # Every training face's landmarks, moved by the warp, read by the landmark AU estimator: each AU must
    # change by what was asked (0-5 units; needs a warp generator and a fgfem prep folder). Off at 0.
    lambda_warp_au: float = 0.0
    # Critic regulariser: the paper's WGAN-GP on every step, or lazy R1 on real images (cheaper on a CPU).
    regularizer: str = "wgan-gp"
    r1_gamma: float = 10.0
    r1_every: int = 16
    # Relative-AU sampling and augmentation (AU jitters are on the networks' 0-1 scale, as in the reference).
    target_jitter: float = 0.1
    source_jitter: float = 0.02
    # Share of targets that are the face's own AUs with one random AU moved by up to +-single_au_change
    # (0-5 units), instead of another face's AUs: the single-AU edits users ask for. Why: in the shipped
    # training set AU04 >= 1 on 1.5 % of the faces and AU15 on none, so another face's AUs almost never
    # ask for the +1 brow or lip-corner change that `fgfem edit --au 4=+1` wants. 0 (the paper) is off.
    single_au_targets: float = 0.0
    single_au_change: float = 2.0
    hflip: bool = True
    pad_crop: bool = True  # pad by image_size / 16 (black, as the reference) and crop at a random offset
    # Bookkeeping.
    seed: int = 0
    save_every: int = 1000
    keep_last: int = 3
    preview_every: int = 500
    log_every: int = 1
    # Speed.
    device: str = "auto"
    bf16: bool | None = None  # None: bf16 autocast where native (CUDA, AVX512-BF16/AMX CPUs), else fp32
    channels_last: bool = True

    def __post_init__(self) -> None:
        positive = ("image_size", "batch", "epochs", "critic_steps", "save_every", "keep_last", "preview_every",
                    "log_every", "r1_every", "pair_batch")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise FgfemError(f"training setting {name} must be a positive integer, got {value!r}")
        for name in ("max_steps", "limit", "conv_dim", "critic_dim"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise FgfemError(f"training setting {name} must be a positive integer, got {value!r}")
        if self.num_workers < 0 or self.decay_epochs < 0 or self.seed < 0:
            raise FgfemError("--workers, --decay-epochs and --seed must not be negative")
        for name in ("lr_g", "lr_d", "final_lr"):
            if not getattr(self, name) > 0:
                raise FgfemError(f"learning rate {name} must be positive, got {getattr(self, name)!r}")
        for field in dataclasses.fields(self):
            if field.name.startswith("lambda_") or field.name in ("r1_gamma", "target_jitter", "source_jitter"):
                value = getattr(self, field.name)
                if not isinstance(value, (int, float)) or value < 0:
                    raise FgfemError(f"training setting {field.name} must be a number >= 0, got {value!r}")
        if not 0 <= self.single_au_targets <= 1 or not 0 < self.single_au_change <= AU_SCALE:
            raise FgfemError(f"--single-au-targets must be a share in [0, 1] and --single-au-change in "
                             f"(0, {AU_SCALE:g}], got {self.single_au_targets!r} and {self.single_au_change!r}")
        if self.lambda_pair > 0 and not self.pair_pattern:
            raise FgfemError("--lambda-pair needs --pair-pattern (which faces are one person with two expressions)")
        if self.lambda_flow > 0 and not (self.lambda_pair > 0 and self.net_config().au_warp):
            raise FgfemError("--lambda-flow needs --lambda-pair (it uses the same pairs) and a warp generator (--warp)")
        if self.lambda_warp_au > 0 and not self.net_config().au_warp:
            raise FgfemError("--lambda-warp-au needs a warp generator (--warp)")
        if self.regularizer not in REGULARIZERS:
            raise FgfemError(f"unknown regulariser {self.regularizer!r}; choose one of: {', '.join(REGULARIZERS)}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise FgfemError(f"Adam betas must lie in [0, 1), got ({self.beta1}, {self.beta2})")

    # --- derived values -------------------------------------------------------------------------------

    def net_config(self) -> NetConfig:
        """The networks this run trains: the preset at ``image_size``, with any width overrides."""
        cfg = get_preset(self.preset, self.image_size)
        if self.warp is not None and self.warp != cfg.au_warp:
            cfg = dataclasses.replace(cfg, au_warp=self.warp)
        widths = {k: v for k, v in (("conv_dim", self.conv_dim), ("critic_dim", self.critic_dim)) if v is not None}
        if not widths:
            return cfg
        suffix = "-".join(f"{k.split('_')[0]}{v}" for k, v in widths.items())
        return dataclasses.replace(cfg, name=f"{cfg.name}-{suffix}", **widths)

    @property
    def pad(self) -> int:
        """Padding for the random-crop augmentation (the reference pads by image_size // 16)."""
        return self.image_size // 16 if self.pad_crop else 0

    def learning_rate(self, base: float, epoch: int) -> float:
        """Learning rate in ``epoch`` (0-based) for a network whose initial rate is ``base``.

        Constant, then linear down over the last ``decay_epochs`` epochs so that the last one
        runs at ``final_lr`` (the reference's schedule), applied per epoch to both networks.
        """
        start = self.epochs - self.decay_epochs
        if self.decay_epochs == 0 or epoch < start:
            return base
        progress = min(1.0, (epoch - start + 1) / self.decay_epochs)
        return base + progress * (self.final_lr - base)

    # --- (de)serialisation ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        if not isinstance(data, dict):
            raise FgfemError(f"training config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise FgfemError(f"training config has unknown settings {unknown}; written by a newer fgfem?")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as problem:
            raise FgfemError(f"training config is not valid JSON: {problem}") from None
        return cls.from_dict(data)

    @classmethod
    def from_cli(cls, overrides: dict[str, Any], base: TrainConfig | None = None) -> TrainConfig:
        """Defaults (or ``base``), with the options the user gave; ``None`` means "not given".

        ``lr`` sets both learning rates; every other key is a field name.
        """
        given = {k: v for k, v in overrides.items() if v is not None}
        if "lr" in given:
            lr = given.pop("lr")
            given.setdefault("lr_g", lr)
            given.setdefault("lr_d", lr)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(given) - known)
        if unknown:
            raise FgfemError(f"unknown training settings {unknown}")
        return dataclasses.replace(base or cls(), **given)

    def with_resume_overrides(self, overrides: dict[str, Any]) -> TrainConfig:
        """The stored config of a resumed run plus the overrides that cannot change its past.

        Changing e.g. the batch or a loss weight mid-run would make the result unreproducible,
        so those are refused with a clear line instead of being silently ignored.
        """
        given = {k: v for k, v in overrides.items() if v is not None}
        if "lr" in given:
            lr = given.pop("lr")
            given.update(lr_g=lr, lr_d=lr)
        changed = sorted(k for k, v in given.items() if k not in RESUMABLE_OVERRIDES and getattr(self, k, v) != v)
        if changed:
            raise FgfemError(
                f"--resume keeps the run's own settings; cannot change {', '.join(changed)} "
                f"(only {', '.join(sorted(RESUMABLE_OVERRIDES))} may change)"
            )
        allowed = {k: v for k, v in given.items() if k in RESUMABLE_OVERRIDES}
        return dataclasses.replace(self, **allowed)
