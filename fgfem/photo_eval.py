"""Edits judged as a user sees them: on whole photos, with measures fgfem was not fitted against.

``fgfem.evaluate`` scores the generator on its 128 px crops with fgfem's own AU estimator.
That is what training optimises, so it cannot say whether a face visibly moved. This module
edits full photos with the whole pipeline (rig, generator, paste-back), finds the face
again with dlib's 68-point predictor, and measures:

- **landmark cues** in inter-ocular units (IOD), in the source face's canonical frame (eye
  centres at (+-0.5, 0), y down): lip-corner rise, mouth width, inner-brow gap and rise,
  inner-lip gap, lip-corner drop; and **locality**: how far the landmarks outside the
  edited AU's region (``fgfem.rig.regions``) moved;
- **sharpness**: variance of the Laplacian inside the face (landmark hull), edited over source;
- **identity**: distance of dlib's ResNet face descriptors (0.6 is dlib's same-person threshold);
- **round trip**: PSNR of the photo edited by +r and then by -r, against the photo;
- **transfer share** on same-person neutral -> posed pairs: ``1 - err(edit, posed) /
  err(neutral, posed)`` over the 51 inner landmarks, with the ceiling that two neutral photos
  of one person allow.

None of these reads fgfem's AU estimator, so a model cannot score well by fooling it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fgfem.au_reading.estimator import canonical_landmarks
from fgfem.aus import AU_CODES, NUM_AUS
from fgfem.errors import NoFaceError
from fgfem.rig.regions import AU_REGIONS

INNER = np.arange(17, 68)
"""The 51 inner landmarks (the jaw outline is located least reliably)."""

CUES: dict[str, Callable[[np.ndarray], float]] = {
    # Each cue of canonical landmarks (68 x 2, y down): the edit's measure is after - before.
    "lip_corner_rise": lambda c: float(-(c[48, 1] + c[54, 1]) / 2),
    "mouth_width": lambda c: float(c[54, 0] - c[48, 0]),
    "inner_brow_gap": lambda c: float(c[22, 0] - c[21, 0]),
    "inner_brow_rise": lambda c: float(-(c[21, 1] + c[22, 1]) / 2),
    "outer_brow_rise": lambda c: float(-(c[17, 1] + c[26, 1]) / 2),
    "inner_lip_gap": lambda c: float(c[66, 1] - c[62, 1]),
    "eye_opening": lambda c: float((c[41, 1] + c[40, 1] - c[37, 1] - c[38, 1] + c[47, 1] + c[46, 1]
                                    - c[43, 1] - c[44, 1]) / 4),
}
"""What moves for each AU, measured on landmarks (names say the direction that grows)."""

AU_CUES: dict[str, tuple[str, ...]] = {
    "AU01": ("inner_brow_rise",),
    "AU02": ("outer_brow_rise",),
    "AU04": ("inner_brow_gap", "inner_brow_rise"),
    "AU05": ("eye_opening",),
    "AU07": ("eye_opening",),
    "AU12": ("lip_corner_rise", "mouth_width"),
    "AU15": ("lip_corner_rise",),
    "AU20": ("mouth_width",),
    "AU25": ("inner_lip_gap",),
    "AU26": ("inner_lip_gap",),
    "AU45": ("eye_opening",),
}


@dataclass
class FaceMeasure:
    """Landmarks (canonical and pixel), descriptor and the face's hull mask of one photo's largest face."""

    canon: np.ndarray
    pixels: np.ndarray
    descriptor: np.ndarray | None


@dataclass
class PhotoEditMeasure:
    """One photo, one AU, one intensity."""

    source: str
    au: str
    intensity: float
    cues: dict[str, float]
    locality: float
    sharpness_ratio: float
    identity: float | None
    read_back: float = float("nan")
    """The asked AU's change as ``fgfem aus`` reads it on the re-detected face (the round trip of the rig)."""


@dataclass
class PhotoReport:
    """Every measure, per edit and averaged, for the CLI table and the model card."""

    edits: list[PhotoEditMeasure] = field(default_factory=list)
    round_trip_psnr: list[float] = field(default_factory=list)
    transfer: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    locality_floor: float | None = None
    """``locality`` of an invisible change to the same photos (``locality_floor``): the reading's noise alone."""
    jitter: int = 1
    """The sub-pixel shifts each landmark reading was averaged over (``PhotoJudge``)."""

    def summary(self) -> dict[str, dict[str, float]]:
        """Per (AU, intensity): the mean of each cue, locality, sharpness and identity."""
        out: dict[str, dict[str, float]] = {}
        for key in sorted({(e.au, e.intensity) for e in self.edits}, key=lambda k: (AU_CODES.index(k[0]), k[1])):
            rows = [e for e in self.edits if (e.au, e.intensity) == key]
            entry = {name: float(np.mean([r.cues[name] for r in rows])) for name in CUES}
            entry["locality"] = float(np.mean([r.locality for r in rows]))
            entry["sharpness_ratio"] = float(np.mean([r.sharpness_ratio for r in rows]))
            ids = [r.identity for r in rows if r.identity is not None]
            entry["identity"] = float(np.mean(ids)) if ids else float("nan")
            entry["read_back"] = float(np.mean([r.read_back for r in rows]))
            entry["faces"] = float(len(rows))
            out[f"{key[0]}@{key[1]:+g}"] = entry
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary(), "round_trip_psnr": self.round_trip_psnr, "transfer": self.transfer,
                "skipped": self.skipped, "locality_floor": self.locality_floor, "landmark_jitter": self.jitter}


class PhotoJudge:
    """dlib's landmarks and face descriptor, loaded once.

    ``jitter`` > 1 averages dlib's landmarks over that many sub-pixel shifts of the photo
    (``jittered_landmarks``). dlib returns whole pixels and its cascade answers any change of
    the pixels it samples: on the held-out faces (inter-ocular distance ~76 px) re-saving a
    photo as JPEG q95, a change no one sees, moves the landmarks outside an AU's region by
    0.007 IOD on average, most of the 0.01 locality target; averaged over 9 shifts, 0.003.
    """

    def __init__(self, backend: Any, *, identity: bool = True, jitter: int = 1) -> None:
        if jitter < 1:
            raise ValueError(f"jitter {jitter}: at least 1")
        self.jitter = jitter
        self.backend = backend
        self._recognizer = None
        self._predictor = None
        if identity:
            from fgfem.evaluate import IDENTITY_MODEL, _load_recognizer
            from fgfem.faces.dlib_backend import models_dir

            folder = models_dir()
            if folder is not None and (folder / IDENTITY_MODEL).is_file():
                self._recognizer = _load_recognizer(str(folder / IDENTITY_MODEL))

    def measure(self, rgb: np.ndarray) -> FaceMeasure:
        """The largest face's landmarks (and descriptor); NoFaceError when there is none."""
        from fgfem.faces import detect_faces

        faces = detect_faces(self.backend, rgb, "largest")
        if not faces:
            raise NoFaceError("no face found")
        pixels = (np.asarray(faces[0].landmarks, dtype=np.float64) if self.jitter == 1
                  else jittered_landmarks(self.backend, rgb, np.asarray(faces[0].box, dtype=np.float64), self.jitter))
        return FaceMeasure(canon=canonical_landmarks(pixels), pixels=pixels,
                           descriptor=self._descriptor(rgb, pixels))

    def _descriptor(self, rgb: np.ndarray, pixels: np.ndarray) -> np.ndarray | None:
        if self._recognizer is None:
            return None
        import dlib

        points = [dlib.point(int(round(x)), int(round(y))) for x, y in pixels]
        x0, y0 = pixels.min(0)
        x1, y1 = pixels.max(0)
        shape = dlib.full_object_detection(dlib.rectangle(int(x0), int(y0), int(x1), int(y1)), points)
        return np.asarray(self._recognizer.compute_face_descriptor(np.ascontiguousarray(rgb), shape))


def jittered_landmarks(backend: Any, rgb: np.ndarray, box: np.ndarray, count: int) -> np.ndarray:
    """68 x 2: the backend's landmarks for ``box``, averaged over ``count`` sub-pixel shifts of the photo.

    The shifts are the first ``count`` points of an n x n grid of fractions of a pixel
    (n = ceil(sqrt(count))); each shifted copy (Lanczos, around the face only) is read with
    the box shifted alike, and the shift is taken off its landmarks again.
    """
    import cv2

    side = int(np.ceil(np.sqrt(count)))
    shifts = [((i % side) / side, (i // side) / side) for i in range(count)]
    x0, y0, x1, y1 = (float(v) for v in box[:4])
    margin = 0.5 * max(x1 - x0, y1 - y0)
    height, width = rgb.shape[:2]
    cx0, cy0 = int(max(0.0, x0 - margin)), int(max(0.0, y0 - margin))
    cx1, cy1 = int(min(float(width), x1 + margin)), int(min(float(height), y1 + margin))
    crop = np.ascontiguousarray(rgb[cy0:cy1, cx0:cx1, :3])
    readings = []
    for dx, dy in shifts:
        moved = cv2.warpAffine(crop, np.float32([[1, 0, dx], [0, 1, dy]]), (crop.shape[1], crop.shape[0]),
                               flags=cv2.INTER_LANCZOS4, borderMode=cv2.BORDER_REFLECT)
        shifted = np.array([x0 - cx0 + dx, y0 - cy0 + dy, x1 - cx0 + dx, y1 - cy0 + dy, 1.0])
        points = np.asarray(backend.landmarks_for_boxes(moved, [shifted])[0].landmarks, dtype=np.float64)
        readings.append(points - (dx - cx0, dy - cy0))
    return np.mean(readings, axis=0)


def locality_floor(judge: PhotoJudge, photos: Sequence[tuple[str, np.ndarray]], au: str = "AU12",
                   quality: int = 95) -> float:
    """``locality`` of an invisible change, the photo re-saved as JPEG at ``quality``: the measure's noise floor."""
    import io

    from PIL import Image

    values = []
    for _, rgb in photos:
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(rgb[..., :3])).save(buffer, "JPEG", quality=quality)
        try:
            before, after = judge.measure(rgb), judge.measure(np.asarray(Image.open(buffer).convert("RGB")))
        except NoFaceError:
            continue
        values.append(locality(before.canon, after.canon, au))
    return float(np.mean(values)) if values else float("nan")


def _read_back(before: np.ndarray, after: np.ndarray, au: str) -> float:
    from fgfem.au_reading.estimator import estimate_aus

    k = AU_CODES.index(au)
    return float(estimate_aus(after)[k] - estimate_aus(before)[k])


def cue_changes(before: np.ndarray, after: np.ndarray) -> dict[str, float]:
    """Each ``CUES`` measure of ``after`` minus that of ``before`` (canonical landmarks, IOD)."""
    return {name: cue(after) - cue(before) for name, cue in CUES.items()}


def locality(before: np.ndarray, after: np.ndarray, au: str) -> float:
    """Mean landmark motion (IOD) outside the AU's region, inner points only.

    The two faces are first superimposed on those outside points (a similarity fit): the
    canonical frame hangs on the eye centres, which an eyelid AU moves, and that would
    otherwise count as every other landmark moving.
    """
    from fgfem.faces.align import umeyama

    outside = [i for i in INNER if i not in AU_REGIONS[au]]
    matrix = umeyama(after[outside], before[outside])
    placed = after[outside] @ matrix[:, :2].T + matrix[:, 2]
    return float(np.linalg.norm(placed - before[outside], axis=1).mean())


def laplacian_variance(rgb: np.ndarray, points: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of the grey image inside the landmarks' convex hull."""
    from PIL import Image, ImageDraw

    from fgfem.faces.paste import convex_hull

    grey = np.asarray(Image.fromarray(np.ascontiguousarray(rgb[..., :3])).convert("L"), dtype=np.float64)
    lap = (-4 * grey[1:-1, 1:-1] + grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:])
    canvas = Image.new("L", (grey.shape[1], grey.shape[0]), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in convex_hull(points).tolist()], fill=1)
    inside = np.asarray(canvas, dtype=bool)[1:-1, 1:-1]
    return float(lap[inside].var()) if inside.any() else float("nan")


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def single_au(au: str, value: float) -> np.ndarray:
    delta = np.zeros(NUM_AUS, dtype=np.float32)
    delta[AU_CODES.index(au)] = value
    return delta


def judge_photos(editor: Any, judge: PhotoJudge, photos: Sequence[tuple[str, np.ndarray]], aus: Sequence[str],
                 intensities: Sequence[float], *, round_trip: float = 1.0,
                 progress: Callable[[int, int], None] | None = None) -> PhotoReport:
    """Edit each photo by each AU at each intensity and measure it (see the module docstring)."""
    report = PhotoReport()
    for done, (name, rgb) in enumerate(photos):
        try:
            source = judge.measure(rgb)
            faces = editor.find_faces(rgb, "largest")
        except NoFaceError:
            report.skipped.append(name)
            continue
        sharp_before = laplacian_variance(rgb, source.pixels)
        for au in aus:
            result = editor.edit_image(rgb, single_au(au, 1.0), intensities=list(intensities), faces=faces)
            for intensity, image in zip(result.intensities, result.images, strict=True):
                try:
                    after = judge.measure(image)
                except NoFaceError:
                    report.skipped.append(f"{name} {au} {intensity:+g}")
                    continue
                identity = (None if source.descriptor is None or after.descriptor is None
                            else float(np.linalg.norm(source.descriptor - after.descriptor)))
                report.edits.append(PhotoEditMeasure(
                    source=name, au=au, intensity=intensity, cues=cue_changes(source.canon, after.canon),
                    locality=locality(source.canon, after.canon, au),
                    sharpness_ratio=laplacian_variance(image, source.pixels) / max(sharp_before, 1e-9),
                    identity=identity, read_back=_read_back(source.pixels, after.pixels, au)))
        if round_trip:
            there = editor.edit_image(rgb, single_au(aus[0], round_trip), faces=faces).images[0]
            back_faces = editor.find_faces(there, "largest")
            back = editor.edit_image(there, single_au(aus[0], -round_trip), faces=back_faces).images[0]
            report.round_trip_psnr.append(psnr_uint8(back, rgb))
        if progress:
            progress(done + 1, len(photos))
    return report


def transfer_share(editor: Any, judge: PhotoJudge, pairs: Sequence[tuple[np.ndarray, np.ndarray]],
                   neutral_pairs: Sequence[tuple[np.ndarray, np.ndarray]] = ()) -> dict[str, float]:
    """``--target`` on same-person neutral -> posed pairs: the share of the real landmark motion reproduced.

    ``neutral_pairs`` (two neutral photos of one person) give the noise floor: no edit can
    land closer to the posed photo than two neutral photos land to each other.
    """

    err_edit, err_none = [], []
    for neutral, posed in pairs:
        try:
            n, p = judge.measure(neutral), judge.measure(posed)
            target = editor.target_expression(posed)
            edited = editor.edit_image(neutral, target).images[0]
            e = judge.measure(edited)
        except NoFaceError:
            continue
        err_edit.append(np.linalg.norm(e.canon[INNER] - p.canon[INNER], axis=1).mean())
        err_none.append(np.linalg.norm(n.canon[INNER] - p.canon[INNER], axis=1).mean())
    out: dict[str, float] = {"pairs": float(len(err_edit))}
    if err_edit:
        out["share"] = float(1 - np.mean(err_edit) / np.mean(err_none))
        out["err_neutral_posed"] = float(np.mean(err_none))
        out["err_edit_posed"] = float(np.mean(err_edit))
    floor = []
    for a, b in neutral_pairs:
        try:
            floor.append(np.linalg.norm(judge.measure(a).canon[INNER] - judge.measure(b).canon[INNER], axis=1).mean())
        except NoFaceError:
            continue
    if floor and err_none:
        out["err_neutral_neutral"] = float(np.mean(floor))
        out["ceiling"] = float(1 - np.mean(floor) / np.mean(err_none))
    return out


def read_pairs(path: Path) -> list[tuple[Path, Path]]:
    """Lines ``neutral.jpg posed.jpg`` (paths relative to the list's folder); # starts a comment."""
    from fgfem.errors import FgfemError

    pairs = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise FgfemError(f"{path}:{number}: expected two photo paths (neutral, then posed), got {line!r}")
        pair = tuple(Path(path).parent / part for part in parts)
        for part, photo in zip(parts, pair, strict=True):
            if not photo.is_file():  # checked before anything is edited: a long run must not fail at its end
                raise FgfemError(f"{path}:{number}: no photo {part!r} (paths are relative to the list's folder, "
                                 f"{Path(path).parent})")
        pairs.append(pair)
    return pairs  # type: ignore[return-value]


def evaluate_photos(editor: Any, photos: Sequence[Path], *, aus: Sequence[str], intensity: float,
                    pairs: Sequence[tuple[Path, Path]] = (), neutral_pairs: Sequence[tuple[Path, Path]] = (),
                    identity: bool = True, jitter: int = 1,
                    progress: Callable[[int, int], None] | None = None) -> PhotoReport:
    """``fgfem eval --photos``: every measure of this module on real photo files (``jitter``: ``PhotoJudge``)."""
    from fgfem.media import load_image

    judge = PhotoJudge(editor.backend, identity=identity, jitter=jitter)
    images = [(str(p), load_image(p).rgb) for p in photos]
    report = judge_photos(editor, judge, images, aus, (intensity,), round_trip=intensity, progress=progress)
    report.jitter = jitter
    report.locality_floor = locality_floor(judge, images)
    if pairs:
        def load(pair: tuple[Path, Path]) -> tuple[np.ndarray, np.ndarray]:
            return load_image(pair[0]).rgb, load_image(pair[1]).rgb

        report.transfer = transfer_share(editor, judge, [load(p) for p in pairs], [load(p) for p in neutral_pairs])
    return report
