"""dlib's landmarks averaged over sub-pixel shifts: the same face, a third of the noise (``fgfem.photo_eval``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fgfem.media import load_image
from fgfem.photo_eval import PhotoJudge, jittered_landmarks, locality_floor

HELD_OUT_NEUTRAL = ("0101a02.jpg", "0601a01.jpg", "1501a03.jpg", "1601a01.jpg")


@pytest.fixture(scope="module")
def backend():  # noqa: ANN201 - a FaceBackend
    from fgfem.faces import get_backend

    return get_backend("dlib")


@pytest.fixture(scope="module")
def neutral(shared: Path) -> list[tuple[str, np.ndarray]]:
    return [(name, load_image(shared / "data" / "taiwanese" / name).rgb) for name in HELD_OUT_NEUTRAL]


def test_one_unshifted_reading_is_dlibs_own(backend, neutral) -> None:  # noqa: ANN001
    from fgfem.faces import detect_faces

    _, rgb = neutral[0]
    face = detect_faces(backend, rgb, "largest")[0]
    assert np.array_equal(jittered_landmarks(backend, rgb, np.asarray(face.box), 1), face.landmarks)


def test_averaged_landmarks_stay_on_the_face_and_are_sub_pixel(backend, neutral) -> None:  # noqa: ANN001
    from fgfem.faces import detect_faces

    _, rgb = neutral[1]
    face = detect_faces(backend, rgb, "largest")[0]
    averaged = jittered_landmarks(backend, rgb, np.asarray(face.box), 9)
    assert np.abs(averaged - face.landmarks).max() < 3.0  # the same points, within dlib's own spread
    assert not np.allclose(averaged, np.round(averaged))  # no longer whole pixels


def test_averaging_lowers_the_locality_floor(backend, neutral) -> None:  # noqa: ANN001
    """An invisible change (JPEG q95) moves re-detected landmarks; averaged ones move less than half as far."""
    plain = locality_floor(PhotoJudge(backend, identity=False), neutral)
    averaged = locality_floor(PhotoJudge(backend, identity=False, jitter=9), neutral)
    assert plain > 0.004
    assert averaged < 0.5 * plain
