"""Alignment, paste-back and landmark smoothing on real faces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fgfem.errors import FgfemError
from fgfem.faces import Face, get_backend
from fgfem.faces.align import (
    TEMPLATE_68,
    TEMPLATE_VERSION,
    align_faces,
    crop_matrix,
    invert_affine,
    landmarks_in_crop,
    template_points,
    umeyama,
)
from fgfem.faces.paste import face_mask, paste_back
from fgfem.faces.smoothing import OneEuroConfig, OneEuroFilter
from fgfem.media import load_image

REPO = Path(__file__).resolve().parents[2]
MIRROR = (list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
          + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40] + [54, 53, 52, 51, 50, 49, 48]
          + [59, 58, 57, 56, 55] + [64, 63, 62, 61, 60] + [67, 66, 65])


@pytest.fixture(scope="module")
def photos(shared) -> dict[str, tuple[np.ndarray, list[Face]]]:
    """Real photos with their dlib faces: the two repo examples, a 512 px posed face and a group."""
    backend = get_backend("dlib")
    paths = {
        "astronaut": REPO / "examples" / "astronaut.png",
        "monalisa": REPO / "examples" / "monalisa.jpg",
        "surprise": shared / "data" / "samples" / "pyfeat" / "0-f1-su-ph.jpg",
        "group": shared / "data" / "samples" / "pyfeat" / "multi_face.jpg",
    }
    out = {}
    for key, path in paths.items():
        rgb = load_image(path).rgb
        out[key] = (rgb, backend.detect(rgb))
    return out


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


# ---------------------------------------------------------------------------------------------- template
def test_template_is_a_symmetric_face_that_fills_the_crop():
    assert TEMPLATE_VERSION == "fgfem-crop-v1"
    assert TEMPLATE_68.shape == (68, 2)
    assert TEMPLATE_68.min() >= 0.0 and TEMPLATE_68.max() <= 1.0
    mirrored = TEMPLATE_68[MIRROR] * np.array([-1, 1]) + np.array([1, 0])
    assert np.abs(mirrored - TEMPLATE_68).max() < 1e-3
    # The whole face with brows and chin, filling most of the crop (GANimation-like framing).
    assert 0.1 < TEMPLATE_68[17:27, 1].min() < 0.25 and 0.85 < TEMPLATE_68[8, 1] < 0.97
    assert TEMPLATE_68[0:17, 0].max() - TEMPLATE_68[0:17, 0].min() > 0.9


def test_umeyama_recovers_a_similarity_exactly_and_inverse_is_exact():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(68, 2)) * 50 + 300
    angle, scale, shift = 0.4, 0.37, np.array([-20.0, 55.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ (scale * rotation).T + shift
    matrix = umeyama(src, dst)
    assert np.allclose(matrix[:, :2], scale * rotation) and np.allclose(matrix[:, 2], shift)
    composed = invert_affine(matrix)[:, :2] @ matrix[:, :2]
    assert np.allclose(composed, np.eye(2), atol=1e-12)
    inverse = invert_affine(matrix)
    assert np.allclose(dst @ inverse[:, :2].T + inverse[:, 2], src)
    # A mirrored landmark set is never fitted by a reflection.
    assert np.linalg.det(umeyama(src * np.array([-1, 1]), src)[:, :2]) > 0
    with pytest.raises(FgfemError):
        umeyama(np.zeros((68, 2)), src)
    with pytest.raises(FgfemError, match="crop size"):
        crop_matrix(src, 100)


# ---------------------------------------------------------------------------------------------- crops
@pytest.mark.parametrize("size", [128, 256])
def test_real_faces_land_on_the_template(photos, size):
    for key in ("astronaut", "monalisa", "surprise", "group"):
        rgb, faces = photos[key]
        aligned = align_faces(rgb, faces, size)
        assert aligned.crops.shape == (len(faces), 3, size, size) and aligned.crops.dtype == torch.float32
        assert aligned.crops.min() >= -1 and aligned.crops.max() <= 1 and aligned.crops.std() > 0.1
        assert aligned.template_version == TEMPLATE_VERSION and aligned.image_shape == rgb.shape[:2]
        for index, face in enumerate(faces):
            error = np.abs(landmarks_in_crop(face, aligned.matrices[index]) - template_points(size)).mean()
            assert error < 0.04 * size, (key, index, error)
            assert np.allclose(aligned.inverse[index], invert_affine(aligned.matrices[index]))


def test_warp_is_exact_on_a_linear_image_at_every_scale():
    """Bilinear sampling reproduces a linear ramp exactly, so this pins the pixel-centre convention."""
    height, width = 700, 900
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    ramp = (0.2 * xx + 0.1 * yy) / (0.2 * width + 0.1 * height) * 255
    image = np.stack([ramp, ramp[::-1, ::-1], np.full_like(ramp, 77)], axis=-1).round().astype(np.uint8)
    base = TEMPLATE_68 * 100 + np.array([300.0, 250.0])
    for zoom in (0.3, 1.0, 3.0):  # crop upsamples, ~1:1, and shrinks a big face (antialiased path)
        rotation = np.array([[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]])
        points = (base - 350) @ rotation.T * zoom + 350
        face = Face(box=np.array([0, 0, 1, 1]), score=1.0, landmarks=points)
        aligned = align_faces(image, [face], 128)
        v, u = np.mgrid[0:128, 0:128].astype(np.float64)
        inv = aligned.inverse[0]
        x = inv[0, 0] * u + inv[0, 1] * v + inv[0, 2]
        y = inv[1, 0] * u + inv[1, 1] * v + inv[1, 2]
        expected = (0.2 * x + 0.1 * y) / (0.2 * width + 0.1 * height) * 255
        got = (aligned.crops[0, 0].numpy().astype(np.float64) + 1) * 127.5
        inside = (x > 2) & (x < width - 3) & (y > 2) & (y < height - 3)
        assert inside.mean() > 0.5
        assert np.abs(got - expected)[inside].max() < 0.75, zoom


def test_crop_past_the_image_edge_repeats_the_edge(photos):
    rgb, (face,) = photos["astronaut"]
    cut = np.ascontiguousarray(rgb[:, 200:])  # the face now touches the left border
    shifted = Face(box=face.box - np.array([200, 0, 200, 0]), score=1.0, landmarks=face.landmarks - [200, 0])
    aligned = align_faces(cut, [shifted], 128)
    left_column = aligned.crops[0, :, :, 0]
    assert torch.isfinite(aligned.crops).all() and left_column.abs().sum() > 0
    assert align_faces(rgb, [], 128).crops.shape == (0, 3, 128, 128)


# ---------------------------------------------------------------------------------------------- paste
@pytest.mark.parametrize(("key", "size"), [("astronaut", 256), ("monalisa", 128), ("group", 256)])
def test_crop_round_trip_reproduces_the_photo(photos, key, size):
    """Where the crop is at least as sharp as the face, align -> paste reproduces it (>= 40 dB)."""
    rgb, faces = photos[key]
    aligned = align_faces(rgb, faces, size)
    out = paste_back(rgb, aligned.crops, None, aligned, mode="crop")
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    inside = np.zeros(rgb.shape[:2], bool)
    for index in range(len(faces)):
        inside |= face_mask(aligned, index) > 0
    assert inside.sum() > 1000
    assert _psnr(out[inside], rgb[inside]) >= 40.0
    assert np.array_equal(out[~inside], rgb[~inside])


@pytest.mark.parametrize("key", ["astronaut", "surprise", "group"])
def test_delta_mode_zero_edit_is_bit_exact_and_edits_stay_inside_the_mask(photos, key):
    rgb, faces = photos[key]
    aligned = align_faces(rgb, faces, 128)
    reference = aligned.crops * 0.9 + 0.05  # any G(x, 0): only the difference matters
    assert np.array_equal(paste_back(rgb, reference.clone(), reference, aligned), rgb)
    edited = reference.clone()
    edited[:, 0] += 0.4  # redder faces
    out = paste_back(rgb, edited, reference, aligned)
    changed = np.any(out != rgb, axis=-1)
    for index, face in enumerate(faces):
        mask = face_mask(aligned, index)
        assert mask.max() == pytest.approx(1.0, abs=1e-3)
        # The mask covers the face: the nose and mouth are fully inside, the landmarks' box mostly.
        for point in face.landmarks[[30, 51, 57, 62]]:
            assert mask[int(point[1]), int(point[0])] > 0.99
        assert changed[int(face.landmarks[30, 1]), int(face.landmarks[30, 0])]
    inside = np.zeros(rgb.shape[:2], bool)
    for index in range(len(faces)):
        inside |= face_mask(aligned, index) > 0
    assert changed.sum() > 0.5 * inside.sum() and not np.any(changed & ~inside)
    assert (out[..., 0].astype(int) - rgb[..., 0])[changed].mean() > 10


def test_paste_into_a_huge_face_uses_only_its_region(photos):
    """monalisa blown up 16x (2048 px, a ~1600 px face): the coarse warp-back path, still exact outside."""
    from PIL import Image

    small, (face,) = photos["monalisa"]
    rgb = np.asarray(Image.fromarray(small).resize((2048, 2048), Image.Resampling.BILINEAR))
    big = Face(box=face.box * 16, score=1.0, landmarks=(face.landmarks + 0.5) * 16 - 0.5)
    aligned = align_faces(rgb, [big], 128)
    reference = aligned.crops.clone()
    assert np.array_equal(paste_back(rgb, reference.clone(), reference, aligned), rgb)
    edited = reference.clone()
    edited[:, 0] += 0.3
    out = paste_back(rgb, edited, reference, aligned)
    mask = face_mask(aligned, 0)
    changed = np.any(out != rgb, axis=-1)
    assert not np.any(changed & (mask == 0)) and changed.sum() > 0.5 * (mask > 0).sum()
    shift = out[..., 0].astype(int) - rgb[..., 0]
    assert np.median(shift[mask > 0.99]) >= 37  # 0.3 * 127.5, less only where 255 clips
    # The red shift is smooth: no blocky steps from the coarse grid (away from clipping at 255).
    steps = np.abs(np.diff(shift, axis=1))
    unclipped = (mask[:, 1:] > 0.99) & (rgb[:, 1:, 0] < 200) & (rgb[:, :-1, 0] < 200)
    assert unclipped.sum() > 10000 and steps[unclipped].max() <= 3


def test_delta_mode_keeps_the_photos_own_detail(photos):
    """A 300 px face edited through a 128 px crop: the untouched detail is the photo's, not the crop's."""
    rgb, faces = photos["surprise"]
    aligned = align_faces(rgb, faces, 128)
    crop_mode = paste_back(rgb, aligned.crops, None, aligned, mode="crop")
    delta_mode = paste_back(rgb, aligned.crops, aligned.crops, aligned, mode="delta")
    inside = face_mask(aligned, 0) > 0.5
    assert np.array_equal(delta_mode, rgb)
    assert _psnr(crop_mode[inside], rgb[inside]) < 40  # the literal paste blurs a large face


def test_crop_mode_matches_colours(photos):
    rgb, faces = photos["monalisa"]
    aligned = align_faces(rgb, faces, 128)
    tinted = (aligned.crops + torch.tensor([0.3, -0.2, 0.1]).view(1, 3, 1, 1)).clamp(-1, 1)
    out = paste_back(rgb, tinted, None, aligned, mode="crop")
    inside = face_mask(aligned, 0) > 0.5
    assert np.abs(out[inside].astype(float).mean(0) - rgb[inside].astype(float).mean(0)).max() < 3.0


def test_paste_rejects_mismatched_inputs(photos):
    rgb, faces = photos["astronaut"]
    aligned = align_faces(rgb, faces, 128)
    with pytest.raises(FgfemError, match="reference"):
        paste_back(rgb, aligned.crops, None, aligned, mode="delta")
    with pytest.raises(FgfemError, match="shape"):
        paste_back(rgb, aligned.crops[:, :, :64], aligned.crops, aligned)
    with pytest.raises(FgfemError, match="mode"):
        paste_back(rgb, aligned.crops, aligned.crops, aligned, mode="poisson")
    with pytest.raises(FgfemError, match="aligned on"):
        paste_back(rgb[:100], aligned.crops, aligned.crops, aligned)


# ---------------------------------------------------------------------------------------------- smoothing
def test_one_euro_removes_jitter_but_follows_a_real_move(photos):
    _, (face,) = photos["astronaut"]
    rng = np.random.default_rng(1)
    fps, still, move, settle = 30.0, 40, 10, 20
    offsets = np.concatenate([np.zeros(still), np.linspace(0, 150, move), np.full(settle, 150.0)])
    truth = np.stack([face.landmarks + np.array([dx, 0.0], np.float32) for dx in offsets])
    noisy = truth + rng.normal(0, 1.5, truth.shape).astype(np.float32)
    smoother = OneEuroFilter(OneEuroConfig(), freq=fps)
    smoothed = np.stack([smoother(frame, i / fps) for i, frame in enumerate(noisy)])
    jitter = lambda seq: float(np.abs(np.diff(seq[5:still], axis=0)).mean())  # noqa: E731
    assert jitter(smoothed) < 0.35 * jitter(noisy)
    lag_during_move = np.abs(smoothed[still:still + move, :, 0] - truth[still:still + move, :, 0]).mean()
    assert lag_during_move < 12.0  # a 150 px move in a third of a second
    assert np.abs(smoothed[-1] - truth[-1]).mean() < 1.5  # caught up once the face is still again
    smoother.reset()
    assert np.array_equal(smoother(noisy[-1]), noisy[-1])
