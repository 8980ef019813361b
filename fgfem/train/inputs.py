"""What a run trains on: the faces, their dataset, and only the extra data its terms need.

The terms (``fgfem.train.terms``) declare their needs; this is the one place that reads
landmarks or builds pairs for them, so a run without such terms never touches the prep
journal, and a term that needs data the folder lacks fails before the first step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fgfem.errors import FgfemError
from fgfem.train.config import SETTINGS, TrainConfig
from fgfem.train.data import FaceDataset, FaceSet, batches_per_epoch, load_faces
from fgfem.train.pairs import PairSampler, PairSource, crop_landmarks, find_pairs
from fgfem.train.rig_front import RigFront
from fgfem.train.terms import FACE_LANDMARKS, LANDMARKS, PAIR_LANDMARKS, PAIRS, ExtraTerm, needs_of


@dataclass(frozen=True)
class RunInputs:
    faces: FaceSet
    dataset: FaceDataset
    pairs: PairSource | None  # when a term needs pairs
    per_epoch: int  # steps in one epoch
    total_steps: int  # where the run stops: the epochs, or --max-steps if that comes first


def run_inputs(data_dir: Path, cfg: TrainConfig, terms: Sequence[ExtraTerm], world_size: int) -> RunInputs:
    """Read ``data_dir`` and build what ``cfg`` and ``terms`` train on (one error line for what is missing)."""
    faces = load_faces(data_dir, holdout=cfg.data.holdout, limit=cfg.data.limit)
    needs = needs_of(terms)
    wanting = [SETTINGS[t.setting].label for t in terms if t.needs & LANDMARKS]
    if cfg.nets.rig is not None:  # the rig moves each face from its own landmarks
        needs, wanting = needs | {FACE_LANDMARKS}, [*wanting, SETTINGS["rig"].label]
    landmarks = _landmarks(data_dir, cfg.data.image_size, wanting)
    front = None if cfg.nets.rig is None else RigFront.from_weights(cfg.nets.rig, cfg.data.image_size)
    dataset = FaceDataset.from_config(faces.train, cfg.data,
                                      landmarks=landmarks if FACE_LANDMARKS in needs else None, front=front)
    pairs = None
    if PAIRS in needs:
        if cfg.loss.pair_pattern is None:
            raise FgfemError(f"{_names([t for t in terms if PAIRS in t.needs])} need --pair-pattern")
        sampler = PairSampler(faces.train, find_pairs(faces.train, cfg.loss.pair_pattern), cfg.data.image_size,
                              hflip=cfg.data.hflip, landmarks=landmarks if PAIR_LANDMARKS in needs else None)
        pairs = PairSource(sampler, cfg.loss.pair_batch)
    per_epoch = batches_per_epoch(len(dataset), cfg.data.batch, world_size)
    total = cfg.optim.epochs * per_epoch
    return RunInputs(faces=faces, dataset=dataset, pairs=pairs, per_epoch=per_epoch,
                     total_steps=total if cfg.optim.max_steps is None else min(cfg.optim.max_steps, total))


def _landmarks(data_dir: Path, image_size: int, wanting: Sequence[str]) -> dict[str, np.ndarray] | None:
    """The crops' landmarks where the settings labelled ``wanting`` want them: kept by ``fgfem prep`` in its journal."""
    if not wanting:
        return None
    found = crop_landmarks(data_dir, image_size)
    if not found:
        verb = "needs" if len(wanting) == 1 else "need"
        raise FgfemError(f"{' and '.join(wanting)} {verb} the landmarks that fgfem prep keeps; {data_dir} has none "
                         "(prepare it with fgfem prep)")
    return found


def _names(terms: Sequence[ExtraTerm]) -> str:
    return " and ".join(SETTINGS[term.setting].label for term in terms)
