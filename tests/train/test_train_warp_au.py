"""The warp's AU loss: the torch estimator equals the numpy one, landmarks follow the augmentation,
the loss reads known motions right, and a real run logs it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import build_tiny_dataset, write_landmark_journal

from fgfem.au_reading.estimator import estimate_aus
from fgfem.aus import AU_CODES, AU_SCALE, NUM_AUS
from fgfem.errors import FgfemError
from fgfem.train import TrainConfig, read_metrics, train
from fgfem.train.au_geometry import MIRROR_68, estimated_aus, mirror_points, raw_aus
from fgfem.train.data import FaceDataset, load_faces
from fgfem.train.losses import moved_landmarks, single_au_probes, warp_au_l1
from fgfem.train.pairs import crop_landmarks

pytestmark = pytest.mark.usefixtures("one_torch_thread")

AU04 = AU_CODES.index("AU04")
AU12 = AU_CODES.index("AU12")


@pytest.fixture(scope="module")
def real_points(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.Tensor]:
    """A tiny real data set with the dlib landmarks of its crops, and those landmarks (N x 68 x 2, 128 px)."""
    data = build_tiny_dataset(samples, tmp_path_factory.mktemp("warp-au") / "data")
    write_landmark_journal(data)
    points = crop_landmarks(data, 128)
    return data, torch.from_numpy(np.stack([points[k] for k in sorted(points)]))


def shift_field(points: torch.Tensor, which: list[int], dx: float, dy: float, size: int = 128) -> torch.Tensor:
    """A flow that moves the image content around landmarks ``which`` of each face by (dx, dy) pixels.

    The output at p shows the input at p + flow(p): content moves by -flow, so the field holds
    (-dx, -dy) in a 7 px square around every chosen landmark's destination and 0 elsewhere.
    """
    flow = torch.zeros(points.shape[0], 2, size, size)
    for face, pts in enumerate(points):
        for index in which:
            x, y = (pts[index] + torch.tensor([dx, dy])).round().long().tolist()
            flow[face, 0, y - 3 : y + 4, x - 3 : x + 4] = -dx * 2 / size
            flow[face, 1, y - 3 : y + 4, x - 3 : x + 4] = -dy * 2 / size
    return flow


def test_torch_estimator_is_the_numpy_one(real_points: tuple[Path, torch.Tensor]) -> None:
    _, points = real_points
    expected = estimate_aus(points.numpy())
    torch.testing.assert_close(estimated_aus(points), torch.from_numpy(expected), atol=1e-4, rtol=0)
    raw = raw_aus(points)
    assert (raw < 0).any(), "some real faces read below the 0 clip; the raw map must keep them"
    # A mirrored face is the same face: the same AUs, once the points are re-ordered.
    torch.testing.assert_close(estimated_aus(mirror_points(points, 128)), estimated_aus(points), atol=1e-4, rtol=0)
    assert sorted(MIRROR_68) == list(range(68)) and all(MIRROR_68[MIRROR_68[i]] == i for i in range(68))


def colour_at(image: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear colour (68 x 3) of a 3 x H x W image at pixel-centre coordinates ``points`` (68 x 2)."""
    size = image.shape[-1]
    grid = ((2 * points + 1) / size - 1)[None, None]
    return torch.nn.functional.grid_sample(image[None], grid, align_corners=False)[0, :, 0].T


def test_dataset_moves_landmarks_with_flip_and_crop(real_points: tuple[Path, torch.Tensor]) -> None:
    data, _ = real_points
    faces = load_faces(data)
    points = crop_landmarks(data, 128)
    plain = FaceDataset(faces.train, 128, hflip=False, pad=0, landmarks=points)
    moved = FaceDataset(faces.train, 128, hflip=True, pad=8, landmarks=points)
    without = FaceDataset(faces.train, 128, hflip=True, pad=8)
    flips = 0
    for seed in range(8):
        a, b, c = plain[(0, seed)], moved[(0, seed)], without[(0, seed)]
        assert "points" not in c and torch.equal(b["x"], c["x"])  # the same draws with or without landmarks
        # Each landmark still sits on the same image content after the flip and the shifted crop.
        inside = ((b["points"] > 8) & (b["points"] < 119)).all(-1)
        mirrored = mirror_points(a["points"], 128)
        same = torch.allclose(colour_at(b["x"], b["points"])[inside], colour_at(a["x"], a["points"])[inside], atol=1e-4)
        flipped_pair = torch.allclose(colour_at(b["x"], b["points"])[inside],
                                      colour_at(a["x"].flip(-1), mirrored)[inside], atol=1e-4)
        assert inside.sum() > 50 and (same or flipped_pair)
        flips += int(not same)
        # The estimator reads the same face wherever it was moved to.
        torch.testing.assert_close(estimated_aus(b["points"][None]), estimated_aus(a["points"][None]),
                                   atol=1e-4, rtol=0)
    assert 0 < flips < 8


def test_moved_landmarks_invert_the_warp(real_points: tuple[Path, torch.Tensor]) -> None:
    _, points = real_points
    flow = shift_field(points, list(range(17, 27)), dx=0.0, dy=3.0)  # brows 3 px down
    moved = moved_landmarks(flow, points)
    torch.testing.assert_close(moved[:, 17:27] - points[:, 17:27], torch.tensor([0.0, 3.0]).expand(len(points), 10, 2),
                               atol=1e-3, rtol=0)
    assert (moved[:, 36:] - points[:, 36:]).abs().max() < 1e-3  # eyes, nose and mouth stay


def test_warp_au_loss_reads_what_the_motion_shows(real_points: tuple[Path, torch.Tensor]) -> None:
    _, points = real_points
    still = torch.zeros(points.shape[0], 2, 128, 128)
    nothing = torch.zeros(points.shape[0], NUM_AUS)
    assert warp_au_l1(still, points, nothing).item() == 0.0
    # Asked for +1 AU04 and not moved: off by 1 on AU04, plus how far below the 0 clip a face reads
    # (it must show 1 after the edit); the other AUs were not asked to move and did not.
    ask = nothing.clone()
    ask[:, AU04] = 1.0 / AU_SCALE
    below = (-raw_aus(points)[:, AU04]).clamp_min(0.0)
    unmoved = 1.0 + below
    assert warp_au_l1(still, points, ask).item() == pytest.approx(unmoved.mean().item(), abs=1e-4)
    # Lowering the inner brows and drawing them together shows AU04 (and less AU01/AU02, which read
    # the same brow height): asked for exactly what it shows, that motion costs nothing.
    brows = shift_field(points, [19, 20, 21], dx=2.0, dy=3.0) + shift_field(points, [22, 23, 24], dx=-2.0, dy=3.0)
    raw_change = raw_aus(moved_landmarks(brows, points)) - raw_aus(points)
    assert (raw_change[:, AU04] > 0.3).all() and raw_change[:, AU12].abs().max() < 1e-5
    shown = (estimated_aus(moved_landmarks(brows, points)) - estimated_aus(points)) / AU_SCALE
    assert shown[:, AU04].max() > 0.02  # some faces start below the clip and stay there
    assert warp_au_l1(brows, points, shown).item() < 1e-4
    assert warp_au_l1(still, points, shown).item() > 0.5 * shown.abs().sum(-1).mean().item() * AU_SCALE
    # The same motion when nothing was asked for is leakage: it costs the mean of what it shows.
    assert warp_au_l1(brows, points, nothing).item() >= 0.5 * shown.abs().mean().item() * AU_SCALE
    # Asked for AU04 alone, the motion also lowers AU01/AU02 (the estimator reads the same brow
    # height): that leakage counts as a mean, so the right motion still beats not moving.
    only = nothing.clone()
    only[:, AU04] = shown[:, AU04]
    moved_faces = shown[:, AU04] > 0.02
    assert warp_au_l1(brows[moved_faces], points[moved_faces], only[moved_faces]).item() < \
        0.1 * warp_au_l1(still[moved_faces], points[moved_faces], only[moved_faces]).item()
    # Faces without landmarks are skipped, and all-unknown costs nothing.
    unknown = torch.full_like(points, float("nan"))
    assert warp_au_l1(still, unknown, ask).item() == 0.0
    mixed = torch.cat([points[:1], unknown[:1]])
    assert warp_au_l1(still[:2], mixed, ask[:2]).item() == pytest.approx(unmoved[0].item(), abs=1e-4)


def test_warp_au_loss_gradient_moves_the_brows_down(real_points: tuple[Path, torch.Tensor]) -> None:
    _, points = real_points
    flow = torch.zeros(points.shape[0], 2, 128, 128, requires_grad=True)
    ask = torch.zeros(points.shape[0], NUM_AUS)
    ask[:, AU04] = 1.0 / AU_SCALE
    warp_au_l1(flow, points, ask).backward()
    step = -flow.grad  # one descent step
    for face, pts in enumerate(points):
        x, y = pts[21].round().long().tolist()  # the subject's right inner brow end
        # Content moves by -flow: the descent wants it down (+y) and towards the nose (+x on this side).
        assert -step[face, 1, y, x] > 0 and -step[face, 0, y, x] > 0


def test_probes_move_one_au_each_reproducibly() -> None:
    probes = single_au_probes(400, torch.Generator().manual_seed(3))
    again = single_au_probes(400, torch.Generator().manual_seed(3))
    assert torch.equal(probes, again)
    moved = (probes != 0).sum(-1)
    assert (moved == 1).all()
    sizes = probes.abs().sum(-1) * AU_SCALE
    assert sizes.min() >= 0.25 - 1e-6 and sizes.max() <= 2.0 + 1e-6
    assert (probes > 0).any(0).sum() >= 15 and (probes < 0).any(0).sum() >= 15  # every AU, both ways


def test_warp_au_loss_trains_and_is_logged(real_points: tuple[Path, torch.Tensor], tmp_path: Path) -> None:
    data, _ = real_points
    base = dict(preset="lite", conv_dim=8, critic_dim=8, image_size=64, batch=4, max_steps=4, critic_steps=1,
                save_every=4, preview_every=4, warp=True, lambda_warp_au=10.0)
    train(data, tmp_path / "run", TrainConfig(**base), show_progress=False, export=False)
    values = [line["g_warp_au"] for line in read_metrics(tmp_path / "run")]
    # A fresh warp does not move, so the first value is how far the asked-for AUs are from the faces' own.
    assert len(values) == 4 and values[0] > 0.01 and all(np.isfinite(values))
    with pytest.raises(FgfemError, match="lambda_warp_au needs a warp"):
        TrainConfig(**{**base, "warp": False})


def test_warp_au_loss_needs_prep_landmarks(samples: Path, tmp_path: Path) -> None:
    data = build_tiny_dataset(samples, tmp_path / "data")
    config = TrainConfig(preset="lite", conv_dim=8, critic_dim=8, image_size=64, batch=4, max_steps=1,
                         warp=True, lambda_warp_au=10.0)
    with pytest.raises(FgfemError, match="landmarks that fgfem prep keeps"):
        train(data, tmp_path / "run", config, show_progress=False, export=False)
