"""Supervised expression pairs: the same person photographed with two expressions.

The paper learns edits only through the critic's AU head. On a CPU budget that signal is
too weak: a generator that starts as the identity (``lite``'s residual output) lowers its
AU-condition loss with changes too small to see, which fool the AU head rather than move
the face (measured: +0.0 AU12 after 400 steps). Posed-expression databases photograph each
performer neutral and with every emotion from the same camera, so their aligned crops are
near-registered pairs: ``G(neutral, AUs(smile) - AUs(neutral))`` can be compared with the
real smile pixel by pixel (L1). That loss shows the generator *what* a change of AUs looks
like; the paper's losses still decide everything else. Off unless ``lambda_pair`` > 0.

Which faces are one person in one pose is read from their keys with a regular expression
whose named groups must agree, e.g. for the Taiwanese database (file ``PPTVESS``: performer,
type, view, expression, serial) as prepared by ``fgfem prep``:
``taiwanese_(?P<person>\\d\\d)\\d(?P<view>\\d)[a-g]``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fgfem.aus import AU_SCALE
from fgfem.errors import FgfemError
from fgfem.train.au_geometry import mirror_points
from fgfem.train.data import FaceRecord, load_image

# Pairs whose AUs hardly differ teach nothing about edits (largest |difference| on 0-5).
MIN_AU_CHANGE = 0.5


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """The user's grouping expression, checked: it must compile and have a named group."""
    try:
        compiled = re.compile(pattern)
    except re.error as problem:
        raise FgfemError(f"--pair-pattern is not a valid regular expression: {problem}") from None
    if not compiled.groupindex:
        raise FgfemError("--pair-pattern needs at least one named group, e.g. (?P<person>\\d\\d), "
                         "whose values must agree for two faces to be a pair")
    return compiled


def find_pairs(records: Sequence[FaceRecord], pattern: str) -> list[tuple[int, int]]:
    """Ordered pairs ``(source, target)`` of record indices: same group, AUs that differ."""
    compiled = compile_pattern(pattern)
    groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        match = compiled.search(record.key)
        if match is not None:
            groups[tuple(match.group(name) for name in sorted(compiled.groupindex))].append(index)
    pairs = []
    for members in groups.values():
        for a in members:
            for b in members:
                if a != b and np.abs(records[a].aus - records[b].aus).max() >= MIN_AU_CHANGE:
                    pairs.append((a, b))
    return pairs


def match_colour(image: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``image`` with each channel's mean and spread moved to ``reference``'s.

    The two photos of a pair may come from different sessions (the Taiwanese neutral and
    expression shots differ in light and white balance); without this the pair loss would
    teach that a smile also re-lights the face.
    """
    mean_i, std_i = image.mean((1, 2), keepdim=True), image.std((1, 2), keepdim=True)
    mean_r, std_r = reference.mean((1, 2), keepdim=True), reference.std((1, 2), keepdim=True)
    return ((image - mean_i) * (std_r / std_i.clamp_min(1e-3)) + mean_r).clamp(-1.0, 1.0)


def crop_landmarks(root: Path, image_size: int) -> dict[str, np.ndarray]:
    """The 68 landmarks of every crop of a ``fgfem prep`` folder (aus.csv path -> 68 x 2, in pixels at
    ``image_size``), read from the prep journal where prep keeps them. Empty for other layouts."""
    from fgfem.prep.dataset import read_journal

    manifest = root / "manifest.json"
    if not manifest.is_file():
        return {}
    crop_size = int(json.loads(manifest.read_text(encoding="utf-8")).get("size", image_size))
    points = {}
    for unit in read_journal(root).values():
        for row in unit.rows:
            if "landmarks" in row:
                points[str(row["path"])] = np.asarray(row["landmarks"], np.float32) * (image_size / crop_size)
    return points


@dataclass(frozen=True)
class PairBatch:
    source: torch.Tensor  # B x 3 x H x W
    target: torch.Tensor  # B x 3 x H x W, the same person with another expression
    rel: torch.Tensor  # B x 17, (AUs(target) - AUs(source)) / AU_SCALE
    # B x 68 x 2 landmark pixels of each face (NaN where unknown), when the sampler was given landmarks.
    source_points: torch.Tensor | None = None
    target_points: torch.Tensor | None = None


class PairSampler:
    """Draws pair batches from a seeded generator, so a resumed run draws the same ones."""

    def __init__(self, records: Sequence[FaceRecord], pairs: Sequence[tuple[int, int]], image_size: int,
                 *, hflip: bool = True, landmarks: Mapping[str, np.ndarray] | None = None) -> None:
        if not pairs:
            raise FgfemError("--lambda-pair is set but --pair-pattern matched no two faces of one group with "
                             "different AUs; check the pattern against the keys in aus.csv")
        self.records = tuple(records)
        self.pairs = tuple(pairs)
        self.image_size = image_size
        self.hflip = hflip
        self.landmarks = landmarks

    def __len__(self) -> int:
        return len(self.pairs)

    def sample(self, count: int, generator: torch.Generator) -> PairBatch:
        picks = torch.randint(0, len(self.pairs), (count,), generator=generator).tolist()
        flips = (torch.rand(count, generator=generator) < 0.5).tolist()
        sources, targets, rels, points = [], [], [], []
        for pick, flip in zip(picks, flips, strict=True):
            a, b = self.pairs[pick]
            flip = self.hflip and flip  # the same flip for both: they must stay registered
            source = load_image(self.records[a].path, self.image_size)
            target = match_colour(load_image(self.records[b].path, self.image_size), source)
            if flip:
                source, target = source.flip(-1), target.flip(-1)
            sources.append(source)
            targets.append(target)
            rels.append(torch.from_numpy((self.records[b].aus - self.records[a].aus) / AU_SCALE).float())
            if self.landmarks is not None:
                points.append([self._points(self.records[i].key, flip) for i in (a, b)])
        batch = PairBatch(torch.stack(sources), torch.stack(targets), torch.stack(rels))
        if not points:
            return batch
        return dataclasses.replace(batch, source_points=torch.stack([p[0] for p in points]),
                                   target_points=torch.stack([p[1] for p in points]))

    def _points(self, key: str, flip: bool) -> torch.Tensor:
        assert self.landmarks is not None
        found = self.landmarks.get(key)
        if found is None:
            return torch.full((68, 2), float("nan"))
        points = torch.from_numpy(found).float()
        return mirror_points(points, self.image_size) if flip else points


@dataclass(frozen=True)
class PairEdit:
    """One step's pair batch and the generator's edit of its sources (with the warp's field, if any)."""

    pair: PairBatch
    edited: torch.Tensor
    flow: torch.Tensor | None


@dataclass(frozen=True)
class PairSource:
    """The pairs a run's terms read: ``count`` drawn per generator step from the step's random source."""

    sampler: PairSampler
    count: int

    def edit(self, generator: Callable[..., Any], draws: torch.Generator, device: torch.device) -> PairEdit:
        """Draw a pair batch and edit each source by its pair's AU difference."""
        pair = self.sampler.sample(self.count, draws)
        edited, flow = generator(pair.source.to(device), pair.rel.to(device), return_flow=True)
        return PairEdit(pair=pair, edited=edited, flow=flow)
