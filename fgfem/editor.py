"""The editing pipeline: photo -> faces -> aligned crops -> rig geometry -> generator -> paste-back.

``Editor`` holds the model and the face backend, loaded once and reused for every
file, intensity and video frame. With an AU rig in the weights file (``fgfem.rig``), an
edit is first geometry: the rig says where each landmark goes so that the AU estimator
reads the asked target back, a dense field carries that to every pixel, and the photo is
resampled once at its own resolution (``Editor.geometry``, ``Editor.compose``). The
generator then adds what geometry cannot (``Editor.appearance``, on the rig-warped crop),
and only its *change* is pasted back (``fgfem.faces.paste``). Without a rig the generator
does both, as before. All faces of a photo and all requested intensities go through the
generator in one batched forward pass.

Video follows the same path frame by frame, with a ``FaceTracker`` that follows the
face between frames (landmarks in the previous frame's box instead of a full detection)
and smooths the landmarks over time so the crops, and so the rig's fields, do not jitter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fgfem.aus import AU_SCALE, NUM_AUS, AUEdit, relative_vector
from fgfem.devices import DeviceChoice, resolve_device
from fgfem.errors import FgfemError, NoFaceError
from fgfem.perf import FastGenerator, choose_plan
from fgfem.tensor_images import to_uint8 as to_uint8_images

if TYPE_CHECKING:
    from fgfem.faces import Face, FaceBackend
    from fgfem.faces.align import AlignedBatch
    from fgfem.rig.field import CropField
    from fgfem.rig.model import AURig


@dataclass(frozen=True)
class TargetExpression:
    """Absolute AUs of a target face: every edited face is moved towards them.

    Expression transfer asks for ``AUs(target) - AUs(source)`` per face, which can only
    be formed once the source face is known, so the target travels as its AUs.
    """

    aus: np.ndarray
    label: str = "target"
    canon: np.ndarray | None = None
    """The target face's canonical landmarks (68 x 2): with a rig, the change is fitted to their motion."""


@dataclass(frozen=True)
class DrivenChange:
    """A driving video's change at one frame: relative AUs for the generator, and the rig's change.

    The driver's own landmark motion from its neutral frame is same-person motion, which the
    rig can fit far better than the estimator reads it (``fgfem.rig.transfer``); ``rig`` is
    that fit, played as is on every edited face. None: the faces move by ``deltas`` alone.
    """

    deltas: np.ndarray
    rig: np.ndarray | None = None


# What an edit may be: ``--au`` items, a ready relative 17-vector (0-5 scale), a target expression,
# or a driver's change at one frame.
EditSpec = Sequence[AUEdit] | np.ndarray | TargetExpression | DrivenChange
MODES = ("delta", "crop")


@dataclass
class EditResult:
    """Everything one ``edit_image`` call produced, for the CLI, animations and tests.

    ``images[i]`` is the full-resolution photo at ``intensities[i]``; ``crops[i, f]`` is
    the generator's output for face ``f`` at that intensity; ``reference_crops[f]`` is
    the zero-edit reconstruction ``G(x, 0)`` and ``input_crops[f]`` the aligned input.
    """

    faces: list[Face]
    intensities: list[float]
    images: list[np.ndarray]
    crops: np.ndarray
    reference_crops: np.ndarray
    input_crops: np.ndarray
    source_aus: np.ndarray
    deltas: np.ndarray
    aligned: Any = field(repr=False, default=None)

    def image_at(self, intensity: float) -> np.ndarray:
        for value, image in zip(self.intensities, self.images, strict=True):
            if math.isclose(value, intensity, abs_tol=1e-9):
                return image
        raise KeyError(f"intensity {intensity} was not rendered")


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise FgfemError(f"--mode {mode!r}: choose delta (paste the change, keeps photo detail) or crop")
    return mode


def as_tensor(crops: Any, device: torch.device) -> torch.Tensor:
    tensor = crops if isinstance(crops, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(crops))
    return tensor.to(device=device, dtype=torch.float32)


class Editor:
    """A loaded generator plus a face backend: edits photos and video frames.

    Build it with ``Editor.from_weights`` (or directly from a generator in tests) and
    keep it: loading the networks and the landmark model is the slow part.
    """

    def __init__(
        self,
        generator: torch.nn.Module,
        *,
        image_size: int,
        device: DeviceChoice | str = "auto",
        backend: FaceBackend | str = "auto",
        max_batch: int = 32,
        weights_info: Any = None,
        precision: str = "auto",
        rig: AURig | None = None,
    ) -> None:
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.generator = generator.to(self.device.device).eval()
        # With a rig the geometry is the rig's (a dense field applied to the photo at full
        # resolution) and the generator only adds appearance on the rig-warped crop, so a
        # generator's own warp is switched off (``lite``); ``paper`` has none.
        self.rig = rig
        if rig is not None and hasattr(self.generator, "own_warp"):
            self.generator.own_warp = False
        # The path `fgfem info` reports: on CUDA cuDNN autotuning, channels_last, bf16 and CUDA
        # graphs (measured 11-26x the one-face eager baseline on an H200); on CPU bf16 where native
        # and the model passes the precision check (``fgfem.perf``), otherwise fp32.
        self.plan = choose_plan(self.device, precision=precision)
        self._fast = FastGenerator(self.generator, self.plan)
        # A residual generator returns its input bit for bit for a zero edit (``au_weighted_change``
        # and ``warp_change`` are exactly zero), so G(x, 0) costs no forward pass: half the work of a
        # one-face edit or a video frame.
        self.zero_edit_is_identity = bool(generator.cfg.residual_output)
        self.image_size = int(image_size)
        self.max_batch = max(1, int(max_batch))
        self.weights_info = weights_info
        self._backend_spec = backend

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_weights(
        cls, path: str | Path | None = None, device: str = "auto", backend: str = "auto", precision: str = "auto",
        **kwargs: Any,
    ) -> Editor:
        """Load the generator from a safetensors file (default: the shipped weights)."""
        from fgfem.rig.model import load_rig
        from fgfem.weights import load_generator, locate_weights

        path = locate_weights(path)
        choice = resolve_device(device)
        generator, info = load_generator(path, choice.device)
        kwargs.setdefault("rig", load_rig(path))
        return cls(generator, image_size=info.cfg.image_size, device=choice, backend=backend,
                   weights_info=info, precision=precision, **kwargs)

    @property
    def backend(self) -> FaceBackend:
        """The face backend, created on first use (so a generator-only Editor needs no face models)."""
        if isinstance(self._backend_spec, str):
            from fgfem.faces import get_backend

            self._backend_spec = get_backend(self._backend_spec)
        return self._backend_spec

    # ----------------------------------------------------------------- faces and AUs
    def find_faces(self, rgb: np.ndarray, face: str = "largest") -> list[Face]:
        """Detected faces (with 68 landmarks) chosen by ``--face largest|all|N``; NoFaceError if none."""
        from fgfem.faces import detect_faces, no_face_message

        faces = detect_faces(self.backend, rgb, face)
        if not faces:
            raise NoFaceError(no_face_message(self.backend, rgb))
        return list(faces)

    @staticmethod
    def raw_aus(faces: Sequence[Face]) -> np.ndarray:
        """F x 17 AU readings before the 0-5 clip (what the rig must move from)."""
        from fgfem.au_reading.estimator import raw_aus

        return _read_faces(raw_aus, faces, np.float64)

    @staticmethod
    def measure_aus(faces: Sequence[Face]) -> np.ndarray:
        """F x 17 AU intensities (0-5) estimated from each face's landmarks."""
        from fgfem.au_reading.estimator import estimate_aus

        return _read_faces(estimate_aus, faces, np.float32)

    def target_expression(self, rgb: np.ndarray, label: str = "target") -> TargetExpression:
        """The AUs of the largest face in ``rgb``, as a target for expression transfer."""
        try:
            faces = self.find_faces(rgb, "largest")
        except NoFaceError:
            raise NoFaceError(f"no face found in the {label} image; expression transfer needs one") from None
        from fgfem.au_reading.estimator import canonical_landmarks

        return TargetExpression(aus=self.measure_aus(faces[:1])[0], label=label,
                                canon=canonical_landmarks(np.asarray(faces[0].landmarks, dtype=np.float64)))

    def rig_changes(self, spec: EditSpec, faces: Sequence[Face], deltas: np.ndarray) -> np.ndarray | None:
        """F x 17 AU changes for the rig to play at intensity 1, where they are not ``deltas``' own; else None.

        With a rig and a target's landmarks, expression transfer plays the AU change whose rig
        motion lands each source face's landmarks closest to the target's
        (``fgfem.rig.transfer``): the estimator's difference alone reads AU04, AU15 or AU20
        faintly and so plays them faintly (0.23 of the real motion reproduced on held-out pairs; the
        fit 0.37), and the 0-5 clip of ``geometry`` would drop every motion below a neutral reading.
        ``deltas`` (the estimator's difference) is the fit's prior, and stays what the
        generator is conditioned on.
        """
        if isinstance(spec, DrivenChange) and spec.rig is not None and self.rig is not None:
            return np.tile(np.asarray(spec.rig, dtype=np.float64), (len(faces), 1))
        if not isinstance(spec, TargetExpression) or spec.canon is None or self.rig is None or not len(faces):
            return None
        from fgfem.au_reading.estimator import canonical_landmarks
        from fgfem.rig.transfer import fit_expression_change

        source = canonical_landmarks(np.stack([np.asarray(f.landmarks, dtype=np.float64) for f in faces]))
        raw = self.raw_aus(faces)
        return fit_expression_change(self.rig, source, spec.canon, self.rig_change(raw, deltas), source_raw=raw)

    @staticmethod
    def rig_change(raw: np.ndarray, deltas: np.ndarray) -> np.ndarray:
        """The AU change the rig plays for ``deltas`` on faces reading ``raw`` (F x 17, unclipped).

        The target is ``clip(shown + delta, 0, 5)`` with ``shown = clip(raw, 0, 5)``, reached
        from the *unclipped* reading, so a face whose AU12 reads below zero (shown as 0) still
        smiles by what was asked; where the target is 0 the reading only has to reach 0.
        """
        deltas = np.asarray(deltas, dtype=np.float64)
        shown = np.clip(raw, 0.0, 5.0)
        target = np.clip(shown + deltas, 0.0, 5.0)
        change = np.where(target > 0, target - raw, np.minimum(target - raw, 0.0))
        change[np.abs(deltas) == 0] = 0.0
        return change

    @staticmethod
    def deltas_for(spec: EditSpec, source_aus: np.ndarray) -> np.ndarray:
        """F x 17 relative AU changes (0-5 scale) at intensity 1, one row per face."""
        count = len(source_aus)
        if isinstance(spec, DrivenChange):
            spec = np.asarray(spec.deltas, dtype=np.float32)
        if isinstance(spec, TargetExpression):
            target = np.asarray(spec.aus, dtype=np.float32).reshape(1, NUM_AUS)
            return (target - source_aus).astype(np.float32)
        if isinstance(spec, np.ndarray):
            delta = np.asarray(spec, dtype=np.float32)
            if delta.shape == (NUM_AUS,):
                return np.tile(delta, (count, 1))
            if delta.shape == (count, NUM_AUS):
                return delta
            raise FgfemError(f"a relative AU vector must have {NUM_AUS} values, got shape {delta.shape}")
        edits = list(spec)
        return np.stack([relative_vector(edits, aus) for aus in source_aus]).astype(np.float32).reshape(
            count, NUM_AUS
        )

    # ----------------------------------------------------------------- the model
    def generate(self, crops: torch.Tensor, rel_aus: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``G(crops, rel / 5)`` for B crops and B relative AU vectors (0-5 scale), in chunks.

        Runs the way ``self.plan`` says (``torch.inference_mode``, the device's autocast, on
        CUDA channels_last and CUDA graphs); returns float32 on the model's device.
        """
        device = self.device.device
        x = as_tensor(crops, device)
        rel = torch.as_tensor(np.asarray(rel_aus, dtype=np.float32), device=device) / AU_SCALE
        if x.shape[0] != rel.shape[0]:
            raise ValueError(f"{x.shape[0]} crops but {rel.shape[0]} AU vectors")
        outputs = [self._fast(x[start:start + self.max_batch], rel[start:start + self.max_batch])
                   for start in range(0, x.shape[0], self.max_batch)]
        return torch.cat(outputs) if outputs else x.new_zeros(x.shape)

    def edit_batch(
        self, crops: torch.Tensor, deltas: np.ndarray, intensities: Sequence[float]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Edited crops (I x F x 3 x s x s) and references G(x, 0) (F x 3 x s x s) in ONE forward pass.

        For a residual generator the reference is ``x`` itself (what G(x, 0) returns exactly).

        Rows whose scaled change is exactly zero are not recomputed: they *are* the
        reference, which makes a zero edit reproduce ``G(x, 0)`` exactly and so the
        delta paste-back return the photo bit for bit.
        """
        x = as_tensor(crops, self.device.device)
        count = x.shape[0]
        identity = self.zero_edit_is_identity
        rows_x = [] if identity else [x]
        rows_rel = [] if identity else [np.zeros((count, NUM_AUS), dtype=np.float32)]
        where: list[list[int | None]] = []
        next_row = 0 if identity else count
        for intensity in intensities:
            scaled = (deltas * np.float32(intensity)).astype(np.float32)
            slots: list[int | None] = []
            for f in range(count):
                if not np.any(scaled[f]):
                    slots.append(None)
                    continue
                rows_x.append(x[f : f + 1])
                rows_rel.append(scaled[f : f + 1])
                slots.append(next_row)
                next_row += 1
            where.append(slots)
        out = (self.generate(torch.cat(rows_x), np.concatenate(rows_rel)) if rows_x
               else x.new_zeros((0, *x.shape[1:])))
        reference = x.clamp(-1.0, 1.0) if identity else out[:count]
        edited = torch.stack(
            [torch.stack([reference[f] if slot is None else out[slot] for f, slot in enumerate(slots)])
             for slots in where]
        ) if where else out.new_zeros((0, *reference.shape))
        return edited, reference

    # ----------------------------------------------------------------- geometry (the rig)
    def geometry(self, aligned: AlignedBatch, deltas: np.ndarray,
                 changes: np.ndarray | None = None) -> list[CropField | None]:
        """Each face's dense field for these AU changes (F x 17, 0-5 scale); all None without a rig.

        The rig moves each landmark so that the estimator reads the clipped target back
        (``rig_change``); ``changes`` (from ``rig_changes``, already scaled to the intensity)
        replaces that where the change was fitted to a target's landmarks.
        """
        if self.rig is None or len(aligned) == 0:
            return [None] * len(aligned)
        from fgfem.faces.align import landmarks_in_crop
        from fgfem.rig.field import landmark_field

        change = self.rig_change(self.raw_aus(aligned.faces), deltas) if changes is None else changes
        landmarks = np.stack([f.landmarks for f in aligned.faces]).astype(np.float64)
        motion = self.rig.image_motion(landmarks, change)
        fields: list[CropField | None] = []
        for index, face in enumerate(aligned.faces):
            linear = np.asarray(aligned.matrices[index], dtype=np.float64)[:, :2]
            crop_motion = motion[index] @ linear.T
            fields.append(landmark_field(landmarks_in_crop(face, aligned.matrices[index]), crop_motion, aligned.size))
        warn_if_limited(fields, deltas if changes is None else changes)  # name what is played
        return fields

    def appearance(self, crops: torch.Tensor, rel_aus: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The generator's edit of each row (N crops, N relative AU vectors) and its reference G(x, 0).

        For a residual generator the reference is the input itself (what G(x, 0) returns
        exactly); rows with no change are not run at all and come back as their reference.
        """
        x = as_tensor(crops, self.device.device)
        rel = np.asarray(rel_aus, dtype=np.float32).reshape(len(x), NUM_AUS)
        moving = [i for i in range(len(x)) if np.any(rel[i])]
        if self.zero_edit_is_identity:
            reference = x.clamp(-1.0, 1.0)
        else:
            reference = self.generate(x, np.zeros_like(rel)) if len(x) else x
        edited = reference.clone()
        if moving:
            edited[moving] = self.generate(x[moving], rel[moving])
        return edited, reference

    def compose(self, rgb: np.ndarray, aligned: AlignedBatch, fields: Sequence[CropField | None],
                edited: torch.Tensor, reference: torch.Tensor, *, mode: str = "delta",
                resample: str = "lanczos") -> np.ndarray:
        """The photo with each face's field applied at full resolution, then the generator's change pasted.

        ``resample``: the kernel of ``fgfem.rig.warp.RESAMPLE`` (photos Lanczos; render passes cubic).
        """
        from fgfem.rig.warp import warp_photo

        if not any(f is not None for f in fields):
            return self.paste(rgb, edited, reference, aligned, mode=mode)
        warped = warp_photo(rgb, aligned, fields, resample=resample)
        return self.paste(warped, edited, reference, aligned, mode=mode, in_place=True)

    # ----------------------------------------------------------------- photos
    def edit_image(
        self,
        rgb: np.ndarray,
        edits_or_delta: EditSpec,
        *,
        intensities: Sequence[float] = (1.0,),
        face: str = "largest",
        mode: str = "delta",
        faces: Sequence[Face] | None = None,
    ) -> EditResult:
        """Edit every selected face of ``rgb`` at each intensity; full-resolution results.

        ``faces`` skips detection (video tracking, tests); otherwise faces are detected
        and chosen by ``face``. Raises NoFaceError when there is none.
        """
        check_mode(mode)
        intensities = [float(a) for a in intensities]
        if not intensities:
            raise FgfemError("no intensity given")
        faces = list(faces) if faces is not None else self.find_faces(rgb, face)
        if not faces:
            raise NoFaceError("no face found in the image")
        source_aus = self.measure_aus(faces)
        deltas = self.deltas_for(edits_or_delta, source_aus)
        changes = self.rig_changes(edits_or_delta, faces, deltas)
        aligned = self.align(rgb, faces)
        if self.rig is None:
            edited, reference = self.edit_batch(aligned.crops, deltas, intensities)
            images = [self.paste(rgb, edited[i], reference, aligned, mode=mode) for i in range(len(intensities))]
        else:
            edited, reference, images = self._edit_with_rig(rgb, aligned, deltas, intensities, mode, changes)
        return EditResult(
            faces=faces,
            intensities=intensities,
            images=images,
            crops=np.stack([to_uint8_images(e) for e in edited]),
            reference_crops=to_uint8_images(reference),
            input_crops=to_uint8_images(as_tensor(aligned.crops, torch.device("cpu"))),
            source_aus=source_aus,
            deltas=deltas,
            aligned=aligned,
        )

    def _edit_with_rig(self, rgb: np.ndarray, aligned: AlignedBatch, deltas: np.ndarray,
                       intensities: Sequence[float], mode: str,
                       changes: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor, list[np.ndarray]]:
        """Rig geometry per intensity, one generator pass over every (intensity, face) row, then compose."""
        from fgfem.rig.field import warp_crops

        count = len(aligned)
        fields = [self.geometry(aligned, deltas * np.float32(a), None if changes is None else changes * a)
                  for a in intensities]
        crops = torch.cat([warp_crops(aligned.crops, f) for f in fields]) if fields else aligned.crops[:0]
        rel = np.concatenate([deltas * np.float32(a) for a in intensities]).astype(np.float32)
        edited, warped_reference = self.appearance(crops, rel)
        edited = edited.view(len(intensities), count, *edited.shape[1:])
        warped_reference = warped_reference.view(len(intensities), count, *warped_reference.shape[1:])
        images = [self.compose(rgb, aligned, fields[i], edited[i], warped_reference[i], mode=mode)
                  for i in range(len(intensities))]
        reference = as_tensor(aligned.crops, self.device.device).clamp(-1.0, 1.0)
        if not self.zero_edit_is_identity:
            reference = self.generate(reference, np.zeros((count, NUM_AUS), np.float32))
        return edited, reference, images

    def align(self, rgb: np.ndarray, faces: Sequence[Face]) -> Any:
        from fgfem.faces.align import align_faces

        return align_faces(rgb, list(faces), size=self.image_size)

    @staticmethod
    def paste(rgb: np.ndarray, edited: torch.Tensor, reference: torch.Tensor, aligned: Any, *, mode: str,
              in_place: bool = False) -> np.ndarray:
        from fgfem.faces.paste import paste_back

        return paste_back(rgb, edited, reference, aligned, mode=mode, in_place=in_place)


def _read_faces(reader: Any, faces: Sequence[Face], dtype: type) -> np.ndarray:
    """F x 17 readings of ``reader`` (an estimator function) on the faces' landmarks, in ``dtype``."""
    if not faces:
        return np.zeros((0, NUM_AUS), dtype=dtype)
    landmarks = np.stack([np.asarray(f.landmarks, dtype=dtype) for f in faces])
    return np.asarray(reader(landmarks), dtype=dtype).reshape(len(faces), NUM_AUS)


def warn_if_limited(fields: Sequence[CropField | None], deltas: np.ndarray) -> None:
    """One warning line when the rig had to scale an edit down to keep a face from folding over."""
    import warnings

    from fgfem.aus import AU_CODES
    from fgfem.rig.field import GeometryLimitWarning

    for index, crop_field in enumerate(fields):
        if crop_field is None or crop_field.scale >= 0.95:
            continue
        row = np.asarray(deltas, dtype=np.float32).reshape(len(fields), NUM_AUS)[index]
        largest = AU_CODES[int(np.abs(row).argmax())]
        value = float(row.max() if row.max() > -row.min() else row.min())
        warnings.warn(GeometryLimitWarning(
            f"face {index}: the geometry of this edit was limited to {crop_field.scale:.0%} of the asked motion "
            f"(more would fold the face over; {largest} {value:+.2f} "
            "is more than this face can take)", key=f"geometry limited ({largest})"), stacklevel=3)

