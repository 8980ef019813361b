"""Training faces and the relative-AU sampling of the paper (docs/design.md, "Training").

Three folder layouts are read, detected from the files present:

- ``fgfem``: ``manifest.json`` + ``aus.csv`` (``path,source,score,AU01..AU45``) + crops, as
  written by ``fgfem prep``;
- ``ganimation``: ``imgs/`` + ``aus_openface.pkl`` (+ ``train_ids.csv``/``test_ids.csv``);
- ``expression-manipulator``: ``aus_dataset.pkl`` (a list of ``{path|file_path, aus}``).

Every random choice of one sample (augmentation, the other face whose AUs become the
target, the jitters) comes from a ``torch.Generator`` seeded with (run seed, epoch, rank,
position in the epoch). A batch is therefore a pure function of where training stands,
which is what makes ``--resume`` exact and worker processes harmless.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from fgfem.aus import AU_SCALE, NUM_AUS
from fgfem.errors import FgfemError
from fgfem.train.au_geometry import mirror_points
from fgfem.train.rig_front import RigFront, rigged_sample

if TYPE_CHECKING:
    from fgfem.train.config import DataConfig

LAYOUTS = ("fgfem", "ganimation", "expression-manipulator")


@dataclass(frozen=True)
class FaceRecord:
    """One training face: its image file, the key it is listed under, its AUs on the 0-5 scale."""

    key: str
    path: Path
    aus: np.ndarray


@dataclass(frozen=True)
class FaceSet:
    """The faces of a data folder, split into those trained on and those held out (previews)."""

    root: Path
    layout: str
    train: tuple[FaceRecord, ...]
    held_out: tuple[FaceRecord, ...]

    def summary(self) -> dict[str, Any]:
        """What a weights file should say about the data it was trained on."""
        aus = np.stack([r.aus for r in self.train]) if self.train else np.zeros((0, NUM_AUS))
        return {
            "data_dir": self.root.name,
            "layout": self.layout,
            "train_faces": len(self.train),
            "held_out_faces": len(self.held_out),
            "au_mean": [round(float(v), 4) for v in aus.mean(axis=0)] if len(aus) else [],
        }


# --- reading the folder layouts ---------------------------------------------------------------------------


def detect_layout(root: Path) -> str:
    """Which of ``LAYOUTS`` the folder ``root`` is, or a one-line error saying what was expected."""
    root = Path(root)
    if not root.is_dir():
        raise FgfemError(f"training data folder {root} does not exist")
    if (root / "aus.csv").is_file():
        return "fgfem"
    if (root / "aus_openface.pkl").is_file():
        return "ganimation"
    if (root / "aus_dataset.pkl").is_file():
        return "expression-manipulator"
    raise FgfemError(
        f"{root} is not a training set: expected aus.csv + manifest.json (from `fgfem prep`), "
        "GANimation's aus_openface.pkl + imgs/, or Expression-manipulator's aus_dataset.pkl"
    )


def load_faces(root: str | Path, *, holdout: str | Path | None = None, limit: int | None = None) -> FaceSet:
    """Read the faces of ``root`` (any layout); ``holdout`` lists label keys to keep out of training."""
    root = Path(root)
    layout = detect_layout(root)
    if layout == "fgfem":
        records, held_keys = _read_fgfem(root), set()
    elif layout == "ganimation":
        records, held_keys = _read_ganimation(root)
    else:
        records, held_keys = _read_expression_manipulator(root), set()
    if holdout is not None:
        held_keys |= _read_holdout(Path(holdout))
    train = tuple(r for r in records if r.key not in held_keys)
    held = tuple(r for r in records if r.key in held_keys)
    if limit is not None:
        train = train[:limit]
    if not train:
        raise FgfemError(f"{root} holds no training faces (after the holdout and --limit)")
    return FaceSet(root=root, layout=layout, train=train, held_out=held)


def _checked_aus(values: Any, where: str) -> np.ndarray:
    aus = np.asarray(values, dtype=np.float32).reshape(-1)
    if aus.shape != (NUM_AUS,):
        raise FgfemError(
            f"{where} has {aus.size} AU values; fgfem trains on the {NUM_AUS} OpenFace AUs (AU01..AU45)"
        )
    if not np.all(np.isfinite(aus)):
        raise FgfemError(f"{where} has AU values that are not finite numbers")
    return aus


def _read_fgfem(root: Path) -> list[FaceRecord]:
    from fgfem.prep.labels import read_aus_csv

    manifest = root / "manifest.json"
    if manifest.is_file():
        try:
            json.loads(manifest.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as problem:
            raise FgfemError(f"{manifest} is not valid JSON ({problem}); re-run `fgfem prep`") from None
    rows = read_aus_csv(root / "aus.csv")
    return [FaceRecord(key=row.path, path=root / row.path, aus=_checked_aus(row.aus, f"aus.csv row {row.path}"))
            for row in rows]


def _read_ganimation(root: Path) -> tuple[list[FaceRecord], set[str]]:
    from fgfem.prep.labels import read_ganimation_pkl

    labels = read_ganimation_pkl(root / "aus_openface.pkl")
    images = root / "imgs"
    train_ids = _read_id_list(root / "train_ids.csv")
    test_ids = _read_id_list(root / "test_ids.csv")
    names = sorted(train_ids | test_ids) if train_ids or test_ids else sorted(p.name for p in images.iterdir())
    records = []
    for name in names:
        stem = Path(name).stem
        if stem not in labels:
            raise FgfemError(f"{name} is listed in {root} but has no AUs in aus_openface.pkl")
        records.append(FaceRecord(key=name, path=images / name, aus=_checked_aus(labels[stem], f"AUs of {stem}")))
    held = test_ids - train_ids if train_ids else set()
    return records, held


def _read_expression_manipulator(root: Path) -> list[FaceRecord]:
    from fgfem.prep.labels import read_expression_manipulator_pkl

    entries = read_expression_manipulator_pkl(root / "aus_dataset.pkl")
    records = []
    for key, aus in entries.items():
        path = root / key if (root / key).exists() else root / "imgs" / key
        records.append(FaceRecord(key=key, path=path, aus=_checked_aus(aus, f"aus_dataset.pkl entry {key}")))
    return records


def _read_id_list(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    return {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def _read_holdout(path: Path) -> set[str]:
    if not path.is_file():
        raise FgfemError(f"--holdout {path}: no such file (expected a text file of aus.csv paths, one a line)")
    return _read_id_list(path)


def load_image(path: Path, size: int) -> torch.Tensor:
    """A face crop as a 3 x size x size float tensor in [-1, 1] (resized if it was saved at another size)."""
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except FileNotFoundError:
        raise FgfemError(f"training image {path} is missing") from None
    except OSError as problem:
        raise FgfemError(f"cannot read training image {path}: {problem}") from None
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
    array = np.asarray(rgb, dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1).div(127.5).sub(1.0).contiguous()


# --- the relative-AU sample ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Augmentation:
    """One random draw of the reference's augmentation: a horizontal flip, then black padding
    by ``pad`` and a crop back to size at (``top``, ``left``) of the padded image."""

    flip: bool
    pad: int
    top: int
    left: int

    def image(self, image: torch.Tensor) -> torch.Tensor:
        if self.flip:
            image = image.flip(-1)
        if self.pad > 0:
            size = image.shape[-1]
            padded = torch.nn.functional.pad(image, (self.pad,) * 4, value=-1.0)
            image = padded[:, self.top : self.top + size, self.left : self.left + size].contiguous()
        return image

    def points(self, points: torch.Tensor, size: int) -> torch.Tensor:
        """68 x 2 pixel landmarks moved with the image (mirrored and re-ordered by a flip)."""
        if self.flip:
            points = mirror_points(points, size)
        shift = torch.tensor([self.pad - self.left, self.pad - self.top], dtype=points.dtype)
        return points + shift


def draw_augmentation(generator: torch.Generator, *, hflip: bool, pad: int) -> Augmentation:
    """The flip and crop offsets, drawn in a fixed order so that seeded items stay reproducible."""
    flip = hflip and torch.rand((), generator=generator).item() < 0.5
    top = left = 0
    if pad > 0:
        top, left = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=generator))
    return Augmentation(flip=bool(flip), pad=pad, top=top, left=left)


def augment(image: torch.Tensor, generator: torch.Generator, *, hflip: bool, pad: int) -> torch.Tensor:
    """Random horizontal flip, then black padding by ``pad`` and a random crop back to size (the reference's)."""
    return draw_augmentation(generator, hflip=hflip, pad=pad).image(image)


def uniform(shape: Sequence[int], bound: float, generator: torch.Generator) -> torch.Tensor:
    """U(-bound, bound) samples from ``generator``."""
    return (torch.rand(tuple(shape), generator=generator) * 2.0 - 1.0) * bound


class FaceDataset(Dataset):
    """Items are ``(index, seed)`` pairs; each returns the face, its AUs, a target and the relative vector.

    ``a_x`` = own AUs / 5 + U(-source_jitter, source_jitter); ``a_t`` = AUs / 5 of another
    random training face + U(-target_jitter, target_jitter); ``rel`` = a_t - a_x. A share
    ``single_au_targets`` of the targets are instead ``a_x`` with one uniformly chosen AU moved
    by U(-single_au_change, single_au_change) / 5 (kept in the AU range). Given
    ``landmarks`` (aus.csv key -> 68 x 2 pixels at ``image_size``), items also carry
    ``points``: the face's landmarks after the same augmentation (NaN where unknown); given a
    ``front`` too (``--rig``), the face moved by the rig and the cycle's way back
    (``fgfem.train.rig_front.rigged_sample``).
    """

    def __init__(self, records: Sequence[FaceRecord], image_size: int, *, target_jitter: float = 0.1,
                 source_jitter: float = 0.02, hflip: bool = True, pad: int = 0,
                 landmarks: Mapping[str, np.ndarray] | None = None, single_au_targets: float = 0.0,
                 single_au_change: float = 2.0, front: RigFront | None = None) -> None:
        self.records = tuple(records)
        self.front = front
        self.image_size = image_size
        self.target_jitter = target_jitter
        self.source_jitter = source_jitter
        self.hflip = hflip
        self.pad = pad
        self.landmarks = landmarks
        self.single_au_targets = single_au_targets
        self.single_au_change = single_au_change / AU_SCALE
        self.aus = torch.from_numpy(np.stack([r.aus for r in self.records])).float() / AU_SCALE

    @classmethod
    def from_config(cls, records: Sequence[FaceRecord], data: DataConfig, *,
                    landmarks: Mapping[str, np.ndarray] | None = None, front: RigFront | None = None) -> FaceDataset:
        """The dataset a run's ``data`` settings describe (``landmarks`` when a term or the rig needs them)."""
        return cls(records, data.image_size, target_jitter=data.target_jitter, source_jitter=data.source_jitter,
                   hflip=data.hflip, pad=data.pad, landmarks=landmarks, single_au_targets=data.single_au_targets,
                   single_au_change=data.single_au_change, front=front)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item: tuple[int, int] | tuple[int, int, bool]) -> dict[str, torch.Tensor]:
        """``item``: (index, seed), or (index, seed, feeds_generator) from ``SeededBatches(generator_every=)``;
        behind the rig, only items of a generator step make the cycle's way back."""
        index, seed = item[0], item[1]
        way_back = bool(item[2]) if len(item) > 2 else True
        generator = torch.Generator().manual_seed(int(seed))
        moves = draw_augmentation(generator, hflip=self.hflip, pad=self.pad)
        image = moves.image(load_image(self.records[index].path, self.image_size))
        a_x = self.aus[index] + uniform((NUM_AUS,), self.source_jitter, generator)
        other = self._other_index(index, generator)
        a_t = self.aus[other] + uniform((NUM_AUS,), self.target_jitter, generator)
        # Drawn only when asked for, so that runs without it keep their random stream (and resume bit for bit).
        if self.single_au_targets > 0 and float(torch.rand((), generator=generator)) < self.single_au_targets:
            a_t = self._single_au_target(a_x, generator)
        sample = {"x": image, "a_x": a_x, "a_t": a_t, "rel": a_t - a_x}
        if self.landmarks is not None:
            found = self.landmarks.get(self.records[index].key)
            points = torch.full((68, 2), float("nan")) if found is None else torch.from_numpy(found).float()
            sample["points"] = moves.points(points, self.image_size)
            if self.front is not None:
                sample.update(rigged_sample(self.front, image, sample["points"], sample["rel"], way_back=way_back))
        return sample

    def _single_au_target(self, a_x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``a_x`` with one random AU moved by U(-single_au_change, single_au_change), clamped to [0, 1]."""
        which = int(torch.randint(0, NUM_AUS, (), generator=generator))
        change = float(uniform((), self.single_au_change, generator))
        a_t = a_x.clone()
        a_t[which] = (a_x[which] + change).clamp(0.0, 1.0)
        return a_t

    def _other_index(self, index: int, generator: torch.Generator) -> int:
        """A uniformly random training face other than ``index`` (any face if there is only one)."""
        count = len(self.records)
        if count == 1:
            return index
        pick = int(torch.randint(0, count - 1, (), generator=generator))
        return pick + (pick >= index)


def item_seed(seed: int, epoch: int, rank: int, position: int) -> int:
    """A well-mixed 63-bit seed for one sample of one epoch on one rank."""
    state = np.random.SeedSequence([seed, epoch, rank, position]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class SeededBatches(Sampler[list[tuple]]):
    """One epoch of batches of ``(index, seed)`` for one rank, starting at batch ``start``.

    The order is ``DistributedSampler``'s (shuffled by seed + epoch, one shard per rank,
    equal shard sizes), so single- and multi-process runs share one code path. With
    ``generator_every`` (the run's ``critic_steps``) items are ``(index, seed, feeds_generator)``:
    whether the batch's step (epoch x batches per epoch + batch) updates the generator. Behind
    the rig only those items need the cycle's way back, the costlier half of an item's fields.
    """

    def __init__(self, size: int, batch: int, *, seed: int, epoch: int, rank: int = 0, world: int = 1,
                 start: int = 0, generator_every: int = 0) -> None:
        self.batch = batch
        self.generator_every = generator_every
        self.seed, self.epoch, self.rank, self.start = seed, epoch, rank, start
        sampler = DistributedSampler(range(size), num_replicas=world, rank=rank, shuffle=True, seed=seed,
                                     drop_last=True)
        sampler.set_epoch(epoch)
        self.order = list(sampler)

    def __len__(self) -> int:
        return max(0, len(self.order) // self.batch - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        per_epoch = len(self.order) // self.batch
        for b in range(self.start, per_epoch):
            positions = range(b * self.batch, (b + 1) * self.batch)
            items = [(self.order[p], item_seed(self.seed, self.epoch, self.rank, p)) for p in positions]
            if self.generator_every:
                feeds = (self.epoch * per_epoch + b) % self.generator_every == 0
                items = [(index, seed, feeds) for index, seed in items]
            yield items


def batches_per_epoch(size: int, batch: int, world: int = 1) -> int:
    """Iterations in one epoch; a data set too small for one batch per rank is a user error."""
    per_rank = size // world
    if per_rank < batch:
        raise FgfemError(
            f"{size} training faces are too few for --batch {batch}" + (f" on {world} processes" if world > 1 else "")
            + f"; use --batch {max(1, per_rank)} or more faces"
        )
    return per_rank // batch


def epoch_loader(dataset: FaceDataset, batch: int, *, seed: int, epoch: int, rank: int = 0, world: int = 1,
                 start: int = 0, num_workers: int = 0, pin_memory: bool = False,
                 generator_every: int = 0) -> DataLoader:
    """The batches of one epoch from batch ``start`` on (``start`` > 0 when resuming mid-epoch);
    ``generator_every``: see ``SeededBatches``."""
    sampler = SeededBatches(len(dataset), batch, seed=seed, epoch=epoch, rank=rank, world=world, start=start,
                            generator_every=generator_every)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, pin_memory=pin_memory)


def preview_records(faces: FaceSet, count: int = 4) -> tuple[FaceRecord, ...]:
    """Fixed faces for the preview grids: held-out ones where there are any, else the first training faces."""
    return tuple((faces.held_out or faces.train)[:count])


def preview_faces(faces: FaceSet, size: int, count: int = 4) -> torch.Tensor:
    """The preview faces' crops (``preview_records``)."""
    return torch.stack([load_image(r.path, size) for r in preview_records(faces, count)])
