"""The AU rig in front of the generator while it trains, as ``fgfem edit`` puts it there.

At inference an edit is geometry first: the rig moves the face's landmarks, a dense field
carries that to every pixel, and the generator (its own warp off) sees the rig-warped crop
and adds only appearance (``fgfem.editor``). A generator trained on unwarped faces has
learnt to make the geometry itself, and behind the rig it is asked for something it never
saw. ``--rig FILE`` trains it as it is used: each face is warped by the rig's field for its
AU change before the generator sees it, and the cycle warps the edit back by the opposite
change before asking the generator to undo its colour change. Both warps are made with the
item in the data loader (``rigged_sample``), where ``--workers`` can spread them.

The change is the batch's relative AUs (target minus source, both real readings on the
0-5 scale), and the landmarks are the crop's own, moved with its augmentation
(``FaceDataset``'s ``points``); faces without landmarks are not warped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fgfem.aus import AU_SCALE
from fgfem.errors import FgfemError
from fgfem.rig.field import landmark_field, sampling_grid
from fgfem.rig.model import AURig, load_rig


@dataclass(frozen=True)
class RigFront:
    """Warps a batch of training crops by the rig's field for each row's AU change."""

    rig: AURig
    size: int

    @classmethod
    def from_weights(cls, path: str | Path, size: int) -> RigFront:
        """The rig a weights file holds; one error line when the file has none."""
        rig = load_rig(path)
        if rig is None:
            raise FgfemError(f"--rig {path}: the file holds no AU rig (fgfem weights show says what it holds)")
        return cls(rig=rig, size=size)

    def move(self, points: torch.Tensor, rel: torch.Tensor) -> RigMove:
        """The rig's move of each row: ``points`` (B x 68 x 2 crop px) by ``rel`` (B x 17, networks' 0-1 scale).

        Rows without landmarks (NaN) or without a change do not move. The geometry is the rig's,
        fixed, as at inference: nothing here carries a gradient.
        """
        marks = points.detach().cpu().double().numpy()
        change = rel.detach().cpu().double().numpy() * AU_SCALE
        identity = sampling_identity(self.size)
        grids, moved, warped = [], marks.copy(), []
        for row in range(len(marks)):
            field = None
            if np.isfinite(marks[row]).all() and np.any(change[row]):
                motion = self.rig.image_motion(marks[row][None], change[row][None])[0]
                field = landmark_field(marks[row], motion, self.size)
                if field is not None:
                    moved[row] = marks[row] + motion * field.scale
            grids.append(identity if field is None else sampling_grid(field, self.size))
            warped.append(field is not None)
        return RigMove(grid=torch.cat(grids), moved=torch.from_numpy(moved).to(points.dtype),
                       warped=torch.tensor(warped))


@dataclass(frozen=True)
class RigMove:
    """One batch's rig warp: where each output pixel reads its input, and where the landmarks went."""

    grid: torch.Tensor  # B x s x s x 2, grid_sample's [-1, 1] (align_corners=False)
    moved: torch.Tensor  # B x 68 x 2 crop px
    warped: torch.Tensor  # B booleans: rows that move at all (the others are returned as they are)

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` resampled (bicubic, as ``warp_crops``); differentiable in ``images``, on their device."""
        return resample(images, self.grid, self.warped)


def resample(images: torch.Tensor, grid: torch.Tensor, warped: torch.Tensor) -> torch.Tensor:
    """``images`` (B x 3 x s x s) read at ``grid`` (B x s x s x 2) where ``warped`` (B), as they are elsewhere."""
    moved = F.grid_sample(images, grid.to(images.device, images.dtype), mode="bicubic", padding_mode="border",
                          align_corners=False).clamp(-1.0, 1.0)
    return torch.where(warped.to(images.device)[:, None, None, None], moved, images)


def rigged_sample(front: RigFront, image: torch.Tensor, points: torch.Tensor,
                  rel: torch.Tensor, *, way_back: bool = True) -> dict[str, torch.Tensor]:
    """What one training item adds behind the rig: the face moved for ``rel`` (``x_in``) and the way back
    for the cycle (``back_grid``, ``back_warped``: the rig's move for -``rel`` from where the landmarks went),
    this only with ``way_back`` (the items of a generator step: 1 in ``critic_steps``).

    Made in the data loader's workers, not in the step: a field costs ~5 ms for one small AU
    change but ~80 ms for another face's whole expression with parted lips (the tear and its
    fold-free scale), ~1.3 s for a batch of 16 on one core.
    """
    there = front.move(points[None], rel[None])
    sample = {"x_in": there.apply(image[None])[0]}
    if way_back:  # only a generator step's cycle uses it (``SeededBatches(generator_every=)``)
        back = front.move(there.moved, -rel[None])
        sample.update(back_grid=back.grid[0], back_warped=back.warped[0])
    return sample


def sampling_identity(size: int) -> torch.Tensor:
    """1 x s x s x 2: the grid that reads every pixel where it is."""
    return F.affine_grid(torch.eye(2, 3)[None], [1, 2, size, size], align_corners=False)
