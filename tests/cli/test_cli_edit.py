"""`fgfem edit` end to end on real photos: size/format/EXIF kept, folders, no clobbering, clear errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fgfem.cli import run


@pytest.fixture()
def photo_with_exif(samples: Path, tmp_path: Path) -> Path:
    """A real JPEG with EXIF (camera make and an orientation tag) to check what survives the edit."""
    image = Image.open(samples / "pyfeat" / "0-f15-hao-ph.jpg").convert("RGB")
    exif = Image.Exif()
    exif[0x010F] = "fgfem-test-camera"  # Make
    exif[0x0112] = 1  # Orientation
    path = tmp_path / "face.jpg"
    image.save(path, quality=95, exif=exif.tobytes())
    return path


def edit(*args: object, weights: Path) -> int:
    return run(["edit", *map(str, args), "--weights", str(weights), "--device", "cpu", "--backend", "dlib"])


def test_single_photo_keeps_size_format_and_exif(photo_with_exif: Path, weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jpg"
    assert edit(photo_with_exif, "--au", "12=+1.0", "--au", "4=-0.5", "-o", out, weights=weights) == 0
    with Image.open(photo_with_exif) as before, Image.open(out) as after:
        assert after.size == before.size and after.format == "JPEG"
        assert after.getexif().get(0x010F) == "fgfem-test-camera"
        assert not np.array_equal(np.asarray(after), np.asarray(before))


def test_existing_output_needs_force(photo_with_exif: Path, weights: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.jpg"
    out.write_bytes(b"precious")
    assert edit(photo_with_exif, "--au", "12=+1", "-o", out, weights=weights) == 1
    assert out.read_bytes() == b"precious"
    assert "--force" in capsys.readouterr().err
    assert edit(photo_with_exif, "--au", "12=+1", "-o", out, "--force", weights=weights) == 0
    assert out.read_bytes() != b"precious"


def test_compare_and_crop_outputs(photo_with_exif: Path, weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    assert edit(photo_with_exif, "--au", "12=+1", "-o", out, "--compare", "--crop", weights=weights) == 0
    width, height = Image.open(photo_with_exif).size
    with Image.open(tmp_path / "out_compare.png") as compare:
        assert compare.width > 2 * width and compare.height > height  # two photos plus labels
    with Image.open(tmp_path / "out_crop.png") as crop:
        assert crop.size == (128, 128)


def test_zero_intensity_png_is_the_input(samples: Path, weights: Path, tmp_path: Path) -> None:
    src = tmp_path / "face.png"
    Image.open(samples / "pyfeat" / "single_face.jpg").convert("RGB").save(src)
    out = tmp_path / "same.png"
    assert edit(src, "--au", "12=+2", "--intensity", "0", "-o", out, weights=weights) == 0
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(src)))


def test_target_transfers_an_expression(samples: Path, weights: Path, tmp_path: Path) -> None:
    src, target = samples / "pyfeat" / "15-f13-anc-ph.jpg", samples / "pyfeat" / "0-f15-hao-ph.jpg"
    out = tmp_path / "transfer.jpg"
    assert edit(src, "--target", target, "-o", out, weights=weights) == 0
    assert Image.open(out).size == Image.open(src).size


def test_folder_skips_bad_files_and_reports(samples: Path, weights: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(samples / "pyfeat" / "0-f15-hao-ph.jpg", folder / "a_face.jpg")
    shutil.copy(samples / "pyfeat" / "free-mountain-vector-01.jpg", folder / "b_mountain.jpg")
    (folder / "c_broken.jpg").write_bytes(b"not a jpeg at all")
    out = tmp_path / "edited"
    assert edit(folder, "--au", "12=+1", "-o", out, weights=weights) == 1
    assert sorted(p.name for p in out.iterdir()) == ["a_face.jpg"]
    captured = capsys.readouterr()
    text = " ".join((captured.out + captured.err).split())
    assert "b_mountain.jpg" in text and "no face" in text
    assert "c_broken.jpg" in text
    assert "1 of 3" in text and "2 failed" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give --au, --expression or --target"),
        (("--au", "12=+1", "--target", "x.jpg"), "give --target alone"),
        (("--au", "99=+1"), "unknown action unit"),
        (("--au", "12=+1", "--mode", "paste"), "--mode"),
    ],
)
def test_bad_options_are_one_clear_line(photo_with_exif: Path, weights: Path, args, message, capsys) -> None:
    assert edit(photo_with_exif, *args, weights=weights) == 1
    err = capsys.readouterr().err
    assert message in " ".join(err.split())
    assert "Traceback" not in err


def test_missing_weights_is_a_clear_error(photo_with_exif: Path, tmp_path: Path, capsys) -> None:
    assert edit(photo_with_exif, "--au", "12=+1", weights=tmp_path / "nope.safetensors") == 1
    assert "does not exist" in capsys.readouterr().err
