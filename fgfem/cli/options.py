"""The options the commands share, each defined once: spelling, help, type, default and check.

A command asks for them by name (``@shared_options("weights", "device", ...)``) and
receives their values in one ``Shared``; it never spells one itself, so ``edit``,
``interpolate``, ``render``, ``serve``, ``aus``, ``prep``, ``eval``, ``info`` and
``weights convert`` cannot drift apart in name, help or what they accept. The choices
are types typer checks while it parses (Enums, and parsers for ``--device`` and
``--face``, whose values include numbers), so a bad value fails before any model loads;
``Command`` reports it as the one ``error:`` line every other bad input gets.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from typer.core import TyperCommand

from fgfem.cli.app import console
from fgfem.errors import FgfemError

if TYPE_CHECKING:
    from fgfem.editor import Editor

Callback = TypeVar("Callback", bound=Callable[..., Any])


# The same names as fgfem.perf.PRECISIONS, fgfem.editor.MODES and fgfem.faces.get_backend
# (spelled out so that `fgfem --help` imports no torch; tests/cli/test_cli_basics.py checks they agree).
class Precision(str, Enum):
    """``--precision``: auto (bf16 where native and the model passes the check), fp32 or bf16."""

    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


class Mode(str, Enum):
    """``--mode``: paste the generator's change (delta) or its crop itself."""

    delta = "delta"
    crop = "crop"


class Backend(str, Enum):
    """``--backend``: the face landmark backend (auto: fan where its model files are present, else dlib)."""

    auto = "auto"
    dlib = "dlib"
    fan = "fan"
    dlib_cnn = "dlib-cnn"


DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def parse_device(value: str) -> str:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (any case); whether it is present is checked on use."""
    device = str(value).strip().lower()
    if not DEVICE_PATTERN.fullmatch(device):
        raise typer.BadParameter(f"{value!r} is not auto, cpu, cuda, cuda:N or mps.")
    return device


def parse_face(value: str) -> str:
    """``largest``, ``all`` or a face number N (0 = leftmost); whether face N is there is checked per photo."""
    face = str(value).strip().lower()
    if face not in ("largest", "all") and not face.isdigit():
        raise typer.BadParameter(f"{value!r} is not largest, all or a face number (0 = leftmost).")
    return face


# What to change, for edit, interpolate and render: given to each as its own leading options (what
# to change comes first in --help), and read together by ``fgfem.request.EditRequest``.
AU_OPTION = typer.Option(
    None, "--au", "-a",
    help="AU change: 12=+1.0 (relative), AU4=-0.5, lip_corner_puller=+2, or 12=3 (absolute target). Repeatable.",
)
TARGET_OPTION = typer.Option(
    None, "--target", "-t", help="Copy the expression of the face in this image (expression transfer).",
)
EXPRESSION_OPTION = typer.Option(
    None, "--expression", "-e",
    help="Emotion preset measured on real posed faces: happy, sad, surprise, anger, disgust, fear (=WEIGHT scales "
         "it, e.g. happy=0.8) or neutral; with --au, the --au value wins for its AU. Repeatable.",
)


@dataclass(frozen=True)
class SharedOption:
    """One shared option: its type, default, spellings, help and typer's extra settings."""

    annotation: Any
    default: Any
    decls: tuple[str, ...]
    help: str
    settings: tuple[tuple[str, Any], ...] = ()

    def parameter(self, name: str, default: Any) -> inspect.Parameter:
        """The keyword parameter typer reads this option from, with ``default``."""
        info = typer.Option(default, *self.decls, help=self.help, **dict(self.settings))
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=self.annotation)


OPTIONS: dict[str, SharedOption] = {
    "face": SharedOption(str, "largest", ("--face",),
                         "Which faces: largest, all, or N; faces are numbered 0, 1, ... left to right, as fgfem aus "
                         "lists them.", (("parser", parse_face),)),
    "mode": SharedOption(Mode, Mode.delta, ("--mode",),
                         "delta: paste the change G(x,r)-G(x,0) (keeps photo detail); crop: paste G(x,r) itself.",
                         (("metavar", "<mode>"),)),
    "weights": SharedOption(Path | None, None, ("--weights", "-w"),
                            "Model: a .safetensors file, a checkpoint of fgfem train, or its run folder; default: "
                            "the shipped model."),
    "device": SharedOption(str, "auto", ("--device",), "auto, cpu, cuda, cuda:N or mps.",
                           (("parser", parse_device),)),
    "precision": SharedOption(Precision, Precision.auto, ("--precision",),
                              "auto (bf16 where the hardware runs it natively and the model keeps >= 40 dB PSNR "
                              "against fp32, checked once per model file), fp32 or bf16.",
                              (("case_sensitive", False), ("metavar", "<name>"))),
    "backend": SharedOption(Backend, Backend.auto, ("--backend",), "Face landmark backend: auto, dlib or fan.",
                            (("case_sensitive", False), ("metavar", "<name>"))),
    "force": SharedOption(bool, False, ("--force", "-f"), "Overwrite existing outputs."),
}


@dataclass(frozen=True)
class Shared:
    """The shared options of one run, as the library takes them (plain strings; unasked ones at their defaults)."""

    face: str = "largest"
    mode: str = "delta"
    weights: Path | None = None
    device: str = "auto"
    precision: str = "auto"
    backend: str = "auto"
    force: bool = False

    def load_editor(self) -> Editor:
        """The model these options name, on their device, with their face backend and precision."""
        return load_editor(self.weights, self.device, self.backend, self.precision)


EDIT_OPTIONS = ("face", "mode", "weights", "device", "precision", "backend", "force")
"""What every command that edits with the generator takes (edit, interpolate, render)."""


def shared_options(*names: str, **defaults: Any) -> Callable[[Callback], Callback]:
    """Give a command the shared options ``names`` (after its own, in this order), handed over as ``shared``.

    The command declares a keyword-only ``shared: Shared`` instead of the options;
    ``defaults`` changes an option's default for this command (``aus`` lists every face).
    Typer reads the command's signature, so the wrapper shows it the command's own
    parameters plus these, and gathers them into one ``Shared`` on the way in.
    """
    unknown = [n for n in (*names, *defaults) if n not in OPTIONS]
    if unknown:
        raise ValueError(f"no shared option {unknown}")

    def decorate(command: Callback) -> Callback:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "shared"]
        added = [OPTIONS[n].parameter(n, defaults.get(n, OPTIONS[n].default)) for n in names]

        @functools.wraps(command)
        def run(**values: Any) -> Any:
            picked = {n: values.pop(n) for n in names}
            shared = Shared(**{n: v.value if isinstance(v, Enum) else v for n, v in picked.items()})
            return command(**values, shared=shared)

        run.__signature__ = signature.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in (*own, *added)}
        return run  # type: ignore[return-value]

    return decorate


class Command(TyperCommand):
    """A command whose shared options' refused values are bad input like any other: one ``error:`` line, exit 1.

    Left to itself, typer answers a value outside an option's choices with its usage box
    and exit status 2; fgfem's promise for bad input (README, docs/design.md) is one line
    and status 1, which is what these checks gave when each command made them by hand.
    """

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except typer.BadParameter as problem:
            if getattr(problem.param, "name", None) not in OPTIONS:
                raise
            # pydantic, which checks the Enum choices inside typer, starts its message with this.
            raise FgfemError(problem.format_message().replace(": Value error, ", ": ")) from None


def load_editor(weights: Path | None, device: str, backend: str, precision: str = "auto") -> Editor:
    """Load the model once, with a status line (it is the slow part of a single edit).

    ``weights`` may be a run folder or a checkpoint of ``fgfem train``: ``Editor.from_weights`` resolves it
    (``fgfem.weights.locate_weights``, the one lookup every command shares).
    """
    from fgfem.editor import Editor
    from fgfem.perf import check_precision_name

    precision = check_precision_name(precision)
    with console.status("loading the model"):
        return Editor.from_weights(weights, device=device, backend=backend, precision=precision)
