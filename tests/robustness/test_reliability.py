"""Issue 20, editing and weights: the edge cases a battery of real inputs broke, one test (or a few) per item.

Every input is made from the real photos in ``FGFEM_SHARED`` (the tests skip without them); the
generator is a tiny random one saved like a real model, since none of these behaviours depends on
what the model learnt.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from badinputs import face_in_large_photo, small_face_photo, tiny_generator_file, tiny_training_run
from PIL import Image

import fgfem
from fgfem.aus import AUClampWarning, check_combined_change, parse_au_specs, relative_vector, scaled_edits
from fgfem.cli import run
from fgfem.errors import FgfemError

COMMON = ("--device", "cpu", "--backend", "dlib", "--precision", "fp32")
REPO = Path(fgfem.__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_generator_file(tmp_path_factory.mktemp("weights") / "tiny.safetensors")


@pytest.fixture(scope="module")
def face(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real frontal face, 256 px: found reliably, cheap to edit."""
    path = tmp_path_factory.mktemp("face") / "face.jpg"
    small_face_photo(samples).save(path, quality=92)
    return path


def cli(*args: object) -> int:
    return run([str(a) for a in args])


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def one_line(err: str) -> str:
    """The stderr of a failed run: exactly one ``error:`` line, no traceback; returned without wrapping."""
    assert "Traceback" not in err and len(error_lines(err)) == 1, err
    return " ".join(err.split())


# ------------------------------------------------------------------------------ 7: --au x --intensity
def test_au_times_intensity_is_checked_as_one_change(face: Path, weights: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.jpg"
    assert cli("edit", face, "--au", "12=+10", "--intensity", "10", "-o", out, "--weights", weights, *COMMON) == 1
    assert "change of +100, outside -10..+10" in one_line(capsys.readouterr().err)
    assert not out.exists()
    gif = tmp_path / "sweep.gif"
    assert cli("interpolate", face, "--au", "12=+5", "--steps", "0,3", "-o", gif, "--weights", weights, *COMMON) == 1
    assert "--steps 3 asks for a change of +15" in one_line(capsys.readouterr().err)
    assert not gif.exists()


def test_combined_change_limits() -> None:
    edits = parse_au_specs(["12=+2", "4=3"])  # the absolute target is clamped instead, per face
    check_combined_change(edits, [5.0])
    check_combined_change(edits, [-5.0, 0.5])
    with pytest.raises(FgfemError, match=r"AU12=\+2 with --intensity 5.5"):
        check_combined_change(edits, [5.5])


# ------------------------------------------------------------------------------ 8: one frame
def test_one_frame_schedule_is_the_full_edit() -> None:
    from fgfem.animation import DEFAULT_STEPS, intensity_schedule

    assert intensity_schedule(DEFAULT_STEPS, frames=1) == [1.0]
    assert intensity_schedule([0.0, 2.0], frames=1) == [1.0]


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_one_frame_animation_shows_the_full_edit(suffix: str, face: Path, weights: Path, tmp_path: Path) -> None:
    """``--frames 1`` and ``--steps 1`` write the edit at intensity 1, not the unedited first step."""
    import imageio.v3 as iio

    def frames_of(*args: str) -> np.ndarray:
        out = tmp_path / f"{len(list(tmp_path.iterdir()))}{suffix}"
        assert cli("interpolate", face, "--au", "12=+3", *args, "--size", "128", "-o", out,
                   "--weights", weights, *COMMON) == 0
        return np.asarray(iio.imread(out, index=None)).reshape(-1, 128, 128, 3)

    one, full, unedited = frames_of("--frames", "1"), frames_of("--steps", "1"), frames_of("--steps", "0")
    assert len(one) == len(full) == 1
    assert np.abs(one.astype(int) - full.astype(int)).max() <= 2  # the same picture (MP4: same encode)
    assert np.abs(one.astype(int) - unedited.astype(int)).max() > 10


# ------------------------------------------------------------------------------ 9: small and upside-down faces
@pytest.mark.parametrize(("width", "face_px"), [(1000, 40), (1500, 50), (2000, 60)])
def test_small_face_in_a_large_photo_is_found(width: int, face_px: int, samples: Path, tmp_path: Path,
                                              capsys) -> None:
    photo = tmp_path / "group.jpg"
    face_in_large_photo(samples, face_px=face_px, width=width).save(photo, quality=92)
    table = tmp_path / "aus.csv"
    assert cli("aus", photo, "--backend", "dlib", "-o", table) == 0, capsys.readouterr().err
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1
    side = float(rows[0]["x1"]) - float(rows[0]["x0"])
    assert 0.7 * face_px < side < 2.0 * face_px


def test_no_face_says_how_small_a_face_can_be(samples: Path, tmp_path: Path, capsys) -> None:
    photo = tmp_path / "landscape.jpg"
    Image.open(samples / "pyfeat" / "free-mountain-vector-01.jpg").convert("RGB").resize((2000, 1500)).save(photo)
    assert cli("aus", photo, "--backend", "dlib") == 1
    assert "faces smaller than about 40 px across are not found" in one_line(capsys.readouterr().err)


def test_upside_down_face_says_rotated(face: Path, weights: Path, tmp_path: Path, capsys) -> None:
    photo = tmp_path / "upside_down.jpg"
    Image.open(face).transpose(Image.Transpose.ROTATE_180).save(photo, quality=92)
    assert cli("aus", photo, "--backend", "dlib") == 1
    assert "no upright face found (rotated photo?" in one_line(capsys.readouterr().err)
    out = tmp_path / "out.jpg"
    assert cli("edit", photo, "--au", "12=+1", "-o", out, "--weights", weights, *COMMON) == 1
    assert "no upright face found (rotated photo? a face shows when the photo is turned upside down)" in one_line(
        capsys.readouterr().err)
    assert not out.exists()


# ------------------------------------------------------------------------------ 10: one face numbering
def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _centre_x(row: dict[str, str]) -> float:
    return (float(row["x0"]) + float(row["x1"])) / 2


def test_face_numbers_are_left_to_right_in_aus_and_edit(samples: Path, editor, tmp_path: Path) -> None:
    """``aus --face N`` returns the table's face N, ``largest`` keeps its number, and ``edit --face N`` agrees."""
    photo = samples / "pyfeat" / "multi_face.jpg"
    assert cli("aus", photo, "--backend", "dlib", "-o", tmp_path / "all.csv") == 0
    every = _rows(tmp_path / "all.csv")
    assert len(every) == 5
    assert [int(r["face"]) for r in every] == list(range(5))
    assert [_centre_x(r) for r in every] == sorted(_centre_x(r) for r in every)
    by_number = {r["face"]: r for r in every}
    largest = max(every, key=lambda r: float(r["x1"]) - float(r["x0"]))
    for which, expected in (("2", by_number["2"]), ("4", by_number["4"]), ("largest", largest)):
        out = tmp_path / f"face_{which}.csv"
        assert cli("aus", photo, "--backend", "dlib", "--face", which, "-o", out) == 0
        (row,) = _rows(out)
        assert row["face"] == expected["face"] and row["x0"] == expected["x0"] and row["AU12"] == expected["AU12"]
    rgb = np.asarray(Image.open(photo).convert("RGB"))
    for number in ("0", "3"):
        (chosen,) = editor.find_faces(rgb, number)
        assert abs(float(chosen.box[0]) - float(by_number[number]["x0"])) < 0.5
    edited_all = editor.find_faces(rgb, "all")
    assert [round(float(f.box[0]), 1) for f in edited_all] == [float(r["x0"]) for r in every]


def test_every_face_option_says_left_to_right(capsys) -> None:
    for command in ("edit", "interpolate", "aus"):
        assert cli(command, "--help") == 0
        assert "left to right" in " ".join(capsys.readouterr().out.split()), command


# ------------------------------------------------------------------------------ 11: clamped targets
def test_targets_are_clamped_to_the_au_scale_with_a_warning() -> None:
    source = np.zeros(17, dtype=np.float32)
    source[8], source[16] = 2.8, 0.0  # AU12 at 2.8, eyes open (AU45 0)
    with pytest.warns(AUClampWarning) as caught:
        delta = relative_vector(parse_au_specs(["45=-3", "12=+5"]), source)
    assert delta[16] == 0.0 and delta[8] == pytest.approx(2.2)
    texts = [str(w.message) for w in caught]
    assert any("AU45 -3.00" in t and "AU45 +0.00 is applied" in t for t in texts), texts
    assert any("AU12 +5.00" in t and "asks for 7.80" in t and "AU12 +2.20 is applied (to 5.00)" in t for t in texts)
    with pytest.warns(AUClampWarning, match=r"x3 .*AU12 \+2.20 is applied"):  # --intensity counts
        assert relative_vector(scaled_edits(parse_au_specs(["12=+1"]), 3), source)[8] == pytest.approx(2.2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert relative_vector(parse_au_specs(["12=+2.2", "4=+1"]), source)[8] == pytest.approx(2.2)
        outside = source.copy()
        outside[8] = 5.3  # an estimate a little above the scale: a zero request must not move it
        assert not np.any(relative_vector(parse_au_specs(["12=+0"]), outside))


def test_edit_says_what_was_clamped(face: Path, weights: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.jpg"
    # the smiling face: eyes open (AU45 ~0.2), AU12 ~1.8; x2 asks for AU45 -6 and AU12 +4.8
    assert cli("edit", face, "--au", "45=-3", "--au", "12=+2.4", "--intensity", "2", "-o", out,
               "--weights", weights, *COMMON) == 0
    err = capsys.readouterr().err
    lines = [" ".join(line.split()) for line in err.splitlines() if line.startswith("warning:")]
    assert len(lines) == 2, err
    assert "AU45 -3.00 x2" in lines[0] and "clamped to 0..5, so AU45" in lines[0] and "(to 0.00)" in lines[0]
    assert "AU12 +2.40 x2" in lines[1] and "is applied (to 5.00)" in lines[1]


# ------------------------------------------------------------------------------ 12: own checkpoints as weights
def test_training_checkpoints_and_run_folders_are_weights(face: Path, tmp_path: Path, capsys) -> None:
    from fgfem.train import export_generator

    checkpoint = tiny_training_run(tmp_path / "run")
    exported = export_generator(tmp_path / "run", tmp_path / "exported.safetensors")
    outputs = []
    for given in (exported, checkpoint, tmp_path / "run"):
        out = tmp_path / f"out_{len(outputs)}.png"
        assert cli("edit", face, "--au", "12=+2", "-o", out, "--weights", given, *COMMON) == 0, capsys.readouterr()
        outputs.append(np.asarray(Image.open(out)))
    assert np.array_equal(outputs[0], outputs[1]) and np.array_equal(outputs[0], outputs[2])
    assert cli("weights", "show", checkpoint) == 0
    assert "step-00000003.safetensors" in capsys.readouterr().out


def test_run_folder_exported_generator_is_preferred_when_current(tmp_path: Path) -> None:
    from fgfem.train import export_generator
    from fgfem.weights import resolve_weights

    checkpoint = tiny_training_run(tmp_path / "run", step=3)
    assert resolve_weights(tmp_path / "run") == checkpoint
    exported = export_generator(tmp_path / "run")
    assert resolve_weights(tmp_path / "run") == exported
    newer = tiny_training_run(tmp_path / "run", step=5)  # trained on after the export: the export is stale
    assert resolve_weights(tmp_path / "run") == newer
    (tmp_path / "empty").mkdir()
    with pytest.raises(FgfemError, match="without checkpoints/ or generator.safetensors"):
        resolve_weights(tmp_path / "empty")


def test_eval_takes_a_training_checkpoint(samples: Path, tmp_path: Path, capsys) -> None:
    from fgfem.aus import AU_CODES

    crops = sorted((samples / "ganimation" / "imgs").glob("*.jpg"))
    data = tmp_path / "data"
    (data / "crops").mkdir(parents=True)
    rows = ["path,source,score," + ",".join(AU_CODES)]
    for index, crop in enumerate(crops):
        shutil.copy(crop, data / "crops" / f"{index}.jpg")
        rows.append(f"crops/{index}.jpg,sample,1.0," + ",".join(["1.0"] * len(AU_CODES)))
    (data / "aus.csv").write_text("\n".join(rows) + "\n")
    checkpoint = tiny_training_run(tmp_path / "run")
    assert cli("eval", data, "--weights", checkpoint, "--limit", "2", "--aus", "12", "--no-identity",
               "--device", "cpu") == 0, capsys.readouterr().err


# ------------------------------------------------------------------------------ 13: read-only output folder
def _world_readable_copy(face: Path, weights: Path) -> Path:
    """A folder an unprivileged user can read, holding the photo, the weights and a read-only ``ro/``."""
    root = Path(tempfile.mkdtemp(prefix="fgfem-ro-"))
    root.chmod(0o755)
    shutil.copy(face, root / "face.jpg")
    shutil.copy(weights, root / "w.safetensors")
    (root / "photos").mkdir(mode=0o755)
    shutil.copy(face, root / "photos" / "a.jpg")
    (root / "ro").mkdir()
    (root / "ro").chmod(0o555)
    for path in root.rglob("*"):
        if path.is_file():
            path.chmod(0o644)
    return root


def _run_unprivileged(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user whom the read-only folder refuses (root ignores permissions, so drop to nobody)."""
    command = [sys.executable, "-m", "fgfem", *args]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: a read-only folder cannot be simulated")
        command = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    env = {**os.environ, "HOME": str(root), "COLUMNS": "200", "PYTHONPATH": str(REPO)}
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_read_only_output_folder_fails_before_any_work(face: Path, weights: Path) -> None:
    root = _world_readable_copy(face, weights)
    try:
        model = ("--weights", "w.safetensors", *COMMON)
        # the first is checked before the model loads: its missing model file is never reached
        for args in (("edit", "face.jpg", "--au", "12=+1", "-o", "ro/out.jpg", "--weights", "missing.safetensors",
                      *COMMON),
                     ("edit", "photos", "--au", "12=+1", "-o", "ro/edited", *model),
                     ("interpolate", "face.jpg", "--au", "12=+1", "-o", "ro/sweep.gif", *model),
                     ("aus", "face.jpg", "--backend", "dlib", "-o", "ro/aus.csv")):
            proc = _run_unprivileged(root, *args)
            err = " ".join(proc.stderr.split())
            assert proc.returncode == 1, proc.stderr
            assert err == "error: cannot write into ro: permission denied (a read-only folder?)", proc.stderr
        assert list((root / "ro").iterdir()) == []
    finally:
        (root / "ro").chmod(0o755)
        shutil.rmtree(root)


def test_output_below_a_file_is_refused_at_once(face: Path, weights: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "notes").write_text("a file, not a folder")
    assert cli("edit", face, "--au", "12=+1", "-o", tmp_path / "notes" / "out.jpg", "--weights", weights,
               *COMMON) == 1
    assert "notes is a file, not a folder" in one_line(capsys.readouterr().err)


# ------------------------------------------------------------------------------ 14: folder reruns
def test_folder_rerun_counts_existing_outputs_as_skipped(samples: Path, weights: Path, tmp_path: Path,
                                                         capsys) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    small_face_photo(samples).save(photos / "a.jpg", quality=92)
    small_face_photo(samples, side=300).save(photos / "b.jpg", quality=92)
    out = tmp_path / "edited"
    assert cli("edit", photos, "--au", "12=+1", "-o", out, "--weights", weights, *COMMON) == 0
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(first) == ["a.jpg", "b.jpg"]
    capsys.readouterr()
    assert cli("edit", photos, "--au", "12=+1", "-o", out, "--weights", weights, *COMMON) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert "edited 0 of 2" in said and "2 skipped (exist; --force" in said and "failed" not in said
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    assert cli("edit", photos, "--au", "12=+1", "-o", out, "--force", "--weights", weights, *COMMON) == 0
    assert "edited 2 of 2" in " ".join(capsys.readouterr().out.split())


# ------------------------------------------------------------------------------ 15: messages
def test_warnings_show_the_message_only(face: Path, weights: Path, tmp_path: Path, capsys) -> None:
    still = Image.open(face)
    animated = tmp_path / "animated.gif"
    still.save(animated, save_all=True, append_images=[still.transpose(Image.Transpose.FLIP_LEFT_RIGHT)],
               duration=100, loop=0)
    assert cli("edit", animated, "--au", "12=+1", "-o", tmp_path / "out.png", "--weights", weights, *COMMON) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "has 2 frames; using the first one" in " ".join(err.split()), err
    for source_detail in ("MediaWarning", ".py:", "load_image(", "warnings.warn"):
        assert source_detail not in err, err


def test_fps_message_states_the_range(face: Path, weights: Path, tmp_path: Path, capsys) -> None:
    for fps in ("0", "-3", "121"):
        assert cli("interpolate", face, "--au", "12=+1", "--fps", fps, "-o", tmp_path / "x.gif",
                   "--weights", weights, *COMMON) == 1
        assert "must be greater than 0 and at most 120" in one_line(capsys.readouterr().err)


# ------------------------------------------------------------------------------ 16: content over suffix
def test_jpeg_named_heic_is_read_by_content(face: Path, weights: Path, tmp_path: Path, capsys) -> None:
    photo = tmp_path / "IMG_0001.heic"
    shutil.copy(face, photo)
    assert cli("edit", photo, "--au", "12=+1", "--weights", weights, *COMMON) == 0
    written = tmp_path / "IMG_0001_edited.jpg"  # named by what it is: a JPEG
    with Image.open(written) as image:
        assert image.format == "JPEG" and image.size == Image.open(face).size
    assert cli("aus", photo, "--backend", "dlib") == 0
    folder = tmp_path / "phone"
    folder.mkdir()
    shutil.copy(face, folder / "IMG_0002.HEIC")
    (folder / "notes.heic").write_text("not a photo at all")
    assert cli("edit", folder, "--au", "12=+1", "-o", tmp_path / "out", "--weights", weights, *COMMON) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["IMG_0002.jpg"]
    capsys.readouterr()
    assert cli("edit", folder / "notes.heic", "--au", "12=+1", "--weights", weights, *COMMON) == 1
    assert "is not an image fgfem reads" in one_line(capsys.readouterr().err)
