"""Training behind the AU rig (``--rig``): the crops move as an edit moves them, the cycle's way back
carries the gradient, a run trains and exports with its rig, and what cannot work is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import build_tiny_dataset, write_landmark_journal

from fgfem.aus import AU_CODES, AU_SCALE, NUM_AUS
from fgfem.errors import FgfemError
from fgfem.rig.model import load_rig
from fgfem.train import TrainConfig, read_metrics, train
from fgfem.train.pairs import crop_landmarks
from fgfem.train.rig_front import RigFront

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def real_faces(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.Tensor, torch.Tensor]:
    """A tiny real data set with dlib's landmarks of its crops, its crops ([-1, 1]) and those landmarks."""
    from PIL import Image

    data = build_tiny_dataset(samples, tmp_path_factory.mktemp("rig-front") / "data", vipermu=4)
    write_landmark_journal(data)
    points = crop_landmarks(data, 128)
    keys = sorted(points)
    crops = [np.asarray(Image.open(data / key).convert("RGB"), dtype=np.float32) / 127.5 - 1.0 for key in keys]
    return data, torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2), torch.from_numpy(np.stack([points[k]
                                                                                                  for k in keys]))


def one_au(code: str, value: float, rows: int) -> torch.Tensor:
    rel = torch.zeros(rows, NUM_AUS)
    rel[:, AU_CODES.index(code)] = value / AU_SCALE  # the networks' 0-1 scale
    return rel


def colour_at(images: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """B x 68 x 3 bilinear colours of B x 3 x s x s images at pixel-centre ``points`` (B x 68 x 2)."""
    size = images.shape[-1]
    grid = ((2 * points + 1) / size - 1)[:, None]
    return torch.nn.functional.grid_sample(images, grid.float(), align_corners=False)[:, :, 0].permute(0, 2, 1)


def test_the_crop_moves_with_its_landmarks(shipped: Path, real_faces) -> None:  # noqa: ANN001
    """AU12 +1: the lip corners' landmarks go up and out, and the corners' colour goes with them."""
    _, crops, points = real_faces
    front = RigFront.from_weights(shipped, 128)
    move = front.move(points, one_au("AU12", 1.0, len(points)))
    assert move.warped.all()
    corners = [48, 54]
    shift = (move.moved - points)[:, corners]
    assert (shift[..., 1] < -0.5).all(), shift  # up by more than half a pixel on every face
    assert (shift[:, 0, 0] < 0).all() and (shift[:, 1, 0] > 0).all()  # and out
    warped = move.apply(crops)
    followed = (colour_at(warped, move.moved) - colour_at(crops, points))[:, corners].abs().mean()
    stayed = (colour_at(warped, points) - colour_at(crops, points))[:, corners].abs().mean()
    assert followed < 0.5 * stayed, (followed, stayed)
    # Far from the face nothing moves: the crop's corners are the crop's.
    torch.testing.assert_close(warped[..., :4, :4], crops[..., :4, :4], atol=1e-4, rtol=0)


def test_no_change_or_no_landmarks_leaves_the_crop_exactly(shipped: Path, real_faces) -> None:  # noqa: ANN001
    _, crops, points = real_faces
    front = RigFront.from_weights(shipped, 128)
    still = front.move(points, torch.zeros(len(points), NUM_AUS))
    assert not still.warped.any() and torch.equal(still.apply(crops), crops)
    unknown = torch.full_like(points, float("nan"))
    blind = front.move(unknown, one_au("AU26", 1.0, len(points)))
    assert not blind.warped.any() and torch.equal(blind.apply(crops), crops)


def test_the_way_back_carries_the_cycle_gradient(shipped: Path, real_faces) -> None:  # noqa: ANN001
    """The cycle is G(back(fake), -rel): its loss must reach ``fake`` through the back warp."""
    _, crops, points = real_faces
    front = RigFront.from_weights(shipped, 128)
    rel = one_au("AU26", 1.0, len(points))
    there = front.move(points, rel)
    fake = there.apply(crops).requires_grad_(True)
    back = front.move(there.moved, -rel)
    returned = back.apply(fake)
    returned.sum().backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    # There and back lands close to where it started (the rig is linear; the field is smooth).
    assert (back.moved - points).abs().max() < 0.25 * (there.moved - points).abs().max()


def test_a_run_behind_the_rig_trains_and_exports_with_it(shipped: Path, real_faces, tmp_path: Path) -> None:  # noqa: ANN001
    from fgfem.weights import load_generator

    data, _, _ = real_faces
    config = TrainConfig(preset="lite", conv_dim=8, critic_dim=8, image_size=64, batch=4, max_steps=2,
                         critic_steps=1, save_every=2, preview_every=2, rig=str(shipped))
    result = train(data, tmp_path / "run", config, show_progress=False, export=True)
    lines = read_metrics(tmp_path / "run")
    assert len(lines) == 2 and all(np.isfinite(line["g_cyc"]) and np.isfinite(line["d_total"]) for line in lines)
    exported = result.exported
    assert exported is not None
    carried = load_rig(exported)
    assert carried is not None
    np.testing.assert_array_equal(carried.patterns, load_rig(shipped).patterns)
    assert load_generator(exported, device="cpu") is not None


def test_what_cannot_train_behind_the_rig_is_refused(samples: Path, shipped: Path, tmp_path: Path) -> None:
    with pytest.raises(FgfemError, match="switches the generator's own warp off"):
        TrainConfig(preset="lite", warp=True, lambda_warp_au=1.0, rig=str(shipped))
    plain = tmp_path / "no-rig.safetensors"
    plain.write_bytes(shipped.read_bytes())
    from fgfem.rig.store import put_rig

    put_rig(plain, None)
    with pytest.raises(FgfemError, match="holds no AU rig"):
        RigFront.from_weights(plain, 128)
    bare = build_tiny_dataset(samples, tmp_path / "bare", vipermu=2)  # no prep journal: no landmarks
    config = TrainConfig(preset="lite", conv_dim=8, critic_dim=8, image_size=64, batch=2, max_steps=1, rig=str(shipped))
    with pytest.raises(FgfemError, match="--rig needs the landmarks that fgfem prep keeps"):
        train(bare, tmp_path / "run", config, show_progress=False, export=False)


def test_the_data_loader_makes_the_moves(shipped: Path, real_faces) -> None:  # noqa: ANN001
    """Each item behind the rig carries its face moved for its own AU change and the cycle's way back."""
    from fgfem.train.data import FaceDataset, load_faces

    data, _, _ = real_faces
    faces = load_faces(data)
    points = crop_landmarks(data, 128)
    front = RigFront.from_weights(shipped, 128)
    dataset = FaceDataset(faces.train, 128, hflip=True, pad=8, landmarks=points, front=front)
    plain = FaceDataset(faces.train, 128, hflip=True, pad=8, landmarks=points)
    item, same = dataset[(1, 5)], plain[(1, 5)]
    assert torch.equal(item["x"], same["x"]) and torch.equal(item["rel"], same["rel"])  # the same draws
    expected = front.move(item["points"][None], item["rel"][None])
    assert item["back_warped"] and expected.warped[0]
    torch.testing.assert_close(item["x_in"], expected.apply(item["x"][None])[0])
    assert item["back_grid"].shape == (128, 128, 2)


def test_only_a_generator_steps_items_make_the_way_back(shipped: Path, real_faces) -> None:  # noqa: ANN001
    """The cycle's way back is made for the items of a generator step only (1 in ``critic_steps``)."""
    from fgfem.train.data import FaceDataset, SeededBatches, load_faces

    batches = list(SeededBatches(20, 4, seed=7, epoch=2, generator_every=4))  # steps 10-14
    assert [{item[2] for item in batch} for batch in batches] == [{False}, {False}, {True}, {False}, {False}]
    assert [[item[:2] for item in batch] for batch in batches] == list(SeededBatches(20, 4, seed=7, epoch=2))
    resumed = list(SeededBatches(20, 4, seed=7, epoch=3, start=1, generator_every=4))  # steps 16-19
    assert [batch[0][2] for batch in resumed] == [True, False, False, False]
    data, _, _ = real_faces
    points = crop_landmarks(data, 128)
    dataset = FaceDataset(load_faces(data).train, 128, landmarks=points, front=RigFront.from_weights(shipped, 128))
    feeding, judging = dataset[(1, 5, True)], dataset[(1, 5, False)]
    assert "back_grid" in feeding and "back_grid" not in judging and "back_warped" not in judging
    assert torch.equal(feeding["x_in"], judging["x_in"])


def test_a_run_behind_the_rig_with_critic_steps_updates_the_generator_on_its_steps(
        shipped: Path, real_faces, tmp_path: Path) -> None:  # noqa: ANN001
    data, _, _ = real_faces
    config = TrainConfig(preset="lite", conv_dim=8, critic_dim=8, image_size=64, batch=4, max_steps=3,
                         critic_steps=2, save_every=3, preview_every=3, rig=str(shipped))
    train(data, tmp_path / "run", config, show_progress=False, export=False)
    lines = read_metrics(tmp_path / "run")
    assert [("g_cyc" in line) for line in lines] == [True, False, True]
    assert all(np.isfinite(line["d_total"]) for line in lines)


def test_previews_behind_the_rig_show_the_rigs_geometry(shipped: Path, real_faces) -> None:  # noqa: ANN001
    """A run behind the rig previews its edits behind the rig: an identity generator then shows the rig's move."""
    from fgfem.train.preview import PREVIEW_EDITS, preview_grid

    _, crops, points = real_faces
    front = RigFront.from_weights(shipped, 128)

    class Identity(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
            return x

    faces = crops[:2]
    plain = preview_grid(Identity(), faces)
    rigged = preview_grid(Identity(), faces, geometry=lambda rel: front.move(points[:2], rel).apply(faces))
    width = 128
    columns = {name: slice((i + 1) * width, (i + 2) * width) for i, (name, _) in enumerate(PREVIEW_EDITS)}
    assert np.array_equal(rigged[:, columns["zero"]], plain[:, columns["zero"]])
    diff = np.abs(rigged[:, columns["AU26 +1"]].astype(int) - plain[:, columns["AU26 +1"]].astype(int))
    assert diff.mean() > 1.0  # the jaw dropped


def test_export_with_a_missing_rig_file_writes_nothing(shipped: Path, real_faces, tmp_path: Path) -> None:  # noqa: ANN001
    from fgfem.train import export_generator

    data, _, _ = real_faces
    moved = tmp_path / "rig.safetensors"
    moved.write_bytes(shipped.read_bytes())
    config = TrainConfig(preset="lite", conv_dim=8, critic_dim=8, image_size=64, batch=4, max_steps=1,
                         critic_steps=1, save_every=1, preview_every=1, rig=str(moved))
    train(data, tmp_path / "run", config, show_progress=False, export=False)
    moved.unlink()
    out = tmp_path / "out.safetensors"
    with pytest.raises(FgfemError, match="rig.safetensors"):
        export_generator(tmp_path / "run", out)
    assert not out.exists()
