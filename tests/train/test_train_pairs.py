"""Supervised expression pairs: grouping by key, colour matching, seeded sampling, the loss in a real run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import VIPERMU, build_tiny_dataset, write_landmark_journal

from fgfem.aus import AU_SCALE, NUM_AUS
from fgfem.cli import run as cli_run
from fgfem.errors import FgfemError
from fgfem.train import TrainConfig, read_metrics, train
from fgfem.train.au_geometry import MIRROR_68
from fgfem.train.data import FaceRecord, load_faces
from fgfem.train.losses import landmark_flow_l1
from fgfem.train.pairs import MIN_AU_CHANGE, PairSampler, crop_landmarks, find_pairs, match_colour

TAIWANESE = r"taiwanese_(?P<person>\d\d)\d(?P<view>\d)[a-g]"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def record(key: str, au12: float) -> FaceRecord:
    aus = np.zeros(NUM_AUS, dtype=np.float32)
    aus[8] = au12
    return FaceRecord(key=key, path=Path(key), aus=aus)


def test_pairs_are_one_person_in_one_view_with_different_aus() -> None:
    records = [
        record("crops/taiwanese_0201a09-1-f0.png", 0.0),  # performer 02, view 1, neutral
        record("crops/taiwanese_0211b02-2-f0.png", 3.0),  # performer 02, view 1, happy
        record("crops/taiwanese_0211c12-3-f0.png", 0.2),  # same AUs as the neutral one (within 0.5)
        record("crops/taiwanese_0202a01-4-f0.png", 0.0),  # performer 02, view 2: another pose
        record("crops/taiwanese_0311b01-5-f0.png", 3.0),  # performer 03
        record("crops/utkface_25_0_1-6-f0.png", 3.0),  # not matched at all
    ]
    pairs = set(find_pairs(records, TAIWANESE))
    assert pairs == {(0, 1), (1, 0), (1, 2), (2, 1)}
    for a, b in pairs:
        assert np.abs(records[a].aus - records[b].aus).max() >= MIN_AU_CHANGE


@pytest.mark.parametrize("pattern, message", [("taiwanese_(\\d\\d", "not a valid regular expression"),
                                              ("taiwanese_\\d\\d", "named group")])
def test_bad_patterns_are_clear_errors(pattern: str, message: str) -> None:
    with pytest.raises(FgfemError, match=message):
        find_pairs([record("crops/taiwanese_0201a09.png", 0.0)], pattern)


def test_colour_matching_moves_channel_statistics_to_the_reference() -> None:
    rng = torch.Generator().manual_seed(0)
    reference = torch.rand(3, 32, 32, generator=rng) * 0.8 - 0.6
    darker_bluer = (reference * 0.5 + torch.tensor([-0.3, -0.2, 0.3]).view(3, 1, 1)).clamp(-1, 1)
    matched = match_colour(darker_bluer, reference)
    torch.testing.assert_close(matched.mean((1, 2)), reference.mean((1, 2)), atol=1e-4, rtol=0)
    torch.testing.assert_close(matched.std((1, 2)), reference.std((1, 2)), atol=1e-4, rtol=0)
    assert matched.abs().max() <= 1.0


def test_sampler_draws_registered_pairs_reproducibly(samples: Path, tmp_path: Path) -> None:
    faces = load_faces(build_tiny_dataset(samples, tmp_path / "data"))
    pairs = find_pairs(faces.train, VIPERMU)
    assert pairs and all("N_" not in faces.train[a].key for pair in pairs for a in pair)  # vipermu only
    sampler = PairSampler(faces.train, pairs, 64)
    first = sampler.sample(6, torch.Generator().manual_seed(3))
    again = sampler.sample(6, torch.Generator().manual_seed(3))
    assert first.source.shape == first.target.shape == (6, 3, 64, 64) and first.rel.shape == (6, NUM_AUS)
    assert torch.equal(first.source, again.source) and torch.equal(first.rel, again.rel)
    # rel is the AU difference of a listed pair, on the networks' scale.
    listed = {tuple(np.round((faces.train[b].aus - faces.train[a].aus) / AU_SCALE, 4)) for a, b in pairs}
    assert all(tuple(np.round(r.numpy(), 4)) in listed for r in first.rel)
    with pytest.raises(FgfemError, match="matched no two faces"):
        PairSampler(faces.train, [], 64)


def test_pair_loss_trains_and_is_logged(samples: Path, tmp_path: Path) -> None:
    data = build_tiny_dataset(samples, tmp_path / "data")
    cfg = TrainConfig(preset="lite", conv_dim=8, critic_dim=8, image_size=64, batch=4, max_steps=6, critic_steps=1,
                      save_every=6, preview_every=6, lambda_pair=30.0, pair_pattern=VIPERMU, pair_batch=2)
    train(data, tmp_path / "run", cfg, show_progress=False, export=False)
    log = read_metrics(tmp_path / "run")
    values = [line["g_pair"] for line in log]
    assert len(values) == 6 and all(np.isfinite(v) and v > 0 for v in values)
    # The residual generator starts as the identity: the first pair loss is the plain photo difference.
    assert values[0] > 0.02


def test_pair_options_are_checked(samples: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(FgfemError, match="--pair-pattern"):
        TrainConfig(lambda_pair=1.0)
    data = build_tiny_dataset(samples, tmp_path / "data", vipermu=4)
    code = cli_run(["train", str(data), "--run", str(tmp_path / "run"), "--preset", "lite", "--size", "64",
                    "--batch", "2", "--max-steps", "1", "--lambda-pair", "10", "--pair-pattern",
                    TAIWANESE, "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "matched no two faces" in err and "Traceback" not in err


# ------------------------------------------------------------------------------- landmark motion of the warp


def test_flow_loss_is_the_landmark_motion_the_warp_misses() -> None:
    target = torch.tensor([[[20.0, 30.0], [40.0, 41.0], [float("nan"), 5.0]]])  # 1 x 3 x 2, one unknown
    source = target + torch.tensor([3.0, -2.0])
    still = torch.zeros(1, 2, 64, 64)
    assert landmark_flow_l1(still, source, target).item() == pytest.approx(5.0)  # |3| + |-2|, NaN skipped
    # The output at t shows the input at t + flow: a flow of exactly (s - t) leaves nothing to learn.
    right = torch.zeros(1, 2, 64, 64)
    right[:, 0], right[:, 1] = 3.0 * 2 / 64, -2.0 * 2 / 64
    assert landmark_flow_l1(right, source, target).item() == pytest.approx(0.0, abs=1e-5)
    assert landmark_flow_l1(-right, source, target).item() == pytest.approx(10.0, abs=1e-4)


def test_sampler_flips_landmarks_with_the_images(samples: Path, tmp_path: Path) -> None:
    data = build_tiny_dataset(samples, tmp_path / "data")
    assert write_landmark_journal(data) > 0
    points = crop_landmarks(data, 64)  # the crops are 128 px: points are halved
    faces = load_faces(data)
    pairs = find_pairs(faces.train, VIPERMU)
    key = faces.train[pairs[0][0]].key
    plain = PairSampler(faces.train, pairs, 64, hflip=False, landmarks=points)
    flipping = PairSampler(faces.train, pairs, 64, hflip=True, landmarks=points)
    a = plain.sample(8, torch.Generator().manual_seed(1))
    b = flipping.sample(8, torch.Generator().manual_seed(1))
    assert a.source_points.shape == (8, 68, 2) and 0 < a.source_points[..., 0].mean() < 64
    flipped = ~torch.isclose(a.source_points, b.source_points).all(-1).all(-1)
    assert flipped.any() and (~flipped).any()
    # Mirrored and re-ordered: the flipped face's point i is the original's MIRROR_68[i].
    mirror = list(MIRROR_68)
    torch.testing.assert_close(b.source_points[flipped][..., 0], 63 - a.source_points[flipped][:, mirror, 0])
    torch.testing.assert_close(b.source_points[flipped][..., 1], a.source_points[flipped][:, mirror, 1])
    torch.testing.assert_close(b.source[flipped], a.source[flipped].flip(-1))
    assert key in points and points[key].max() < 64


def test_flow_loss_trains_the_warp_and_is_logged(samples: Path, tmp_path: Path, capsys) -> None:
    data = build_tiny_dataset(samples, tmp_path / "data")
    base = dict(preset="lite", conv_dim=8, critic_dim=8, image_size=64, batch=4, max_steps=4, critic_steps=1,
                save_every=4, preview_every=4, lambda_pair=30.0, pair_pattern=VIPERMU, pair_batch=2, warp=True,
                lambda_flow=1.0)
    with pytest.raises(FgfemError, match="landmarks that fgfem prep keeps"):
        train(data, tmp_path / "none", TrainConfig(**base), show_progress=False, export=False)
    write_landmark_journal(data)
    train(data, tmp_path / "run", TrainConfig(**base), show_progress=False, export=False)
    values = [line["g_flow"] for line in read_metrics(tmp_path / "run")]
    # A fresh warp does not move: the first loss is how far the pairs' landmarks really move (> 0).
    assert len(values) == 4 and values[0] > 0.1 and all(np.isfinite(values))
    with pytest.raises(FgfemError, match="--lambda-flow needs"):
        TrainConfig(**{**base, "warp": False})
    with pytest.raises(FgfemError, match="--lambda-flow needs"):
        TrainConfig(**{**base, "lambda_pair": 0.0})
