"""A corpus of bad, odd and hostile inputs, generated on demand into a temporary folder.

Nothing binary is committed: every case is made from the real sample faces (or from
nothing) when the tests run. Each ``Case`` says which kind of input it is, and so which
subcommands read it (``COMMANDS_BY_KIND``), and what a correct CLI does with it:

- ``"error"``: refuse with one ``error: ...`` line and a non-zero exit;
- ``"ok"``: an unusual but valid input (CMYK, 16-bit, EXIF-rotated...) that must work;
- ``"either"``: must not crash, but success depends on the detector (30 tiny faces) or
  on how much of a damaged file can be decoded.

``expect_by_command`` overrides ``expect`` where one command rightly differs (a folder
with some bad files is a partial success: exit 1 with skips and a summary; a video
without a face renders unchanged but has no AUs to measure).

The real-media video cases (a start offset, a variable frame rate, SAR and colour tags,
an odd size, audio longer than the picture, every output container, a dead process's
partial file) are cut from the sample videos; ``frame_times``, ``audio_span`` and
``video_summary`` read a file's timing and geometry back with ffmpeg itself, so the
tests can check that an output kept what its input had.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import pickle
import re
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

# ``eval`` reads datasets and weights where this version has it.
_EVAL = ("eval",) if importlib.util.find_spec("fgfem.cli.eval") is not None else ()

# Which subcommands read which kind of input.
COMMANDS_BY_KIND: dict[str, tuple[str, ...]] = {
    "image": ("edit", "edit-target", "interpolate", "aus", "prep", "render"),
    "folder": ("edit", "aus", "prep"),
    "video": ("render", "render-driver", "aus", "prep"),
    "au": ("edit", "interpolate", "render"),
    "weights": ("edit", "interpolate", "render", "weights-show", "weights-convert", *_EVAL),
    "dataset": ("train", *_EVAL),
}


@dataclass(frozen=True)
class Case:
    """One bad input: ``path`` (str, or bytes for names that are not UTF-8) or extra CLI ``args``."""

    name: str
    kind: str
    expect: str  # "error" | "ok" | "either"
    path: str | bytes | None = None
    args: tuple[str, ...] = ()
    expect_by_command: dict[str, str] = field(default_factory=dict)
    note: str = ""
    only: tuple[str, ...] = ()  # restrict to these subcommands (an option only some of them have)
    out_name: str = ""  # the output's file name where the case is about it (render -o NAME)
    prior: tuple[tuple[str, bytes], ...] = ()  # files already in the output folder when the command starts

    def commands(self) -> tuple[str, ...]:
        return tuple(c for c in COMMANDS_BY_KIND[self.kind] if not self.only or c in self.only)

    def expected(self, command: str) -> str:
        if self.kind == "image" and command == "render":
            return "error"  # a photo is not a video, however good a photo it is
        return self.expect_by_command.get(command, self.expect)

    @property
    def fspath(self) -> str:
        """The path as the CLI receives it from a shell: bytes names decoded with surrogate escapes."""
        assert self.path is not None, f"case {self.name} has no path"
        return os.fsdecode(self.path)


# ------------------------------------------------------------------------------------------ helpers
def face_photo(samples: Path) -> Image.Image:
    """A real, frontal, 512 px face that the dlib backend finds reliably."""
    return Image.open(samples / "pyfeat" / "0-f15-hao-ph.jpg").convert("RGB")


def small_face_photo(samples: Path, side: int = 256) -> Image.Image:
    """The same face at ``side`` px: enough for detection, cheap to edit."""
    return face_photo(samples).resize((side, side), Image.Resampling.LANCZOS)


def jpeg_bytes(image: Image.Image, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92, **kwargs)
    return buffer.getvalue()


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (400 MP) but holds a few bytes of data.

    A loader without a pixel limit would try to allocate 1.2 GB before noticing.
    """
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + _png_chunk(b"IEND", b""))


def tiled_faces(samples: Path, columns: int = 6, rows: int = 5, cell: int = 128) -> Image.Image:
    """``columns`` x ``rows`` copies of real face crops in one picture (30 small faces by default)."""
    crops = sorted((samples / "ganimation" / "imgs").glob("*.jpg"))
    sheet = Image.new("RGB", (columns * cell, rows * cell), (128, 128, 128))
    for index in range(columns * rows):
        face = Image.open(crops[index % len(crops)]).convert("RGB").resize((cell, cell))
        sheet.paste(face, ((index % columns) * cell, (index // columns) * cell))
    return sheet


def ffmpeg(*args: object) -> None:
    """Run the ffmpeg binary that imageio-ffmpeg ships (no system ffmpeg needed)."""
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-nostdin", *map(os.fsdecode, map(str, args))]
    subprocess.run(cmd, check=True, timeout=120, capture_output=True)


def _ffmpeg_text(*args: object, stdout: bool = False) -> str:
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", *map(str, args)]
    proc = subprocess.run(cmd, timeout=120, capture_output=True, text=True)
    return proc.stdout if stdout else proc.stderr


def frame_times(path: str | Path) -> list[float]:
    """Presentation time of every decoded frame, as ffmpeg's showinfo prints it."""
    log = _ffmpeg_text("-i", path, "-map", "0:v:0", "-vf", "showinfo", "-f", "null", "-")
    return [float(t) for t in re.findall(r"pts_time:(-?[\d.]+)", log)]


def audio_span(path: str | Path) -> tuple[float, float] | None:
    """(start, end) in seconds of the first audio stream's packets (stream copy, nothing decoded); None if none."""
    text = _ffmpeg_text("-v", "error", "-i", path, "-map", "0:a:0?", "-c", "copy", "-f", "framecrc", "-",
                        stdout=True)
    if "#media_type 0: audio" not in text:  # no audio stream: ffmpeg falls back to copying the video
        return None
    base = re.search(r"#tb 0: (\d+)/(\d+)", text)
    rows = [(int(p), int(d)) for p, d in re.findall(r"^0,\s*-?\d+,\s*(-?\d+),\s*(\d+),", text, re.MULTILINE)]
    if base is None or not rows:
        return None
    tick = int(base.group(1)) / int(base.group(2))
    return min(p for p, _ in rows) * tick, max(p + d for p, d in rows) * tick


def video_summary(path: str | Path) -> str:
    """ffmpeg's one-line summary of the first video stream: codec, pixel format, colour tags, size, SAR."""
    return next((line.strip() for line in _ffmpeg_text("-i", path).splitlines() if "Video:" in line), "")


def short_clip(samples: Path, out: Path, frames: int = 8, source: str = "single_face.mp4", width: int = 320) -> Path:
    """The first ``frames`` frames of a real sample video, scaled to ``width`` px, no audio."""
    if not out.exists():
        ffmpeg("-i", samples / "pyfeat" / source, "-frames:v", frames, "-an", "-vf", f"scale={width}:-2",
               "-c:v", "libx264", "-crf", 18, "-pix_fmt", "yuv420p", out)
    return out


def tiny_generator_file(path: Path, *, conv_dim: int = 8, name: str = "lite") -> Path:
    """A randomly initialised generator saved like a real model (any G will do for I/O checks)."""
    import dataclasses

    import torch

    from fgfem.nets import Generator
    from fgfem.nets.config import get_preset
    from fgfem.weights import save_generator

    torch.manual_seed(0)
    cfg = dataclasses.replace(get_preset("lite"), name=name, conv_dim=conv_dim)
    save_generator(path, Generator(cfg), cfg)
    return path


def tiny_training_run(run: Path, *, conv_dim: int = 8, step: int = 3) -> Path:
    """A run folder as ``fgfem train`` leaves it: ``checkpoints/step-N.safetensors`` (both networks, optimisers)."""
    import dataclasses

    import torch

    from fgfem.nets import Critic, Generator
    from fgfem.nets.config import get_preset
    from fgfem.train.checkpoint import save_checkpoint

    torch.manual_seed(1)
    cfg = dataclasses.replace(get_preset("lite"), conv_dim=conv_dim, critic_dim=8)
    generator, critic = Generator(cfg), Critic(cfg)
    meta = {"step": step, "epoch": 0, "images_seen": 2 * step, "config": {}, "net": cfg.to_dict(), "data": {}}
    return save_checkpoint(run, generator=generator, critic=critic, opt_g=torch.optim.Adam(generator.parameters()),
                           opt_d=torch.optim.Adam(critic.parameters()), meta=meta, keep_last=2)


def face_in_large_photo(samples: Path, *, face_px: int = 60, width: int = 2000) -> Image.Image:
    """A real face about ``face_px`` across in a ``width`` px photo (a real landscape as background).

    The 512 px portrait's face spans about half of it, so the portrait is pasted at twice ``face_px``.
    """
    height = width * 3 // 4
    scene = Image.open(samples / "pyfeat" / "free-mountain-vector-01.jpg").convert("RGB").resize((width, height))
    side = 2 * face_px
    scene.paste(face_photo(samples).resize((side, side), Image.Resampling.LANCZOS), (width // 3, height // 4))
    return scene


# ------------------------------------------------------------------------------------------ builders
def _image_cases(root: Path, samples: Path) -> list[Case]:
    face = small_face_photo(samples)
    folder = root / "images"
    folder.mkdir(parents=True, exist_ok=True)
    made: list[Case] = []

    def add(name: str, data: bytes | Callable[[Path], None], filename: str, expect: str, note: str = "",
            **by_command: str) -> None:
        path = folder / filename
        if callable(data):
            data(path)
        else:
            path.write_bytes(data)
        made.append(Case(name, "image", expect, str(path), expect_by_command=dict(by_command), note=note))

    good_jpeg = jpeg_bytes(face)
    good_png = png_bytes(face)
    # prep records unusable photos as rejects in its manifest: with no face at all it must say so and fail.
    add("empty-file", b"", "empty.jpg", "error", "0 bytes")
    add("text-as-jpg", b"this is a shopping list, not a photo\n" * 20, "text.jpg", "error")
    add("truncated-jpeg", good_jpeg[: len(good_jpeg) // 2], "truncated.jpg", "error")
    add("truncated-png", good_png[: len(good_png) // 2], "truncated.png", "error")
    add("png-16bit-grey", lambda p: Image.fromarray(
        np.asarray(face.convert("L"), dtype=np.uint16) * 257).save(p), "grey16.png", "ok")
    add("cmyk-jpeg", jpeg_bytes(face.convert("CMYK")), "cmyk.jpg", "ok")
    add("rgba-png", lambda p: face.convert("RGBA").save(p), "rgba.png", "ok")
    add("greyscale-jpeg", jpeg_bytes(face.convert("L")), "grey.jpg", "ok")
    add("palette-png", lambda p: face.convert("P", palette=Image.Palette.ADAPTIVE).save(p), "palette.png", "ok")

    def rotated(path: Path) -> None:  # pixels stored on their side, EXIF says "rotate 90 CW to view"
        exif = Image.Exif()
        exif[0x0112] = 6
        face.transpose(Image.Transpose.ROTATE_90).save(path, quality=92, exif=exif.tobytes())

    add("exif-rotated", rotated, "rotated.jpg", "ok")
    add("one-pixel", png_bytes(Image.new("RGB", (1, 1), (200, 150, 120))), "pixel.png", "error")
    add("bomb-20000x20000", bomb_png(), "bomb.png", "error", "decompression-bomb guard")

    def animated(path: Path) -> None:
        frames = [face, face.transpose(Image.Transpose.FLIP_LEFT_RIGHT), face]
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)

    add("animated-gif", animated, "animated.gif", "ok", "first frame used, with a warning")
    # dlib upsamples small photos, so a 40 px face may still be found and edited; prep's --min-face rejects it
    add("face-too-small", jpeg_bytes(face.resize((40, 40))), "tiny_face.jpg", "either", prep="error")
    add("no-face", jpeg_bytes(Image.open(samples / "pyfeat" / "free-mountain-vector-01.jpg")
                              .convert("RGB").resize((480, 270))), "mountain.jpg", "error")
    add("thirty-faces", jpeg_bytes(tiled_faces(samples)), "thirty.jpg", "either", "6x5 tiled real faces")
    add("png-named-jpg", good_png, "really_a_png.jpg", "ok")
    add("garbage-bytes", np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "noise.png", "error")
    # edit and aus read a photo whose suffix is no image's by its content; prep picks photos by suffix
    add("wrong-suffix", good_jpeg, "face.txt", "ok", "not an image suffix", prep="error")
    add("huge-strip", png_bytes(Image.new("RGB", (60000, 1), (90, 90, 90))), "strip.png", "error")
    # a JPEG named .heic (phones and converters write them): read by its content, the output named .jpg
    add("jpeg-named-heic", good_jpeg, "photo.heic", "ok", "decided by content", prep="either")
    # the face upside down: "no upright face found (rotated photo?)"
    add("upside-down-face", jpeg_bytes(face.transpose(Image.Transpose.ROTATE_180)), "upside_down.jpg", "error")
    # a 60 px face in a 2000 px photo: found since the scan scale follows the photo's size
    add("small-face-large-photo", jpeg_bytes(face_in_large_photo(samples)), "small_face.jpg", "ok",
        "60 px face, 2000 px photo", prep="either")
    made.append(Case("missing-file", "image", "error", str(folder / "does_not_exist.jpg")))
    (folder / "a_folder.jpg").mkdir(exist_ok=True)
    made.append(Case("folder-named-jpg", "image", "error", str(folder / "a_folder.jpg"),
                     expect_by_command={"prep": "error"}))

    # a file name that is not valid UTF-8 (Latin-1 bytes, as old cameras and zip files write them)
    latin = os.fsencode(str(folder)) + b"/visage_\xe9t\xe9_\xff.jpg"
    with open(latin, "wb") as handle:
        handle.write(good_jpeg)
    made.append(Case("non-utf8-name", "image", "ok", latin, note="bytes path, surrogate-escaped in argv"))
    return made


def _folder_cases(root: Path, samples: Path) -> list[Case]:
    mixed = root / "mixed"
    mixed.mkdir(parents=True, exist_ok=True)
    face = small_face_photo(samples)
    (mixed / "a_good.jpg").write_bytes(jpeg_bytes(face))
    (mixed / "b_empty.jpg").write_bytes(b"")
    (mixed / "c_text.png").write_bytes(b"hello")
    (mixed / "d_truncated.jpg").write_bytes(jpeg_bytes(face)[:3000])
    (mixed / "e_noface.jpg").write_bytes(jpeg_bytes(Image.new("RGB", (200, 200), (30, 120, 200))))
    with open(os.fsencode(str(mixed)) + b"/f_\xff\xfe.jpg", "wb") as handle:
        handle.write(jpeg_bytes(face))
    (mixed / "notes.txt").write_text("ignored: not an image")
    empty = root / "empty_folder"
    empty.mkdir(exist_ok=True)
    only_bad = root / "only_bad"
    only_bad.mkdir(exist_ok=True)
    (only_bad / "x.jpg").write_bytes(b"")
    (only_bad / "y.png").write_bytes(b"not a png")
    # mixed: 2 good of 5 images. edit and aus exit 1 after editing/measuring the good ones, with a summary;
    # prep keeps the good faces and records the rest as rejects (exit 0).
    return [
        Case("mixed-folder", "folder", "partial", str(mixed), expect_by_command={"prep": "ok"}),
        Case("empty-folder", "folder", "error", str(empty)),
        Case("folder-all-bad", "folder", "error", str(only_bad), expect_by_command={"edit": "partial"}),
    ]


def _video_cases(root: Path, samples: Path) -> list[Case]:
    folder = root / "videos"
    folder.mkdir(parents=True, exist_ok=True)
    clip = short_clip(samples, folder / "good.mp4")
    data = clip.read_bytes()
    (folder / "noise.mp4").write_bytes(np.random.default_rng(1).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "text.mp4").write_text("not a video\n")
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 3])
    audio_only = folder / "audio_only.mp4"
    if not audio_only.exists():
        ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=0.5", "-c:a", "aac", audio_only)
    no_face = short_clip(samples, folder / "no_face.mp4", frames=6, source="no_face.mp4")
    return [
        Case("video-random-bytes", "video", "error", str(folder / "noise.mp4")),
        Case("video-empty-file", "video", "error", str(folder / "empty.mp4")),
        Case("video-text", "video", "error", str(folder / "text.mp4")),
        Case("video-truncated", "video", "either", str(folder / "truncated.mp4"), note="moov atom may be lost"),
        Case("video-audio-only", "video", "error", str(audio_only), note="an mp4 with no video stream"),
        Case("video-missing", "video", "error", str(folder / "missing.mp4")),
        # frames without a face render unchanged; aus has nothing to measure; prep rejects every frame
        Case("video-no-face", "video", "ok", str(no_face),
             expect_by_command={"aus": "error", "render-driver": "error", "prep": "error"}),
        *_real_media_video_cases(folder / "real", samples),
    ]


RENDER_ONLY = ("video-audio-longer", "video-output-gif", "video-output-webm", "video-output-avi", "video-output-flv",
               "video-stale-partial")
"""Real-media video cases about what ``render`` writes: the other video readers have nothing to show with them."""


def _real_media_video_cases(folder: Path, samples: Path) -> list[Case]:
    """Clips of 1-2 s cut from single_face.mp4 (a face, 30 fps, sound) with unusual timing or geometry, and
    render's output containers and leftovers.

    Each valid clip must render (and measure, where ``aus`` reads it) with its timing and geometry
    kept; the test reads the output's property back (``OUTPUT_CHECKS`` in test_bad_inputs.py).
    The ``RENDER_ONLY`` ones are about what render writes, so only render runs them.
    """
    folder.mkdir(parents=True, exist_ok=True)
    src = samples / "pyfeat" / "single_face.mp4"
    x264 = ("-c:v", "libx264", "-crf", 20, "-preset", "veryfast")
    aac = ("-c:a", "aac", "-b:a", "64k")
    made = {name: folder / name for name in ("base.mp4", "offset.mp4", "vfr.mp4", "anamorphic.mp4", "odd.mkv",
                                             "long_audio.mp4")}
    if not made["base.mp4"].exists():
        # 1 s of picture and sound at 320x180
        ffmpeg("-i", src, "-t", 1, "-vf", "scale=320:180", *x264, "-pix_fmt", "yuv420p", *aac, made["base.mp4"])
        # the picture starts 0.84 s after the sound, as in phone recordings and cut clips
        ffmpeg("-itsoffset", 0.84, "-i", made["base.mp4"], "-i", made["base.mp4"], "-map", "0:v", "-map", "1:a",
               "-c", "copy", made["offset.mp4"])
        # variable frame rate: frames 0..45 at 30 fps, then every 3rd (10 fps) to 2 s
        ffmpeg("-i", src, "-t", 2, "-vf", r"scale=320:180,select='lte(n\,45)+not(mod(n-45\,3))'",
               "-fps_mode", "passthrough", *x264, "-pix_fmt", "yuv420p", *aac, made["vfr.mp4"])
        # 480x360 stored, SAR 4:3 (shown 16:9), tagged bt709
        tags = "setparams=range=tv:colorspace=bt709:color_primaries=bt709:color_trc=bt709"
        ffmpeg("-i", src, "-t", 1, "-vf", f"scale=480:360:out_color_matrix=bt709,setsar=4/3,{tags}", *x264,
               "-pix_fmt", "yuv420p", "-an", made["anamorphic.mp4"])
        # an odd size (H.264 needs even sizes in 4:2:0, so the clip is 4:4:4)
        ffmpeg("-i", src, "-t", 1, "-vf", "scale=641:361,format=yuv444p", *x264, "-pix_fmt", "yuv444p", "-an",
               made["odd.mkv"])
        # 1 s of picture over the sample's whole 2.4 s of sound
        ffmpeg("-i", made["base.mp4"], "-i", src, "-map", "0:v", "-map", "1:a", "-c:v", "copy", *aac,
               made["long_audio.mp4"])
    # a partial file as a render killed with kill -9 leaves it: hidden, 0600, named after its dead writer
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    data = made["base.mp4"].read_bytes()
    stale = ((f".clip.partial-video-{dead.pid}-k1ll3d9x.mp4", data[: len(data) // 3]),)
    base = str(made["base.mp4"])
    render = ("render",)
    return [
        Case("video-start-offset", "video", "ok", str(made["offset.mp4"]), note="picture 0.84 s after the sound"),
        Case("video-variable-rate", "video", "ok", str(made["vfr.mp4"]), note="30 fps, then 10 fps"),
        Case("video-sar-bt709", "video", "ok", str(made["anamorphic.mp4"]), note="480x360 SAR 4:3, bt709 tags"),
        Case("video-odd-size", "video", "ok", str(made["odd.mkv"]), note="641x361, padded to 642x362 for H.264"),
        Case("video-audio-longer", "video", "ok", str(made["long_audio.mp4"]), only=render,
             note="cut at the picture's end, and said"),
        *(Case(f"video-output-{suffix}", "video", "ok", base, only=render, out_name=f"clip.{suffix}")
          for suffix in ("gif", "webm", "avi")),
        Case("video-output-flv", "video", "error", base, only=render, out_name="clip.flv",
             note="one line listing the containers that work"),
        Case("video-stale-partial", "video", "ok", base, only=render, out_name="clip.mp4", prior=stale,
             note="a dead render's partial file: removed, and said"),
    ]


def _au_cases() -> list[Case]:
    specs = {
        "au-unknown": ("--au", "99=+1"),
        "au-unknown-name": ("--au", "smile=+1"),
        "au-nan": ("--au", "12=nan"),
        "au-inf": ("--au", "12=+inf"),
        "au-1e9": ("--au", "12=+1e9"),
        "au-absolute-out-of-range": ("--au", "12=7"),
        "au-missing-value": ("--au", "12="),
        "au-no-equals": ("--au", "12"),
        "au-empty": ("--au", ""),
        "au-twice": ("--au", "12=+1", "--au", "AU12=-1"),
        "au-not-a-number": ("--au", "12=+lots"),
        "intensity-nan": ("--au", "12=+1", "--intensity", "nan"),
        "intensity-inf": ("--au", "12=+1", "--intensity", "inf"),
        "au-times-intensity-out-of-range": ("--au", "12=+10", "--intensity", "10"),
        "fps-zero": ("--au", "12=+1", "--fps", "0"),
    }
    only = {"intensity-nan": ("edit", "render"), "intensity-inf": ("edit", "render"),
            "au-times-intensity-out-of-range": ("edit",), "fps-zero": ("interpolate",)}
    return [Case(name, "au", "error", args=args, only=only.get(name, ())) for name, args in specs.items()]


def _weights_cases(root: Path) -> list[Case]:
    import torch
    from safetensors.torch import save_file

    folder = root / "weights"
    folder.mkdir(parents=True, exist_ok=True)
    good = tiny_generator_file(folder / "good.safetensors")
    data = good.read_bytes()
    (folder / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (folder / "empty.safetensors").write_bytes(b"")
    torch.save({"conv0.weight": torch.zeros(8, 3, 7, 7), "note": "I am a pickle"}, folder / "disguised.safetensors")
    (folder / "plain_pickle.safetensors").write_bytes(pickle.dumps({"a": 1}, protocol=2))
    (folder / "header_lies.safetensors").write_bytes(struct.pack("<Q", 10**12) + b"{}")
    # metadata of one preset over the tensors of another (a file renamed or stitched by hand)
    from safetensors import safe_open

    with safe_open(str(good), "pt") as handle:
        meta = dict(handle.metadata())
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (safe_open has no iter)
    config = json.loads(meta["config"])
    config["conv_dim"] = 16
    save_file(tensors, str(folder / "other_preset.safetensors"), metadata={**meta, "config": json.dumps(config)})
    save_file({"w": torch.zeros(3)}, str(folder / "no_metadata.safetensors"))
    shutil.copy(good, folder / "good_copy_for_reference.safetensors")
    names = {
        "weights-truncated": "truncated.safetensors",
        "weights-empty": "empty.safetensors",
        "weights-pickle-disguised": "disguised.safetensors",
        "weights-plain-pickle": "plain_pickle.safetensors",
        "weights-header-lies": "header_lies.safetensors",
        "weights-other-preset": "other_preset.safetensors",
        "weights-no-metadata": "no_metadata.safetensors",
        "weights-missing": "missing.safetensors",
    }
    cases = [Case(name, "weights", "error", str(folder / file)) for name, file in names.items()]
    # what fgfem train itself writes works wherever --weights is taken; convert is for reference .pth files
    checkpoint = tiny_training_run(folder / "run")
    for name, path in (("weights-train-checkpoint", checkpoint), ("weights-run-folder", folder / "run")):
        cases.append(Case(name, "weights", "ok", str(path), expect_by_command={"weights-convert": "error"}))
    return cases


def _dataset_cases(root: Path, samples: Path) -> list[Case]:
    from fgfem.aus import AU_CODES

    crops = sorted((samples / "ganimation" / "imgs").glob("*.jpg"))
    header = ["path", "source", "score", *AU_CODES]

    def dataset(name: str, rows: list[list[str]], columns: list[str] | None = None, *, raw: str | None = None,
                corrupt_image: bool = False) -> str:
        folder = root / "datasets" / name
        (folder / "crops").mkdir(parents=True, exist_ok=True)
        for index, crop in enumerate(crops):
            shutil.copy(crop, folder / "crops" / f"{index}.jpg")
        if corrupt_image:
            (folder / "crops" / "0.jpg").write_bytes(b"\xff\xd8\xff garbage")
        text = raw if raw is not None else "\n".join(",".join(r) for r in [columns or header, *rows]) + "\n"
        (folder / "aus.csv").write_bytes(text.encode("utf-8", "surrogateescape"))
        return str(folder)

    def row(index: int, aus: list[str] | None = None) -> list[str]:
        return [f"crops/{index}.jpg", "sample", "1.0", *(aus or ["1.0"] * len(AU_CODES))]

    good_rows = [row(i) for i in range(len(crops))]
    return [
        Case("dataset-missing-au-column", "dataset", "error",
             dataset("missing_col", [r[:-1] for r in good_rows], header[:-1])),
        Case("dataset-extra-header-column", "dataset", "ok",
             dataset("extra_col", [[*r, "x"] for r in good_rows], [*header, "comment"]),
             note="unknown extra columns are ignored"),
        Case("dataset-row-with-extra-field", "dataset", "error",
             dataset("extra_field", [*good_rows[:-1], [*good_rows[-1], "surplus"]])),
        Case("dataset-nan-aus", "dataset", "error",
             dataset("nan", [*good_rows[:-1], row(len(crops) - 1, ["nan"] * len(AU_CODES))])),
        Case("dataset-text-aus", "dataset", "error",
             dataset("text", [*good_rows[:-1], row(len(crops) - 1, ["high"] * len(AU_CODES))])),
        Case("dataset-empty-csv", "dataset", "error", dataset("empty_csv", [], raw="")),
        Case("dataset-header-only", "dataset", "error", dataset("header_only", [])),
        Case("dataset-missing-image", "dataset", "error", dataset("missing_img", [*good_rows, row(99)])),
        Case("dataset-corrupt-image", "dataset", "error", dataset("corrupt_img", good_rows, corrupt_image=True)),
        Case("dataset-binary-csv", "dataset", "error", dataset("binary", [], raw="\udcff\x00\x01\x02")),
        Case("dataset-missing-folder", "dataset", "error", str(root / "datasets" / "nope")),
    ]


def build_corpus(root: Path, samples: Path, kinds: tuple[str, ...] | None = None) -> list[Case]:
    """Write every case under ``root`` (made from the real faces in ``samples``) and return them."""
    root.mkdir(parents=True, exist_ok=True)
    builders: dict[str, Callable[[], list[Case]]] = {
        "image": lambda: _image_cases(root, samples),
        "folder": lambda: _folder_cases(root, samples),
        "video": lambda: _video_cases(root, samples),
        "au": _au_cases,
        "weights": lambda: _weights_cases(root),
        "dataset": lambda: _dataset_cases(root, samples),
    }
    cases: list[Case] = []
    for kind, build in builders.items():
        if kinds is None or kind in kinds:
            cases.extend(build())
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return cases


def tree_digest(root: Path) -> dict[bytes, str]:
    """sha256 of every file under ``root`` by its byte path: to prove inputs are left untouched."""
    import hashlib

    digests: dict[bytes, str] = {}
    for folder, _dirs, files in os.walk(os.fsencode(str(root))):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                digests[path] = hashlib.sha256(handle.read()).hexdigest()
    return digests
