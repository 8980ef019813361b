"""One declaration per training setting: default, help, command-line flag and check, as field metadata.

Why: every setting used to be written three times (a typer parameter, the CLI's overrides
dict and a ``TrainConfig`` field), and help texts restated defaults that could drift. The
group dataclasses of ``fgfem.train.config`` declare each setting once with ``setting()``;
``fgfem.cli.train`` builds its options from ``Setting`` records, ``--set key=value`` parses
with them, and the checks below run on every group that is built (from code, a checkpoint
or a ``--config`` file).

A setting's key (``batch``, ``lambda_pair``) is unique across the groups: it is the name
``--set``, resume overrides and checkpoints written before the grouping use.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fgfem.errors import FgfemError

# Where a setting appears on the command line of ``fgfem train``.
SHOWN = "shown"  # an option listed in --help: the shipped model's recipe or a documented use needs it
HIDDEN = "hidden"  # still accepted as a flag (scripts, tests, smoke runs), not listed; --set works too
REMOVED = "removed"  # a rejected experiment: its flag is refused with a pointer to --set / --config
# No cli at all: reachable through --set and --config only.


@dataclass(frozen=True)
class Check:
    """What a setting's value must be (``wants``, for the error line) and the test for it."""

    wants: str
    test: Callable[[Any], bool]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_KIND_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "text"}
POSITIVE = Check("a positive integer", lambda v: _is_int(v) and v > 0)
NOT_NEGATIVE = Check("an integer >= 0", lambda v: _is_int(v) and v >= 0)
RATE = Check("a positive number", lambda v: _is_number(v) and v > 0)
WEIGHT = Check("a number >= 0", lambda v: _is_number(v) and v >= 0)
SHARE = Check("a share in [0, 1]", lambda v: _is_number(v) and 0 <= v <= 1)
BETA = Check("in [0, 1) (an Adam beta)", lambda v: _is_number(v) and 0 <= v < 1)


def one_of(what: str, *choices: str) -> Check:
    return Check(f"a known {what} ({' or '.join(choices)})", lambda v: v in choices)


def up_to(largest: float) -> Check:
    return Check(f"a number in (0, {largest:g}]", lambda v: _is_number(v) and 0 < v <= largest)


def setting(default: Any, help: str, *, cli: str | None = None, flag: str | None = None,
            resumable: bool = False, check: Check | None = None) -> Any:
    """A dataclass field with its metadata: ``help`` without the default (the CLI appends it),
    ``cli`` one of ``SHOWN``/``HIDDEN``/``REMOVED`` or None, ``flag`` when it is not ``--key-with-dashes``,
    ``resumable`` when ``--resume`` may change it without changing what was trained so far."""
    return dataclasses.field(default=default, metadata={"help": help, "cli": cli, "flag": flag,
                                                        "resumable": resumable, "check": check})


@dataclass(frozen=True)
class Setting:
    """One training setting as the command line, ``--set`` and the checks see it."""

    key: str
    group: str
    kind: type  # int, float, str or bool
    optional: bool  # None allowed (it means "not given": the preset's, no limit, where native...)
    default: Any
    help: str
    cli: str | None
    flag: str | None
    resumable: bool
    check: Check | None

    @property
    def label(self) -> str:
        """How error lines name it: the flag where the command line takes one, else the key for --set."""
        return self.flag if self.flag and self.cli in (SHOWN, HIDDEN) else self.key

    def problem(self, value: Any) -> str | None:
        """Why ``value`` does not fit, or None."""
        if value is None:
            return None if self.optional else "must be given"
        fits = _is_number(value) if self.kind is float else (
            _is_int(value) if self.kind is int else isinstance(value, self.kind))
        if not fits:
            return f"must be {_KIND_WORDS.get(self.kind, self.kind.__name__)}"
        if self.check is not None and not self.check.test(value):
            return f"must be {self.check.wants}"
        return None

    def parse(self, text: str) -> Any:
        """The value of ``--set key=TEXT``, by the setting's type; a one-line error if it does not parse."""
        if self.optional and text.strip().lower() in ("none", "null", ""):
            return None
        try:
            if self.kind is bool:
                return {"true": True, "on": True, "yes": True, "1": True,
                        "false": False, "off": False, "no": False, "0": False}[text.strip().lower()]
            return self.kind(text) if self.kind is str else self.kind(text.strip())
        except (KeyError, ValueError):
            raise FgfemError(f"--set {self.key}={text}: {self.key} takes {_KIND_WORDS[self.kind]}") from None


def group_settings(name: str, cls: type) -> dict[str, Setting]:
    """The ``Setting`` of every field of the group dataclass ``cls`` (annotations resolved to types)."""
    hints = typing.get_type_hints(cls)
    found = {}
    for field in dataclasses.fields(cls):
        kind, optional = _plain_type(hints[field.name])
        meta = field.metadata
        flag = meta.get("flag") or ("--" + field.name.replace("_", "-") if meta.get("cli") else None)
        found[field.name] = Setting(key=field.name, group=name, kind=kind, optional=optional, default=field.default,
                                    help=meta.get("help", ""), cli=meta.get("cli"), flag=flag,
                                    resumable=bool(meta.get("resumable")), check=meta.get("check"))
    return found


def _plain_type(hint: Any) -> tuple[type, bool]:
    """``int | None`` -> (int, True); ``float`` -> (float, False)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], True
    return hint, False


def check_values(values: Mapping[str, Any], settings: Mapping[str, Setting]) -> None:
    """One error line for the first value that does not fit its setting."""
    for key, value in values.items():
        why = settings[key].problem(value)
        if why is not None:
            raise FgfemError(f"training setting {settings[key].label} {why}, got {value!r}")


def parse_assignments(texts: Iterable[str], settings: Mapping[str, Setting]) -> dict[str, Any]:
    """``["batch=8", "lambda_pair=30"]`` (``--set``, repeatable) as ``{"batch": 8, "lambda_pair": 30.0}``."""
    values: dict[str, Any] = {}
    for text in texts:
        key, equals, value = text.partition("=")
        key = key.strip().replace("-", "_")
        if not equals or not key:
            raise FgfemError(f"--set {text}: expected KEY=VALUE, e.g. --set lambda_cyc=60")
        if key not in settings:
            raise FgfemError(f"--set {text}: no training setting {key!r}; the settings are the keys of a run's "
                             "config.json (e.g. batch, lambda_cyc, seed)")
        if key in values:
            raise FgfemError(f"--set {key} is given twice")
        values[key] = settings[key].parse(value)
    return values
