"""Training data: layouts are recognised, and relative-AU sampling follows docs/design.md, "Training".

``helpers.build_tiny_dataset`` writes real, aligned 128 px faces with real OpenFace AUs (GANimation
and vipermu samples) in fgfem's own layout; the training tests share it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import build_tiny_dataset

from fgfem.aus import AU_SCALE
from fgfem.errors import FgfemError
from fgfem.train.config import TrainConfig
from fgfem.train.data import FaceDataset, SeededBatches, augment, detect_layout, load_faces, load_image


@pytest.fixture
def tiny_data(samples: Path, tmp_path: Path) -> Path:
    return build_tiny_dataset(samples, tmp_path / "data")


def test_layouts_are_detected(tiny_data: Path, samples: Path, tmp_path: Path) -> None:
    assert detect_layout(tiny_data) == "fgfem"
    faces = load_faces(tiny_data)
    assert len(faces.train) == 20 and not faces.held_out
    assert faces.train[0].aus.shape == (17,) and faces.train[0].aus.max() <= 5

    assert detect_layout(samples / "ganimation") == "ganimation"
    with pytest.warns(UserWarning):
        gan = load_faces(samples / "ganimation")
    # train_ids.csv and test_ids.csv split the 4 samples 2/2.
    assert len(gan.train) == 2 and len(gan.held_out) == 2
    assert {r.key for r in gan.held_out}.isdisjoint(r.key for r in gan.train)

    assert detect_layout(samples / "expression_manipulator") == "expression-manipulator"
    with pytest.warns(UserWarning), pytest.raises(FgfemError, match="11 AU values"):
        load_faces(samples / "expression_manipulator")

    with pytest.raises(FgfemError, match="not a training set"):
        detect_layout(tmp_path)


def test_holdout_and_limit(tiny_data: Path, tmp_path: Path) -> None:
    keys = [r.key for r in load_faces(tiny_data).train]
    holdout = tmp_path / "holdout.txt"
    holdout.write_text("\n".join(keys[:3]) + "\n")
    faces = load_faces(tiny_data, holdout=holdout, limit=5)
    assert [r.key for r in faces.held_out] == keys[:3]
    assert [r.key for r in faces.train] == keys[3:8]
    with pytest.raises(FgfemError, match="no such file"):
        load_faces(tiny_data, holdout=tmp_path / "missing.txt")


def test_relative_au_sampling_statistics(tiny_data: Path) -> None:
    faces = load_faces(tiny_data)
    dataset = FaceDataset(faces.train, 64, target_jitter=0.1, source_jitter=0.02, hflip=True, pad=4)
    table = torch.from_numpy(np.stack([r.aus for r in faces.train])) / AU_SCALE
    source_noise, target_noise = [], []
    for seed in range(300):
        index = seed % len(dataset)
        item = dataset[(index, seed)]
        assert item["x"].shape == (3, 64, 64) and item["x"].min() >= -1 and item["x"].max() <= 1
        source_noise.append(item["a_x"] - table[index])
        # The target is another face's AUs plus at most 0.1 on every AU: find which face.
        distance = (item["a_t"] - table).abs().amax(dim=1)
        distance[index] = float("inf")
        other = int(distance.argmin())
        assert distance[other] <= 0.1 + 1e-6
        target_noise.append(item["a_t"] - table[other])
        torch.testing.assert_close(item["rel"], item["a_t"] - item["a_x"])
    source, target = torch.stack(source_noise), torch.stack(target_noise)
    assert source.abs().max() <= 0.02 and source.abs().max() > 0.019
    assert target.abs().max() <= 0.1 and target.abs().max() > 0.095
    assert abs(float(source.mean())) < 0.002 and abs(float(target.mean())) < 0.01  # centred
    assert abs(float(target.std()) - 0.1 / 3**0.5) < 0.01  # uniform, not normal



def test_single_au_targets_move_one_au_of_the_face_own(tiny_data: Path) -> None:
    """With --single-au-targets 0.5 about half the targets are the source's AUs with one AU moved (by at
    most the change asked, inside [0, 1]); the rest are still another face's AUs; off, nothing changes."""
    faces = load_faces(tiny_data)
    plain = FaceDataset(faces.train, 64, hflip=False, pad=0)
    single = FaceDataset(faces.train, 64, hflip=False, pad=0, single_au_targets=0.5, single_au_change=2.0)
    moved_aus, singles = set(), 0
    for seed in range(200):
        item = single[(seed % len(single), seed)]
        changed = (item["a_t"] - item["a_x"]).abs() > 0
        if int(changed.sum()) <= 1:  # a single-AU target (another face's AUs differ on many AUs)
            singles += 1
            assert float(item["rel"].abs().max()) <= 2.0 / AU_SCALE + 1e-6
            assert bool(((item["a_t"][changed] >= 0) & (item["a_t"][changed] <= 1)).all())
            moved_aus.update(torch.nonzero(changed).flatten().tolist())
    assert 70 <= singles <= 130 and len(moved_aus) >= 12  # about half, spread over the AUs
    first, off = plain[(3, 1234)], FaceDataset(faces.train, 64, hflip=False, pad=0, single_au_targets=0.0)[(3, 1234)]
    assert all(torch.equal(first[key], off[key]) for key in first)  # off: the paper's sampling, same stream
    with pytest.raises(FgfemError, match="single_au_targets"):
        TrainConfig(single_au_targets=1.5)
    with pytest.raises(FgfemError, match="single_au_change"):
        TrainConfig(single_au_change=0.0)

def test_items_are_a_function_of_their_seed(tiny_data: Path) -> None:
    faces = load_faces(tiny_data)
    dataset = FaceDataset(faces.train, 64, hflip=True, pad=4)
    first, again, other = dataset[(3, 1234)], dataset[(3, 1234)], dataset[(3, 99)]
    for key in first:
        assert torch.equal(first[key], again[key])
    assert not torch.equal(first["a_t"], other["a_t"])


def test_augment_flips_and_shifts(tiny_data: Path) -> None:
    image = load_image(load_faces(tiny_data).train[0].path, 64)
    plain = augment(image, torch.Generator().manual_seed(0), hflip=False, pad=0)
    assert torch.equal(plain, image)
    flips = [torch.equal(augment(image, torch.Generator().manual_seed(s), hflip=True, pad=0), image.flip(-1))
             for s in range(40)]
    assert 5 < sum(flips) < 35
    shifted = augment(image, torch.Generator().manual_seed(3), hflip=False, pad=4)
    assert shifted.shape == image.shape and not torch.equal(shifted, image)


def test_batches_shard_and_resume() -> None:
    full = list(SeededBatches(20, 4, seed=7, epoch=2))
    assert len(full) == 5
    assert sorted(i for batch in full for i, _ in batch) == list(range(20))
    assert list(SeededBatches(20, 4, seed=7, epoch=2, start=3)) == full[3:]
    assert list(SeededBatches(20, 4, seed=7, epoch=3)) != full
    ranks = [list(SeededBatches(20, 4, seed=7, epoch=2, rank=r, world=2)) for r in (0, 1)]
    seen = [{i for batch in shard for i, _ in batch} for shard in ranks]
    assert len(ranks[0]) == 2 and not seen[0] & seen[1]


def test_config_round_trip_and_overrides() -> None:
    cfg = TrainConfig.from_cli({"lr": 3e-4, "batch": 8, "preset": "lite", "seed": None})
    assert cfg.lr_g == cfg.lr_d == 3e-4 and cfg.batch == 8 and cfg.seed == 0
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    assert cfg.optim.learning_rate(1e-4, 29) == 1e-4
    assert cfg.optim.learning_rate(1e-4, 49) == pytest.approx(1e-5)
    assert 1e-5 < cfg.optim.learning_rate(1e-4, 40) < 1e-4
    with pytest.raises(FgfemError, match="regulariser"):
        TrainConfig(regularizer="sgd")
    with pytest.raises(FgfemError, match="batch"):
        TrainConfig(batch=0)
    assert cfg.with_resume_overrides({"max_steps": 9}).max_steps == 9
    with pytest.raises(FgfemError, match="cannot change batch"):
        cfg.with_resume_overrides({"batch": 4})
