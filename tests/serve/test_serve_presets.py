"""Emotion presets: the measured table, ``--expression`` on the command line and its rules."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fgfem import preset_profiles
from fgfem.aus import AU_CODES, AUEdit, au_index, relative_vector
from fgfem.cli import run
from fgfem.errors import FgfemError
from fgfem.paths import SOURCE_ROOT
from fgfem.presets import (
    EMOTIONS,
    PRESETS,
    check_edit_sources,
    edits_from_options,
    expression_edits,
    neutral_target,
    preset_sliders,
    relative_profile,
)


@pytest.fixture(scope="module")
def face(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("face") / "face.png"
    Image.open(samples / "pyfeat" / "0-f15-hao-ph.jpg").convert("RGB").resize((256, 256)).save(path)
    return path


def cli(*args: object, weights: Path) -> int:
    return run([*map(str, args), "--weights", str(weights), "--device", "cpu", "--backend", "dlib"])


def test_presets_were_measured_with_the_shipped_estimator() -> None:
    shipped = hashlib.sha256((SOURCE_ROOT / "fgfem" / "au_reading" / "calibration.py").read_bytes()).hexdigest()
    assert shipped == preset_profiles.CALIBRATION_SHA256, (
        "the AU estimator changed since the presets were measured: "
        "run python benchmarks/measure_presets.py --write (and commit the table it rewrites)")


def test_every_preset_has_a_profile_and_the_prototype_aus_lead() -> None:
    assert set(PRESETS) == {"happy", "sad", "surprise", "anger", "disgust", "fear", "neutral"}
    for name in EMOTIONS:
        assert np.abs(relative_profile(name)).max() > 0.1, name
    happy = relative_profile("happy")
    assert happy[au_index(12)] > 1 and happy[au_index(6)] > 1  # what any smile is made of
    surprise = relative_profile("surprise")
    assert surprise[au_index(26)] > 0.2 and surprise[au_index(2)] > 0.2
    assert ((neutral_target() >= 0) & (neutral_target() <= 5)).all()


def test_expression_edits_scale_add_and_yield_to_au() -> None:
    half = expression_edits(["happy=0.5"])
    assert all(edit.relative for edit in half)
    np.testing.assert_allclose(relative_vector(half), relative_profile("happy") * 0.5, atol=1e-4)
    both = relative_vector(expression_edits(["happy=0.5,surprise=0.5"]))
    np.testing.assert_allclose(both, (relative_profile("happy") + relative_profile("surprise")) * 0.5, atol=1e-4)
    mixed = expression_edits(["happy"], ["9=+0", "AU01=+1"])
    assert relative_vector(mixed)[au_index(9)] == 0 and relative_vector(mixed)[au_index(1)] == 1
    assert len({e.index for e in mixed}) == len(mixed)  # no AU twice


def test_neutral_is_an_absolute_target() -> None:
    edits = expression_edits(["neutral"])
    assert len(edits) == len(AU_CODES) and not any(e.relative for e in edits)
    source = np.full(len(AU_CODES), 2.0, dtype=np.float32)
    np.testing.assert_allclose(relative_vector(edits, source), neutral_target() - 2.0, atol=1e-4)
    sliders = preset_sliders("neutral", source)
    np.testing.assert_allclose(sliders, np.round(neutral_target() - 2.0, 2), atol=1e-6)


@pytest.mark.parametrize("specs, au, message", [
    (["joy"], None, "unknown expression"),
    (["happy=lots"], None, "not a number"),
    (["happy=9"], None, "between"),
    (["neutral=0.5"], None, "--intensity"),
    (["happy", "happy=0.5"], None, "twice"),
    (["neutral,happy"], None, "combine it with --au"),
    (["happy"], ["12=+1", "AU12=+2"], "twice"),
])
def test_bad_expressions_are_one_clear_line(specs: list[str], au: list[str] | None, message: str) -> None:
    with pytest.raises(FgfemError, match=message):
        expression_edits(specs, au)


def test_sources_check() -> None:
    check_edit_sources(None, ["happy"], None)
    check_edit_sources(["12=+1"], ["happy"], None)
    with pytest.raises(FgfemError, match="--target alone"):
        check_edit_sources(None, ["happy"], Path("t.jpg"))
    with pytest.raises(FgfemError, match="--expression"):
        check_edit_sources(None, None, None)
    assert edits_from_options(None, None) is None
    assert edits_from_options(["12=+1"], None) == [AUEdit(index=au_index(12), value=1.0, relative=True)]


def test_edit_expression_equals_the_same_au_line(face: Path, weights: Path, tmp_path: Path) -> None:
    """``--expression happy=0.8 --au 9=+0`` is exactly the ``--au`` edits it stands for."""
    specs = [f"{e.code}={e.value:+.4f}" for e in expression_edits(["happy=0.8"], ["9=+0"])]
    by_name, by_aus = tmp_path / "name.png", tmp_path / "aus.png"
    assert cli("edit", face, "--expression", "happy=0.8", "--au", "9=+0", "-o", by_name, weights=weights) == 0
    assert cli("edit", face, *[arg for s in specs for arg in ("--au", s)], "-o", by_aus, weights=weights) == 0
    assert np.array_equal(np.asarray(Image.open(by_name)), np.asarray(Image.open(by_aus)))
    assert not np.array_equal(np.asarray(Image.open(by_name)), np.asarray(Image.open(face)))


def test_edit_neutral_and_interpolate_expression(face: Path, weights: Path, tmp_path: Path, capsys) -> None:
    assert cli("edit", face, "--expression", "neutral", "--intensity", "0.5", "-o", tmp_path / "n.png",
               weights=weights) == 0
    assert cli("interpolate", face, "--expression", "surprise", "--frames", "3", "-o", tmp_path / "s.gif",
               weights=weights) == 0
    assert (tmp_path / "s.gif").stat().st_size > 0
    assert cli("edit", face, "--expression", "happy", "--target", face, "-o", tmp_path / "x.png",
               weights=weights) == 1
    assert cli("interpolate", face, "--grid", "--expression", "happy", "-o", tmp_path / "g.png", weights=weights) == 1
    err = capsys.readouterr().err
    assert "--target alone" in err and "leave out --au, --expression" in err
