"""Every training hyper-parameter, once: five small groups in one ``TrainConfig`` (docs/design.md, "Training").

``nets`` (which networks), ``data`` (faces, augmentation, target sampling), ``loss`` (weights
and the critic's regulariser), ``optim`` (Adam and the schedule) and ``run`` (seed,
bookkeeping, hardware). The defaults are the paper's (Ling et al. 2020, reference
``src/launch/train.sh``). Each field is declared once with ``setting()``, which also gives
its help, command-line flag and check (``fgfem.train.settings``).

The CLI passes only what a user actually gave (``from_cli``), so a resumed run keeps the
settings it was started with unless told otherwise. The config is stored as JSON (grouped)
inside every checkpoint, which is what makes ``--resume`` need nothing but the run folder;
checkpoints written before the grouping hold it flat, and ``from_dict`` reads both.
Importing this module loads no torch (the command line reads the declarations at start-up).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fgfem.aus import AU_SCALE
from fgfem.errors import FgfemError
from fgfem.train.settings import (
    BETA,
    HIDDEN,
    NOT_NEGATIVE,
    POSITIVE,
    RATE,
    REMOVED,
    SHARE,
    SHOWN,
    WEIGHT,
    Setting,
    check_values,
    group_settings,
    one_of,
    setting,
    up_to,
)

if TYPE_CHECKING:
    from fgfem.nets import NetConfig

REGULARIZERS = ("wgan-gp", "r1")


class _Group:
    """Checks every field of a group against its declared type and check when the group is built."""

    def __post_init__(self) -> None:
        check_values(dataclasses.asdict(self), GROUP_SETTINGS[type(self)])


@dataclass(frozen=True)
class NetsConfig(_Group):
    """Which networks train: a preset, optionally narrower or with/without the warp, optionally warm-started."""

    preset: str = setting("paper", "Network preset: paper (the reference's networks) or lite (about a tenth of "
                          "the cost per step, for CPUs).", cli=SHOWN)
    conv_dim: int | None = setting(None, "Generator width instead of the preset's (small nets for tests and "
                                   "smoke runs).", cli=HIDDEN, check=POSITIVE)
    critic_dim: int | None = setting(None, "Critic width instead of the preset's.", cli=HIDDEN, check=POSITIVE)
    warp: bool | None = setting(None, "Per-AU displacement fields in the generator (residual presets; not given: "
                                "the preset's).", cli=SHOWN)
    init: str | None = setting(None, "Start from these weights instead of random ones: a run folder, a checkpoint "
                               "or an exported generator (fine-tuning).", cli=SHOWN)
    rig: str | None = setting(None, "Train behind this weights file's AU rig, as edits use the generator: each face "
                              "is moved by the rig's field for its AU change first, and the generator's own warp "
                              "is off (needs fgfem prep's landmarks).", cli=SHOWN)

    def net_config(self, image_size: int) -> NetConfig:
        """The networks this run trains: the preset at ``image_size``, with any width or warp override."""
        from fgfem.nets.config import get_preset

        cfg = get_preset(self.preset, image_size)
        if self.warp is not None and self.warp != cfg.au_warp:
            cfg = dataclasses.replace(cfg, au_warp=self.warp)
        widths = {k: v for k, v in (("conv_dim", self.conv_dim), ("critic_dim", self.critic_dim)) if v is not None}
        if not widths:
            return cfg
        suffix = "-".join(f"{k.split('_')[0]}{v}" for k, v in widths.items())
        return dataclasses.replace(cfg, name=f"{cfg.name}-{suffix}", **widths)


@dataclass(frozen=True)
class DataConfig(_Group):
    """The faces, their augmentation and how targets are drawn (AU jitters on the networks' 0-1 scale)."""

    image_size: int = setting(128, "Image side in px, a multiple of 64.", cli=SHOWN, flag="--size", check=POSITIVE)
    batch: int = setting(16, "Images per step and process.", cli=SHOWN, check=POSITIVE)
    limit: int | None = setting(None, "Train on the first N faces only.", cli=HIDDEN, check=POSITIVE)
    holdout: str | None = setting(None, "Text file of aus.csv paths kept out of training (the previews use them).",
                                  cli=SHOWN)
    num_workers: int = setting(0, "Data loader processes.", cli=SHOWN, flag="--workers", resumable=True,
                               check=NOT_NEGATIVE)
    target_jitter: float = setting(0.1, "Uniform noise added to each target AU, as the reference.", check=WEIGHT)
    source_jitter: float = setting(0.02, "Uniform noise added to each source AU, as the reference.", check=WEIGHT)
    # Why: in the shipped training set AU04 >= 1 on 1.5 % of the faces and AU15 on none, so another face's
    # AUs almost never ask for the +1 brow or lip-corner change `fgfem edit --au 4=+1` wants. Tried, no gain
    # (weights/MODEL_CARD.md), so off the command line.
    single_au_targets: float = setting(0.0, "Share of targets that are the face's own AUs with one random AU moved, "
                                       "instead of another face's (0: the paper's sampling).", cli=REMOVED,
                                       check=SHARE)
    single_au_change: float = setting(2.0, "Largest change of such a target, 0-5 units.", cli=REMOVED,
                                      check=up_to(AU_SCALE))
    hflip: bool = setting(True, "Random horizontal flips.")
    pad_crop: bool = setting(True, "Pad by image_size / 16 (black, as the reference) and crop at a random offset.")

    @property
    def pad(self) -> int:
        """Padding for the random-crop augmentation (the reference pads by image_size // 16)."""
        return self.image_size // 16 if self.pad_crop else 0


@dataclass(frozen=True)
class LossConfig(_Group):
    """The paper's loss weights, the critic's regulariser and the extra generator terms (``fgfem.train.terms``)."""

    lambda_d_cond: float = setting(150.0, "Critic AU regression on real faces.", cli=HIDDEN, check=WEIGHT)
    lambda_gp: float = setting(10.0, "Gradient penalty (wgan-gp).", cli=HIDDEN, check=WEIGHT)
    lambda_g_cond: float = setting(150.0, "Generator AU condition.", cli=HIDDEN, check=WEIGHT)
    lambda_idt: float = setting(30.0, "Identity L1 |G(x,0)-x|.", cli=HIDDEN, check=WEIGHT)
    lambda_cyc: float = setting(30.0, "Cycle L1 |G(G(x,r),-r)-x|.", cli=SHOWN, check=WEIGHT)
    lambda_tv: float = setting(1e-5, "Total variation.", cli=HIDDEN, check=WEIGHT)
    lambda_cond_changed: float = setting(0.0, "Generator AU condition again, each AU weighted by how far the target "
                                         "moves it (0: off).", cli=REMOVED, check=WEIGHT)
    lambda_pair: float = setting(0.0, "L1 on photos of one person with two expressions (0: off; not in the paper).",
                                 cli=SHOWN, check=WEIGHT)
    pair_pattern: str | None = setting(None, "Regex; faces whose named groups agree are one person in one pose "
                                       "(the pairs).", cli=SHOWN)
    pair_batch: int = setting(4, "Pairs per generator step.", cli=SHOWN, check=POSITIVE)
    lambda_flow: float = setting(0.0, "Warp vs the pairs' 68 landmark motions, px (needs --lambda-pair, --warp and "
                                 "a fgfem prep folder; 0: off).", cli=SHOWN, check=WEIGHT)
    lambda_warp_au: float = setting(0.0, "AUs read from each face's landmarks moved by the warp vs those asked for "
                                    "(needs --warp and a fgfem prep folder; 0: off).", cli=REMOVED, check=WEIGHT)
    regularizer: str = setting("wgan-gp", "wgan-gp (the paper's, every step) or r1 (lazy R1 on real faces, cheaper "
                               "on a CPU).", cli=SHOWN, check=one_of("regulariser", *REGULARIZERS))
    r1_gamma: float = setting(10.0, "R1 weight.", check=WEIGHT)
    r1_every: int = setting(16, "R1 on every N-th step.", check=POSITIVE)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lambda_pair > 0 and not self.pair_pattern:
            raise FgfemError("--lambda-pair needs --pair-pattern (which faces are one person with two expressions)")


@dataclass(frozen=True)
class OptimConfig(_Group):
    """Adam(0.5, 0.999), lr 1e-4 for both nets, linear decay to 1e-5 over the last 20 of 50 epochs."""

    lr_g: float = setting(1e-4, "Generator learning rate (--lr sets both).", check=RATE)
    lr_d: float = setting(1e-4, "Critic learning rate (--lr sets both).", check=RATE)
    beta1: float = setting(0.5, "Adam beta1.", check=BETA)
    beta2: float = setting(0.999, "Adam beta2.", check=BETA)
    epochs: int = setting(50, "Epochs; the last --decay-epochs of them lower the learning rate.", cli=SHOWN,
                          resumable=True, check=POSITIVE)
    decay_epochs: int = setting(20, "Epochs at the end whose learning rate falls linearly to final_lr (0 keeps it "
                                "constant).", cli=SHOWN, resumable=True, check=NOT_NEGATIVE)
    final_lr: float = setting(1e-5, "Learning rate of the last epoch.", check=RATE)
    critic_steps: int = setting(4, "Train the generator on every N-th step.", cli=SHOWN, check=POSITIVE)
    max_steps: int | None = setting(None, "Stop after N steps whatever --epochs says.", cli=SHOWN, resumable=True,
                                    check=POSITIVE)

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


@dataclass(frozen=True)
class RunConfig(_Group):
    """Seed, what gets written how often, and the hardware."""

    seed: int = setting(0, "Random seed.", cli=HIDDEN, check=NOT_NEGATIVE)
    save_every: int = setting(1000, "Checkpoint every N steps.", cli=SHOWN, resumable=True, check=POSITIVE)
    keep_last: int = setting(3, "Checkpoints to keep.", cli=HIDDEN, resumable=True, check=POSITIVE)
    preview_every: int = setting(500, "Preview grid every N steps.", cli=HIDDEN, resumable=True, check=POSITIVE)
    log_every: int = setting(1, "A metrics line every N steps.", resumable=True, check=POSITIVE)
    device: str = setting("auto", "auto, cpu, cuda, cuda:N or mps.", cli=SHOWN, resumable=True)
    bf16: bool | None = setting(None, "bf16 autocast (not given: where the hardware runs it natively).", cli=SHOWN)
    channels_last: bool = setting(True, "NHWC memory layout.", cli=SHOWN)


GROUPS: dict[str, type] = {"nets": NetsConfig, "data": DataConfig, "loss": LossConfig, "optim": OptimConfig,
                           "run": RunConfig}
GROUP_SETTINGS: dict[type, dict[str, Setting]] = {cls: group_settings(name, cls) for name, cls in GROUPS.items()}
SETTINGS: dict[str, Setting] = {key: s for found in GROUP_SETTINGS.values() for key, s in found.items()}


@dataclass(frozen=True)
class Shorthand:
    """A command-line option that sets several settings at once (their default is the first one's)."""

    sets: tuple[str, ...]
    help: str


SHORTHANDS: dict[str, Shorthand] = {"lr": Shorthand(("lr_g", "lr_d"), "Learning rate of both networks.")}
# Settings that may change when a run is resumed without changing what has been trained so far.
RESUMABLE_OVERRIDES = frozenset(key for key, s in SETTINGS.items() if s.resumable)


@dataclass(frozen=True, init=False)
class TrainConfig:
    """Hyper-parameters of one training run; docs/design.md, "Training", says where each comes from."""

    nets: NetsConfig
    data: DataConfig
    loss: LossConfig
    optim: OptimConfig
    run: RunConfig

    def __init__(self, nets: NetsConfig | None = None, data: DataConfig | None = None, loss: LossConfig | None = None,
                 optim: OptimConfig | None = None, run: RunConfig | None = None, **settings: Any) -> None:
        """The groups given (defaults for the others), then any ``settings`` by key on top: ``batch=8``."""
        unknown = sorted(set(settings) - set(SETTINGS))
        if unknown:
            raise FgfemError(f"unknown training settings {unknown}")
        given = {"nets": nets, "data": data, "loss": loss, "optim": optim, "run": run}
        for name, cls in GROUPS.items():
            group = given[name] if given[name] is not None else cls()
            changes = {k: v for k, v in settings.items() if SETTINGS[k].group == name}
            object.__setattr__(self, name, dataclasses.replace(group, **changes) if changes else group)
        self._check_across_groups()

    def __getattr__(self, name: str) -> Any:
        """A setting by its key (``cfg.batch`` for ``cfg.data.batch``): keys are unique across the groups."""
        found = SETTINGS.get(name)
        if found is None:
            raise AttributeError(f"{type(self).__name__} has no attribute or setting {name!r}")
        return getattr(object.__getattribute__(self, found.group), name)

    def _check_across_groups(self) -> None:
        if self.loss.lambda_flow > 0 and not (self.loss.lambda_pair > 0 and self.net_config().au_warp):
            raise FgfemError("--lambda-flow needs --lambda-pair (it uses the same pairs) and a warp generator (--warp)")
        if self.loss.lambda_warp_au > 0 and not self.net_config().au_warp:
            raise FgfemError(f"{SETTINGS['lambda_warp_au'].label} needs a warp generator (--warp)")
        if self.nets.rig is not None and (self.loss.lambda_warp_au > 0 or self.loss.lambda_flow > 0):
            raise FgfemError(f"{SETTINGS['rig'].label} switches the generator's own warp off; "
                             f"{SETTINGS['lambda_warp_au'].label} and --lambda-flow train it")

    def net_config(self) -> NetConfig:
        """The networks this run trains."""
        return self.nets.net_config(self.data.image_size)

    # --- (de)serialisation ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Grouped: ``{"nets": {...}, "data": {...}, "loss": {...}, "optim": {...}, "run": {...}}``."""
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """Every setting by its key (the form checkpoints held before the grouping)."""
        return {key: value for group in self.to_dict().values() for key, value in group.items()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any) -> TrainConfig:
        """A stored config: grouped (this fgfem) or flat (checkpoints written before the grouping)."""
        from fgfem.nets.config import known_fields

        known_fields(data, [*GROUPS, *SETTINGS], "training config")
        if not any(key in GROUPS for key in data):
            return cls(**data)
        if not all(key in GROUPS and isinstance(value, dict) for key, value in data.items()):
            raise FgfemError(f"training config mixes groups ({', '.join(GROUPS)}) with single settings; "
                             "give one form or the other")
        return cls(**{name: GROUPS[name](**known_fields(values, GROUP_SETTINGS[GROUPS[name]],
                                                        f"training config's {name}"))
                      for name, values in data.items()})

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as problem:
            raise FgfemError(f"training config is not valid JSON: {problem}") from None
        return cls.from_dict(data)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """A ``--config`` file: a training config (grouped or flat), or a run's ``config.json`` (its ``train``)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as problem:
            raise FgfemError(f"--config {path}: cannot read it ({problem.strerror or problem})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as problem:
            raise FgfemError(f"--config {path} is not valid JSON: {problem}") from None
        if isinstance(data, dict) and isinstance(data.get("train"), dict) and "net" in data:
            data = data["train"]
        return cls.from_dict(data)

    @classmethod
    def from_cli(cls, overrides: dict[str, Any], base: TrainConfig | None = None) -> TrainConfig:
        """Defaults (or ``base``), with the settings the user gave by key; ``None`` means "not given".

        A shorthand (``lr``) sets its settings unless they are given themselves.
        """
        given = {k: v for k, v in overrides.items() if v is not None}
        for short, shorthand in SHORTHANDS.items():
            if short in given:
                value = given.pop(short)
                for key in shorthand.sets:
                    given.setdefault(key, value)
        return dataclasses.replace(base or cls(), **given)

    def with_resume_overrides(self, overrides: dict[str, Any]) -> TrainConfig:
        """The stored config of a resumed run plus the overrides that cannot change its past.

        Changing e.g. the batch or a loss weight mid-run would make the result unreproducible,
        so those are refused with a clear line instead of being silently ignored.
        """
        given = {k: v for k, v in overrides.items() if v is not None}
        for short, shorthand in SHORTHANDS.items():
            if short in given:
                value = given.pop(short)
                given.update(dict.fromkeys(shorthand.sets, value))
        changed = sorted(k for k, v in given.items() if k not in RESUMABLE_OVERRIDES and getattr(self, k, v) != v)
        if changed:
            raise FgfemError(
                f"--resume keeps the run's own settings; cannot change {', '.join(changed)} "
                f"(only {', '.join(sorted(RESUMABLE_OVERRIDES))} may change)"
            )
        allowed = {k: v for k, v in given.items() if k in RESUMABLE_OVERRIDES}
        return dataclasses.replace(self, **allowed)
