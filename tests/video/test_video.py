"""Video I/O on the real sample videos and on short clips generated with the bundled ffmpeg."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fgfem.errors import FgfemError
from fgfem.media import MediaWarning
from fgfem.video import (
    VideoWriter,
    count_frames,
    ffmpeg_exe,
    gif_durations_ms,
    has_audio_stream,
    iter_frames,
    open_frames,
    probe_video,
    write_gif,
    write_mp4,
)


@pytest.fixture(scope="module")
def pyfeat(samples: Path) -> Path:
    return samples / "pyfeat"


def _ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-v", "error", "-y", *args], check=True)


def _clip(path: Path, *, seconds: float, audio_seconds: float | None, size: str = "160x120",
          rate: int = 25) -> Path:
    """A test-pattern clip, with a 440 Hz tone of its own length when ``audio_seconds`` is given."""
    args = ["-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}:duration={seconds}"]
    if audio_seconds is not None:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={audio_seconds}", "-c:a", "aac"]
    _ffmpeg(*args, "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path))
    return path


def _audio_seconds(path: Path) -> float:
    """Duration of the audio stream alone (stream-copied, so it is what the file holds)."""
    out = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:a:0", "-c", "copy",
                          "-f", "null", "-progress", "pipe:1", "-"], capture_output=True, check=True).stdout
    h, m, s = re.findall(rb"out_time=(\d+):(\d+):([\d.]+)", out)[-1]
    return int(h) * 3600 + int(m) * 60 + float(s)


def _ffmpeg_children() -> list[int]:
    """Live (not zombie) ffmpeg processes started by this test process."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if "ffmpeg" in stat.split(")")[0] and int(fields[1]) == os.getpid() and fields[0] != "Z":
            found.append(int(entry.name))
    return found


# --- reading real videos ------------------------------------------------------------------------------


def test_probe_wolfgang(pyfeat: Path) -> None:
    info = probe_video(pyfeat / "WolfgangLanger_Pexels.mp4")
    assert info.frame_count == 472
    assert info.fps == pytest.approx(24000 / 1001)
    assert info.size == (640, 360)
    assert info.duration == pytest.approx(19.69, abs=0.02)
    assert info.has_audio and info.codec == "h264"


def test_exact_count_matches_iteration_where_metadata_does_not(pyfeat: Path) -> None:
    path = pyfeat / "no_face.mp4"
    exact, quick = probe_video(path), probe_video(path, exact=False)
    frames = list(iter_frames(path))
    assert len(frames) == exact.frame_count == 95
    assert quick.frame_count == 98  # container packets: the fast estimate is not the truth here
    assert frames[0].shape == (540, 960, 3) and frames[0].dtype == np.uint8
    frames[0][0, 0] = 7  # frames belong to the caller and are writable


def test_variable_rate_phone_video(pyfeat: Path) -> None:
    path = pyfeat / "face_noface.mov"  # HEVC, audio is stream 0, 26.4 fps average over a 30 fps base
    info = probe_video(path)
    assert info.codec == "hevc" and info.has_audio and info.size == (960, 540)
    assert info.fps == pytest.approx(26.4)
    assert info.frame_count == 169
    assert info.frame_count / info.fps == pytest.approx(info.duration, abs=0.1)


def test_rotated_phone_video_size_comes_from_decoded_frames(tmp_path: Path) -> None:
    base = _clip(tmp_path / "base.mp4", seconds=0.4, audio_seconds=None)
    rotated = tmp_path / "rotated.mp4"
    _ffmpeg("-display_rotation:v:0", "90", "-i", str(base), "-c", "copy", str(rotated))
    info = probe_video(rotated)
    assert info.size == (120, 160)  # the header still says 160x120
    frames = list(iter_frames(rotated))
    assert len(frames) == info.frame_count == 10 and frames[0].shape == (160, 120, 3)


def test_start_skips_exactly(pyfeat: Path) -> None:
    path = pyfeat / "single_face.mp4"
    frames = list(iter_frames(path))
    assert len(frames) == count_frames(path) == 72
    tail = list(iter_frames(path, start=69))
    assert len(tail) == 3 == count_frames(path, start=69)
    for a, b in zip(tail, frames[69:], strict=True):
        assert np.array_equal(a, b)
    assert list(iter_frames(path, start=500)) == []


def test_early_stop_leaves_no_thread_or_process(pyfeat: Path) -> None:
    path = pyfeat / "WolfgangLanger_Pexels.mp4"
    threads = threading.active_count()
    with open_frames(path) as frames:
        first = [next(frames) for _ in range(3)]
        assert frames.size == (640, 360)
        assert _ffmpeg_children()
    assert len(first) == 3 and frames._process.poll() is not None
    assert next(frames, None) is None
    for _ in itertools.islice(iter_frames(path), 2):
        pass  # generator abandoned mid-video and collected
    assert threading.active_count() == threads
    assert _ffmpeg_children() == []


def test_consumer_does_not_wait_on_decode(pyfeat: Path) -> None:
    import time

    with open_frames(pyfeat / "single_face.mp4") as frames:
        next(frames)
        time.sleep(0.5)  # the "model" is busy; the decoder fills the queue meanwhile
        start = time.perf_counter()
        for _ in range(7):
            next(frames)
        assert time.perf_counter() - start < 0.05


# --- bad inputs ----------------------------------------------------------------------------------------


def test_unreadable_videos(tmp_path: Path) -> None:
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("not a video at all\n" * 50)
    _ffmpeg("-f", "lavfi", "-i", "sine=duration=0.5", str(tmp_path / "tone.m4a"))
    cases = {
        "empty.mp4": r"the file is empty \(0 bytes\)",
        "text.mp4": "not a video ffmpeg can open",
        "tone.m4a": "it has no video stream",
        "missing.mp4": "no such file",
    }
    for name, message in cases.items():
        with pytest.raises(FgfemError, match=rf"cannot read video .*{re.escape(name)}: {message}"):
            probe_video(tmp_path / name)
        with pytest.raises(FgfemError, match=message):
            list(iter_frames(tmp_path / name))


def test_awkward_names(pyfeat: Path, tmp_path: Path) -> None:
    odd = tmp_path / os.fsdecode(b"-i caf\xe9:clip.mp4")
    shutil.copy(pyfeat / "single_face.mp4", odd)
    assert probe_video(odd, exact=False).size == (640, 360)
    assert sum(1 for _ in iter_frames(odd)) == 72
    odd.write_text("garbage")
    with pytest.raises(FgfemError) as info:
        probe_video(odd)
    assert "caf\\xe9:clip.mp4" in str(info.value)
    str(info.value).encode("utf-8")


# --- writing ------------------------------------------------------------------------------------------


def test_round_trip_keeps_real_audio_and_frame_count(pyfeat: Path, tmp_path: Path) -> None:
    src = pyfeat / "WolfgangLanger_Pexels.mp4"
    info = probe_video(src, exact=False)
    frames = list(itertools.islice(iter_frames(src), 36))
    out = tmp_path / "edited.mp4"
    with VideoWriter(out, info.fps, info.size, audio_from=src, preset="veryfast") as writer:
        for frame in frames:
            writer.write(frame)
    back = list(iter_frames(out))
    assert len(back) == 36
    assert np.abs(np.stack(back).astype(int) - np.stack(frames)).mean() < 3
    written = probe_video(out)
    assert written.has_audio and written.fps == pytest.approx(info.fps)
    assert _audio_seconds(out) == pytest.approx(36 / info.fps, abs=0.05)  # cut to the video, not 19.7 s
    assert [p.name for p in tmp_path.iterdir()] == ["edited.mp4"]


@pytest.mark.parametrize("audio_seconds", [3.0, 0.4])
def test_audio_longer_or_shorter_than_video(tmp_path: Path, audio_seconds: float) -> None:
    src = _clip(tmp_path / "src.mp4", seconds=1, audio_seconds=audio_seconds)
    assert has_audio_stream(src)
    out = tmp_path / "out.mp4"
    with VideoWriter(out, 25, (160, 120), audio_from=src) as writer:
        for frame in iter_frames(src):
            writer.write(frame)
    assert count_frames(out) == 25  # a shorter tone must not shorten the video (the -shortest trap)
    assert _audio_seconds(out) == pytest.approx(min(1.0, audio_seconds), abs=0.05)


def test_silent_source_gives_silent_output(tmp_path: Path) -> None:
    src = _clip(tmp_path / "silent.mp4", seconds=0.4, audio_seconds=None)
    out = tmp_path / "out.mp4"
    with VideoWriter(out, 25, (160, 120), audio_from=src) as writer:
        for frame in iter_frames(src):
            writer.write(frame)
    info = probe_video(out)
    assert info.frame_count == 10 and not info.has_audio


def test_odd_size_is_padded_not_scaled(pyfeat: Path, tmp_path: Path) -> None:
    real = itertools.islice(iter_frames(pyfeat / "single_face.mp4"), 5)
    frames = [np.ascontiguousarray(f[100:149, 300:365]) for f in real]
    out = tmp_path / "odd.mp4"
    with VideoWriter(out, 12.5, (65, 49)) as writer:
        for frame in frames:
            writer.write(frame)
    assert writer.encoded_size == (66, 50)
    info = probe_video(out)
    assert info.frame_count == 5 and info.size == (66, 50) and info.fps == pytest.approx(12.5)
    back = list(iter_frames(out))
    assert np.abs(back[2][:49, :65].astype(int) - frames[2]).mean() < 6
    assert np.abs(back[2][:49, 65].astype(int) - frames[2][:, 64]).mean() < 12  # edge repeated, not black


def test_no_clobber_without_force(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    out.write_bytes(b"keep me")
    with pytest.raises(FgfemError, match=r"out\.mp4 already exists; pass --force"):
        VideoWriter(out, 25, (32, 32))
    assert out.read_bytes() == b"keep me"
    write_mp4([np.zeros((32, 32, 3), np.uint8)] * 3, out, 25, force=True)
    assert count_frames(out) == 3


def test_exception_leaves_nothing_behind(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    with pytest.raises(KeyError), VideoWriter(out, 25, (64, 48)) as writer:
        for _ in range(5):
            writer.write(np.zeros((48, 64, 3), np.uint8))
        raise KeyError("model crashed")
    assert list(tmp_path.iterdir()) == []
    assert _ffmpeg_children() == []


def test_encoder_failure_is_one_clear_error(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    with pytest.raises(FgfemError, match=r"cannot write video .*out\.mp4"), \
            VideoWriter(out, 25, (64, 48), codec="no-such-codec") as writer:
        for _ in range(50):
            writer.write(np.zeros((48, 64, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="48x64x3 uint8"), VideoWriter(out, 25, (64, 48)) as writer:
        writer.write(np.zeros((48, 65, 3), np.uint8))
    with pytest.raises(FgfemError, match="no frames"), VideoWriter(out, 25, (64, 48)):
        pass
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="x264 preset must be one of"):
        VideoWriter(out, 25, (64, 48), preset="turbo")
    assert list(tmp_path.iterdir()) == []


# --- animations ----------------------------------------------------------------------------------------


def test_gif_durations_keep_the_rate() -> None:
    durations = gif_durations_ms(24, 24)
    assert sum(durations) == 1000 and set(durations) == {40, 50}
    assert gif_durations_ms(3, 100) == [20, 20, 20]


def test_write_gif(pyfeat: Path, tmp_path: Path) -> None:
    frames = [f[::4, ::4].copy() for f in itertools.islice(iter_frames(pyfeat / "single_face.mp4"), 0, 30, 3)]
    out = write_gif(frames, tmp_path / "anim.gif", fps=10)
    with Image.open(out) as gif:
        assert gif.n_frames == 10 and gif.info["loop"] == 0 and gif.size == (160, 90)
        delays = []
        for index in range(gif.n_frames):
            gif.seek(index)
            delays.append(gif.info["duration"])
    assert delays == [100] * 10
    with pytest.raises(FgfemError, match="--force"):
        write_gif(frames, out, fps=10)
    with pytest.warns(MediaWarning, match="50 fps"):
        write_gif(frames, out, fps=60, force=True, loop=1)
    assert [p.name for p in tmp_path.iterdir()] == ["anim.gif"]


def test_write_mp4(tmp_path: Path) -> None:
    frames = [np.full((40, 60, 3), 20 * k, np.uint8) for k in range(12)]
    out = write_mp4(frames, tmp_path / "anim.mp4", fps=6)
    info = probe_video(out)
    assert info.frame_count == 12 and info.size == (60, 40) and info.fps == pytest.approx(6)
    means = [float(f.mean()) for f in iter_frames(out)]
    assert means == pytest.approx([20 * k for k in range(12)], abs=3)
