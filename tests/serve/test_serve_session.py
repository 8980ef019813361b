"""The web editor's per-photo logic, without a browser: caps, messages, exact download and command line."""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fgfem.aus import NUM_AUS, au_index
from fgfem.cli import run
from fgfem.errors import FgfemError
from fgfem.serve.session import EditState, SessionStore, UploadLimits, display_name, open_upload


@pytest.fixture(scope="module")
def tiny_editor(weights: Path):
    from fgfem.editor import Editor

    return Editor.from_weights(weights, device="cpu", backend="dlib")


@pytest.fixture(scope="module")
def photo(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real photo with background around the face, as a JPEG with EXIF (what a camera gives)."""
    exif = Image.Exif()
    exif[0x010F] = "fgfem-test-camera"
    path = tmp_path_factory.mktemp("photo") / "my photo.jpg"
    Image.open(samples / "pyfeat" / "single_face.jpg").convert("RGB").save(path, quality=92, exif=exif.tobytes())
    return path


def state(**aus: float) -> EditState:
    values = [0.0] * NUM_AUS
    for key, value in aus.items():
        values[au_index(key)] = value
    return EditState.from_controls(values, 1.0, "largest")


def test_state_rounds_like_the_sliders_and_speaks_au() -> None:
    s = EditState.from_controls([0.0] * 8 + [1.234567] + [0.0] * 7 + [-0.3], 0.8, None)
    assert s.values[8] == 1.23 and s.values[16] == -0.3 and s.face == "largest"
    assert s.au_specs() == ["12=+1.23", "45=-0.3"]
    assert EditState.from_controls([9.0] + [float("nan")] * 16, 5, "all").values[:2] == (3.0, 0.0)
    assert state().au_specs() == ["12=+0"]  # a valid zero edit for the command line
    with pytest.raises(FgfemError):
        EditState.from_controls([0.0] * 3, 1, "largest")


def test_display_name_never_carries_a_path() -> None:
    assert display_name("../../etc/passwd") == ("passwd", "")
    assert display_name("C:\\Users\\me\\my photo (1).JPG") == ("my_photo_1", ".jpg")
    assert display_name("<script>.png") == ("script", ".png")


def test_download_and_command_equal_fgfem_edit(tiny_editor, photo: Path, weights: Path, tmp_path: Path) -> None:
    session = open_upload(tiny_editor, photo, photo.name, UploadLimits())
    edit = EditState.from_controls([0.0] * 8 + [1.5] + [0.0] * 8, 0.75, "largest")
    first = session.render(tiny_editor, edit)
    assert session.render(tiny_editor, edit) is first and session.renders == 1  # same state: no second render
    written = session.write_download(tiny_editor, edit, tmp_path / "out")
    line = session.command(edit)
    assert line == "fgfem edit 'my photo.jpg' --au 12=+1.5 --intensity 0.75 -o my_photo_edited.jpg"
    assert written.name == "my_photo_edited.jpg"
    args = [str(tmp_path / a) if a.startswith("my") else a for a in shlex.split(line)[2:]]
    (tmp_path / "my photo.jpg").write_bytes(photo.read_bytes())
    assert run(["edit", *args, "--weights", str(weights), "--device", "cpu", "--backend", "dlib"]) == 0
    assert written.read_bytes() == (tmp_path / "my_photo_edited.jpg").read_bytes()  # the very same file
    assert Image.open(written).getexif().get(0x010F) == "fgfem-test-camera"


def test_sweep_writes_a_looping_gif(tiny_editor, photo: Path, tmp_path: Path) -> None:
    session = open_upload(tiny_editor, photo, photo.name, UploadLimits())
    gif = session.write_sweep(tiny_editor, state(AU12=1.0), tmp_path)
    with Image.open(gif) as image:
        assert image.n_frames >= 9 and image.size == (256, 256)
    assert "--steps 0,1 --frames 9 --boomerang" in session.sweep_command(state(AU12=1.0))
    again = session.write_download(tiny_editor, state(AU12=1.0), tmp_path)
    assert not gif.exists() and again.exists()  # one file per session on disk at a time


def bad_uploads(samples: Path, folder: Path) -> dict[str, Path]:
    text = folder / "notes.jpg"
    text.write_text("not a photo\n")
    noface = folder / "mountain.jpg"
    noface.write_bytes((samples / "pyfeat" / "free-mountain-vector-01.jpg").read_bytes())
    return {"text": text, "noface": noface}


def test_bad_uploads_are_one_line_naming_the_file_not_the_server_path(tiny_editor, samples: Path,
                                                                      tmp_path: Path) -> None:
    cases = bad_uploads(samples, tmp_path)
    for key, expected in (("text", "not an image"), ("noface", "no face found")):
        with pytest.raises(FgfemError) as caught:
            open_upload(tiny_editor, cases[key], cases[key].name, UploadLimits())
        message = str(caught.value)
        assert expected in message and cases[key].name in message
        assert str(tmp_path) not in message and "\n" not in message


def test_upload_caps_bytes_and_pixels(tiny_editor, photo: Path) -> None:
    with pytest.raises(FgfemError, match="the limit is"):
        open_upload(tiny_editor, photo, photo.name, UploadLimits(max_bytes=1000))
    with pytest.raises(FgfemError, match="safety limit"):
        open_upload(tiny_editor, photo, photo.name, UploadLimits(max_pixels=100_000))


def test_sixteen_bit_png_is_edited_with_a_note(tiny_editor, samples: Path, tmp_path: Path) -> None:
    grey = np.asarray(Image.open(samples / "pyfeat" / "0-f15-hao-ph.jpg").convert("L"), dtype=np.uint16) * 257
    path = tmp_path / "deep.png"
    Image.fromarray(grey).save(path)
    session = open_upload(tiny_editor, path, path.name, UploadLimits())
    assert "16 bits" in session.note and session.rgb.dtype == np.uint8
    assert session.write_download(tiny_editor, state(AU12=1.0), tmp_path).suffix == ".png"


def test_group_photo_numbers_faces_left_to_right(tiny_editor, samples: Path) -> None:
    path = samples / "pyfeat" / "multi_face.jpg"
    session = open_upload(tiny_editor, path, path.name, UploadLimits())
    count = len(session.numbered)
    assert count >= 2 and session.face_choices == ["largest", *map(str, range(count)), "all"]
    xs = [float(f.center[0]) for f in session.numbered]
    assert xs == sorted(xs)
    second = session.faces_for(tiny_editor, "1")
    assert np.array_equal(second[0].landmarks, tiny_editor.find_faces(session.rgb, "1")[0].landmarks)
    assert "--face 1" in session.command(EditState.from_controls([0.0] * NUM_AUS, 1, "1"))
    with pytest.raises(FgfemError):
        session.faces_for(tiny_editor, str(count))


def test_store_keeps_the_newest_sessions(tiny_editor, photo: Path) -> None:
    store = SessionStore(capacity=2)
    tokens = [store.add(open_upload(tiny_editor, photo, photo.name, UploadLimits())) for _ in range(3)]
    assert len(store) == 2 and store.get(tokens[0]) is None and store.get(tokens[2]) is not None
    assert store.get(None) is None and store.get("forged") is None


def test_editor_warnings_reach_the_page_not_the_server_log(tiny_editor, photo: Path, monkeypatch) -> None:
    import warnings

    session = open_upload(tiny_editor, photo, photo.name, UploadLimits())
    real = tiny_editor.edit_image

    def warning_edit(*args, **kwargs):
        warnings.warn("the geometry of this edit was limited", UserWarning, stacklevel=2)
        return real(*args, **kwargs)

    monkeypatch.setattr(tiny_editor, "edit_image", warning_edit)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing escapes to the server's stderr
        session.render(tiny_editor, state(AU12=2.0))
    assert session.last_warnings == ["the geometry of this edit was limited"]
