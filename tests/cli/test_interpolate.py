"""`fgfem interpolate`: intensity schedules, labelled strips and grids, GIF/MP4/PNG outputs on a real photo."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from fgfem.animation import (
    Frame,
    format_intensity,
    intensity_schedule,
    interpolation_frames,
    parse_steps,
    save_animation,
    step_label,
)
from fgfem.aus import parse_au_specs
from fgfem.errors import FgfemError
from fgfem.layout import face_view_box, grid, labelled_cell, strip

# ---------------------------------------------------------------------- pure layout and schedules


def test_parse_steps_reads_the_papers_schedule() -> None:
    assert parse_steps("0,0.5,0.75,1,1.25") == [0.0, 0.5, 0.75, 1.0, 1.25]
    assert parse_steps(" -1 , 2 ") == [-1.0, 2.0]


@pytest.mark.parametrize("bad", ["", "0,a", "nan", "0,100", ","])
def test_parse_steps_rejects_nonsense(bad: str) -> None:
    with pytest.raises(FgfemError):
        parse_steps(bad)


def test_frames_are_evenly_spaced_from_first_to_last_step() -> None:
    values = intensity_schedule([0, 0.5, 1.25], frames=6)
    assert len(values) == 6
    assert values[0] == 0 and values[-1] == 1.25
    assert np.allclose(np.diff(values), 0.25)


def test_boomerang_returns_without_repeating_the_ends() -> None:
    assert intensity_schedule([0, 0.5, 1], boomerang=True) == [0, 0.5, 1, 0.5]
    with pytest.raises(FgfemError):
        intensity_schedule([0, 1], frames=0)


def test_labels_read_like_the_command_line() -> None:
    assert format_intensity(0.75) == "0.75" and format_intensity(1.0) == "1" and format_intensity(-0.0) == "0"
    assert step_label(parse_au_specs(["12=+2"]), 0.5) == "AU12 +1"
    assert step_label(parse_au_specs(["4=-1"]), 0.5) == "AU04 -0.5"
    assert step_label(parse_au_specs(["12=+1", "4=-1"]), 1.25) == "x1.25"


def test_labelled_cell_puts_dark_text_below_the_picture() -> None:
    picture = np.full((100, 120, 3), 77, np.uint8)
    cell = labelled_cell(picture, "AU12 +1")
    assert cell.shape[1] == 120 and cell.shape[0] > 100
    assert np.array_equal(cell[:100], picture)  # the picture itself is untouched
    band = cell[100:]
    assert band.min() < 100 and np.median(band) == 255  # some dark text on white


def test_strip_and_grid_shapes() -> None:
    cells = [np.full((64, 64, 3), v, np.uint8) for v in (0, 100, 200)]
    row = strip(cells, ["a", "b", "c"], gap=4)
    assert row.shape[1] == 3 * 64 + 2 * 4
    table = grid([cells, cells], [["a", "b", "c"]] * 2, gap=4)
    assert table.shape[1] == row.shape[1] and table.shape[0] == 2 * row.shape[0] + 4
    with pytest.raises(ValueError):
        strip(cells, ["only one label"])


def test_face_view_box_is_square_inside_the_image_and_covers_the_face() -> None:
    points = np.array([[10, 20], [60, 90]], np.float32)  # a face near the top-left corner
    x0, y0, x1, y1 = face_view_box(points, (300, 400, 3))
    assert x1 - x0 == y1 - y0 and x0 >= 0 and y0 >= 0 and x1 <= 400 and y1 <= 300
    assert x0 <= 10 and y0 <= 20 and x1 >= 60 and y1 >= 90


# ---------------------------------------------------------------------- with a (random) generator


@pytest.fixture(scope="module")
def photo(samples: Path) -> np.ndarray:
    from fgfem.media import load_image

    return load_image(samples / "pyfeat" / "0-f15-hao-ph.jpg").rgb


def test_frame_zero_is_the_zero_edit_reconstruction(editor, photo) -> None:
    frames = interpolation_frames(editor, photo, parse_au_specs(["12=+2"]), [0, 0.5, 1.0], size=128)
    assert [f.intensity for f in frames] == [0, 0.5, 1.0]
    # Delta paste-back: zero change = the photo itself, so the view is a crop of the original.
    result = editor.edit_image(photo, parse_au_specs(["12=+2"]), intensities=[0.0])
    assert np.array_equal(result.images[0], photo)
    from fgfem.layout import crop_view

    box = face_view_box(result.faces[0].landmarks, photo.shape)
    assert np.array_equal(frames[0].rgb, crop_view(photo, box, 128))
    assert not np.array_equal(frames[2].rgb, frames[0].rgb)


def test_crop_mode_frame_zero_is_g_of_x_zero(editor, photo) -> None:
    spec = parse_au_specs(["12=+2"])
    frames = interpolation_frames(editor, photo, spec, [0, 1], mode="crop", full=True, max_side=None)
    reference = editor.edit_image(photo, np.zeros(17, np.float32), intensities=[1.0], mode="crop")
    # G(x, 0) computed in another batch may differ in the last bit (CPU kernels depend on batch size).
    assert np.abs(frames[0].rgb.astype(int) - reference.images[0]).max() <= 1
    assert not np.array_equal(frames[0].rgb, photo)  # a random G(x, 0) is not the photo


def test_gif_has_the_requested_number_of_frames(editor, photo, tmp_path: Path) -> None:
    schedule = intensity_schedule([0, 1.25], frames=7)
    frames = interpolation_frames(editor, photo, parse_au_specs(["12=+2"]), schedule, size=96)
    out = save_animation(frames, tmp_path / "anim.gif", fps=10)
    gif = iio.imread(out, index=None)
    assert gif.shape[0] == 7 and gif.shape[1:3] == (96, 96)
    with pytest.raises(FgfemError, match="already exists"):
        save_animation(frames, out)


def test_png_strip_has_one_labelled_cell_per_step(editor, photo, tmp_path: Path) -> None:
    frames = interpolation_frames(editor, photo, parse_au_specs(["12=+2"]), [0, 0.5, 0.75, 1, 1.25], size=100)
    picture = iio.imread(save_animation(frames, tmp_path / "strip.png"))
    assert picture.shape[1] == 5 * 100 + 4 * 4 and picture.shape[0] > 100
    assert np.array_equal(picture[:100, :100], frames[0].rgb)


def test_mp4_round_trip(editor, photo, tmp_path: Path) -> None:
    frames = [Frame(np.full((64, 64, 3), v, np.uint8), 0.0, "") for v in (0, 80, 160, 240)]
    out = save_animation(frames, tmp_path / "anim.mp4", fps=4)
    decoded = iio.imread(out, plugin="pyav") if _has_pyav() else list(iio.imiter(out))
    assert len(decoded) == 4


def _has_pyav() -> bool:
    import importlib.util

    return importlib.util.find_spec("av") is not None


def test_grid_has_a_row_per_au_and_a_column_per_step(editor, photo) -> None:
    from fgfem.animation import expression_grid

    picture = expression_grid(editor, photo, ["12", "4"], [0, 2, 4], size=64)
    row = strip([np.zeros((64, 64, 3), np.uint8)] * 3, ["x"] * 3)
    assert picture.shape == (2 * row.shape[0] + 4, row.shape[1], 3)
    # Column 0 (no change) is the same picture in every row.
    assert np.array_equal(picture[:64, :64], picture[row.shape[0] + 4: row.shape[0] + 68, :64])
