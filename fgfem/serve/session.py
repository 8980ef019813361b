"""What the web editor knows about one uploaded photo, with no web framework in sight.

The slow, once-per-photo work (decode with ``edit``'s guards, face detection, landmarks,
the AU readout) happens in ``open_upload``; a slider change only runs
``Editor.edit_image`` with the cached faces (the model and the paste-back). Keeping this
apart from the page means it is tested without a browser, and the page stays a thin
layer of widgets over it.

Exactness: the page turns its sliders into the very ``--au`` strings its "copy as command"
line shows and parses them with the CLI's own parser, and the download is written by
``fgfem.media.save_image`` with the upload's ``LoadedImage``, as ``fgfem edit`` writes it.
So download, command line and ``fgfem edit`` cannot drift apart.
"""

from __future__ import annotations

import re
import secrets
import shlex
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fgfem.aus import AU_CODES, NUM_AUS, AUEdit, parse_au_specs
from fgfem.errors import FgfemError, NoFaceError

if TYPE_CHECKING:
    from fgfem.editor import Editor
    from fgfem.faces import Face
    from fgfem.media import LoadedImage

SLIDER_LIMIT = 3.0
SLIDER_STEP = 0.01
SWEEP_FRAMES = 9
SWEEP_FPS = 8.0
SWEEP_SIZE = 256


@dataclass(frozen=True)
class UploadLimits:
    """Caps on what a client may upload: bytes on disk and decoded pixels (the decompression-bomb guard)."""

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000


@dataclass(frozen=True)
class EditState:
    """The page's controls: 17 relative slider values (0-5 scale), the overall intensity, the face choice."""

    values: tuple[float, ...]
    intensity: float = 1.0
    face: str = "largest"

    @classmethod
    def from_controls(cls, values: Sequence[float | None], intensity: float | None, face: str | None) -> EditState:
        """Round to the slider step and clip to the slider range: the numbers the command line will show."""
        if len(values) != NUM_AUS:
            raise FgfemError(f"expected {NUM_AUS} AU values, got {len(values)}")
        cleaned = tuple(_round(v, SLIDER_LIMIT) for v in values)
        return cls(cleaned, _round(1.0 if intensity is None else intensity, 2.0), str(face or "largest"))

    def au_specs(self) -> list[str]:
        """``--au`` items for the non-zero sliders (``12=+1.25``); ``12=+0`` when all are zero."""
        specs = [f"{AU_CODES[k][2:].lstrip('0')}={_signed(v)}" for k, v in enumerate(self.values) if v != 0]
        return specs or ["12=+0"]

    def edits(self) -> list[AUEdit]:
        """The edits ``fgfem edit`` would parse from ``au_specs()``, by the CLI's own parser."""
        return parse_au_specs(self.au_specs())


def _round(value: float | None, limit: float) -> float:
    number = float(value or 0.0)
    if not np.isfinite(number):
        number = 0.0
    number = min(max(number, -limit), limit)
    return round(round(number / SLIDER_STEP) * SLIDER_STEP, 2) + 0.0  # + 0.0: no "-0"


def _signed(value: float) -> str:
    text = f"{abs(value):.2f}".rstrip("0").rstrip(".")
    return f"{'-' if value < 0 else '+'}{text}"


def _number(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def display_name(name: str, fallback: str = "photo") -> tuple[str, str]:
    """(stem, suffix) of an uploaded file's own name, reduced to safe characters for messages and downloads."""
    base = Path(str(name).replace("\\", "/")).name
    stem = SAFE_NAME.sub("_", Path(base).stem).strip("._")[:64] or fallback
    suffix = SAFE_NAME.sub("", Path(base).suffix.lower())[:8]
    return stem, suffix


def source_name(name: str) -> str:
    """The uploaded file's base name as the user knows it (for the command line): no folders, no control chars."""
    base = Path(str(name).replace("\\", "/")).name
    return "".join(ch for ch in base if ch.isprintable())[:128] or "photo"


def png_bit_depth(path: Path) -> int | None:
    """Bits per channel from a PNG header (PIL opens 16-bit colour PNGs as 8-bit RGB and does not say)."""
    with open(path, "rb") as handle:
        head = handle.read(33)
    if len(head) >= 25 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        return head[24]
    return None


@dataclass
class PhotoSession:
    """One uploaded photo: decoded once, faces detected once per face choice, renders cached by state."""

    token: str
    stem: str
    suffix: str
    loaded: LoadedImage
    note: str
    original: str = ""  # the client's own file name, for the command line
    faces_by_choice: dict[str, list[Face]] = field(default_factory=dict)
    numbered: list[Face] = field(default_factory=list)  # left to right: number N is ``--face N``
    renders: int = 0
    last_key: EditState | None = None
    last_image: np.ndarray | None = None
    last_seconds: float = 0.0
    last_warnings: list[str] = field(default_factory=list)  # what the editor warned of (e.g. limited geometry)
    files: list[Path] = field(default_factory=list)

    @property
    def rgb(self) -> np.ndarray:
        return self.loaded.rgb

    @property
    def file_name(self) -> str:
        return self.original or f"{self.stem}{self.suffix}"

    @property
    def face_choices(self) -> list[str]:
        """``largest``, then each number when there are several faces, then ``all``."""
        if len(self.numbered) < 2:
            return ["largest"]
        return ["largest", *(str(i) for i in range(len(self.numbered))), "all"]

    def faces_for(self, editor: Editor, choice: str) -> list[Face]:
        """The faces ``fgfem edit --face CHOICE`` edits, detected once per choice."""
        key = str(choice).strip().lower()
        if key not in self.face_choices:
            raise FgfemError(f"face {choice!r}: choose one of {', '.join(self.face_choices)}")
        if key not in self.faces_by_choice:
            # --face N counts left to right (fgfem.faces.select_faces): the numbered boxes of the page.
            self.faces_by_choice[key] = [self.numbered[int(key)]] if key.isdigit() else editor.find_faces(self.rgb, key)
        return self.faces_by_choice[key]

    def source_aus(self, editor: Editor, choice: str) -> np.ndarray:
        """The AU readout (0-5) of the first chosen face: what the sliders move away from."""
        return editor.measure_aus(self.faces_for(editor, choice)[:1])[0]

    def render(self, editor: Editor, state: EditState) -> np.ndarray:
        """The full-resolution edited photo for ``state``; the same state twice is rendered once."""
        if self.last_key == state and self.last_image is not None:
            return self.last_image
        start = time.perf_counter()
        faces = self.faces_for(editor, state.face)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            image = editor.edit_image(self.rgb, state.edits(), intensities=[state.intensity], faces=faces).images[0]
        self.last_warnings = list(dict.fromkeys(str(w.message) for w in caught))
        self.last_seconds = time.perf_counter() - start
        self.last_key, self.last_image = state, image
        self.renders += 1
        return image

    def command(self, state: EditState, weights: str | None = None) -> str:
        """The ``fgfem edit`` line that writes what "download" gives."""
        parts = ["fgfem", "edit", shlex.quote(self.file_name), *(f"--au {spec}" for spec in state.au_specs())]
        if state.intensity != 1:
            parts.append(f"--intensity {_number(state.intensity)}")
        if state.face != "largest":
            parts.append(f"--face {state.face}")
        if weights:
            parts.append(f"--weights {shlex.quote(weights)}")
        parts.append(f"-o {self.download_name}")
        return " ".join(parts)

    def sweep_command(self, state: EditState, weights: str | None = None) -> str:
        """The ``fgfem interpolate`` line that writes what the sweep GIF shows."""
        parts = ["fgfem", "interpolate", shlex.quote(self.file_name), *(f"--au {spec}" for spec in state.au_specs()),
                 f"--steps 0,{_number(state.intensity)}", f"--frames {SWEEP_FRAMES}", "--boomerang"]
        if state.face != "largest":
            parts.append(f"--face {state.face}")
        if weights:
            parts.append(f"--weights {shlex.quote(weights)}")
        parts.append(f"-o {self.stem}_sweep.gif")
        return " ".join(parts)

    @property
    def download_name(self) -> str:
        return f"{self.stem}_edited{self.suffix}"

    def write_download(self, editor: Editor, state: EditState, folder: Path) -> Path:
        """The edited photo written exactly as ``fgfem edit`` writes it (format by suffix, EXIF, ICC, alpha)."""
        from fgfem.media import save_image

        image = self.render(editor, state)
        out = self._fresh(folder, self.download_name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            save_image(self.loaded, np.ascontiguousarray(image), out, force=True)
        return out

    def write_sweep(self, editor: Editor, state: EditState, folder: Path) -> Path:
        """A looping GIF from intensity 0 to the current one and back, around the first chosen face."""
        from fgfem.animation import Frame, intensity_schedule, save_animation, step_label
        from fgfem.layout import crop_view, face_view_box

        schedule = intensity_schedule([0.0, state.intensity], frames=SWEEP_FRAMES, boomerang=True)
        unique = sorted(set(schedule))
        faces = self.faces_for(editor, state.face)
        result = editor.edit_image(self.rgb, state.edits(), intensities=unique, faces=faces)
        box = face_view_box(result.faces[0].landmarks, result.images[0].shape)  # as `interpolate` without --full
        views = [crop_view(image, box, SWEEP_SIZE) for image in result.images]
        by_intensity = dict(zip(unique, views, strict=True))
        edits = state.edits()
        frames = [Frame(by_intensity[a], a, step_label(edits, a)) for a in schedule]
        out = self._fresh(folder, f"{self.stem}_sweep.gif")
        return save_animation(frames, out, fps=SWEEP_FPS, force=True)

    def _fresh(self, folder: Path, name: str) -> Path:
        """A new file path in a private sub-folder; the session's previous files are removed (disk stays flat)."""
        for old in self.files:
            old.unlink(missing_ok=True)
            if old.parent.is_dir() and not any(old.parent.iterdir()):
                old.parent.rmdir()
        sub = folder / secrets.token_hex(8)
        sub.mkdir(parents=True, exist_ok=True)
        self.files = [sub / name]
        return self.files[0]


def open_upload(editor: Editor, path: Path, name: str, limits: UploadLimits) -> PhotoSession:
    """Decode an upload with ``edit``'s guards and detect its faces; one-line FgfemError for anything bad.

    Messages name the client's own file name, never the server's temporary path.
    """
    from fgfem.media import MediaWarning, load_image

    stem, suffix = display_name(name)
    shown = f"{stem}{suffix}"
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise FgfemError(f"{shown} is {size / 2**20:.1f} MB; the limit is {limits.max_bytes / 2**20:g} MB")
    notes: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", MediaWarning)
            loaded = load_image(path, max_pixels=limits.max_pixels)
        notes += [str(w.message).replace(str(path), shown) for w in caught if issubclass(w.category, MediaWarning)]
    except FgfemError as problem:
        raise FgfemError(str(problem).replace(str(path), shown)) from None
    if (loaded.format == "PNG" and (png_bit_depth(path) or 8) > 8) or loaded.original_mode.startswith("I;16"):
        notes.append("16 bits per channel: edited at 8 bits, as fgfem edit does")
    if not suffix or suffix == ".jpe":
        suffix = {"JPEG": ".jpg", "MPO": ".jpg"}.get(loaded.format, f".{loaded.format.lower()}")
    session = PhotoSession(token=secrets.token_urlsafe(16), stem=stem, suffix=suffix, loaded=loaded,
                           note="; ".join(notes), original=source_name(name))
    try:
        session.faces_by_choice["largest"] = editor.find_faces(loaded.rgb, "largest")
    except NoFaceError:
        raise FgfemError(f"no face found in {shown}: try a larger, frontal, well-lit face") from None
    everyone = editor.find_faces(loaded.rgb, "all")
    session.numbered = sorted(everyone, key=lambda f: float(f.center[0]))
    session.faces_by_choice["all"] = everyone
    return session


class SessionStore:
    """The photos of the last few browser sessions, oldest dropped first: memory stays bounded."""

    def __init__(self, capacity: int = 8) -> None:
        self.capacity = max(1, int(capacity))
        self._items: OrderedDict[str, PhotoSession] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, session: PhotoSession) -> str:
        with self._lock:
            self._items[session.token] = session
            self._items.move_to_end(session.token)
            while len(self._items) > self.capacity:
                _, dropped = self._items.popitem(last=False)
                for old in dropped.files:
                    old.unlink(missing_ok=True)
        return session.token

    def get(self, token: str | None) -> PhotoSession | None:
        with self._lock:
            session = self._items.get(token or "")
            if session is not None:
                self._items.move_to_end(session.token)
            return session

    def __len__(self) -> int:
        return len(self._items)
