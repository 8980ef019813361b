"""Video timing, geometry and partial files, on clips cut from the real sample videos with the bundled ffmpeg.

Every expectation is read back from the written file with ffmpeg itself (``showinfo``
per-frame pts, ``framecrc`` audio packets, the stream summary), not from fgfem's own probe.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from fgfem.aus import parse_au_specs
from fgfem.cli import run
from fgfem.editor import Editor
from fgfem.errors import FgfemError
from fgfem.render import render_video
from fgfem.video import (
    WRITABLE_SUFFIXES,
    VideoWriter,
    ffmpeg_exe,
    iter_frames,
    probe_video,
    remove_stale_partials,
)

REPO = Path(__file__).resolve().parents[2]


def ffmpeg(*args: object) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-v", "error", "-y", *map(str, args)], check=True, timeout=120)


def frame_times(path: Path) -> list[float]:
    """Presentation time of every decoded frame, as ffmpeg's showinfo prints it."""
    log = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path), "-map", "0:v:0", "-vf", "showinfo",
                          "-f", "null", "-"], capture_output=True, text=True, check=True, timeout=120).stderr
    return [float(t) for t in re.findall(r"pts_time:(-?[\d.]+)", log)]


def audio_packets(path: Path) -> tuple[float, float]:
    """(start, end) seconds of the first audio stream, from its packets (stream copy, nothing decoded)."""
    text = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:a:0", "-c", "copy",
                           "-f", "framecrc", "-"], capture_output=True, text=True, check=True, timeout=60).stdout
    num, den = map(int, re.search(r"#tb 0: (\d+)/(\d+)", text).groups())
    rows = [(int(p), int(d)) for p, d in re.findall(r"^0,\s*-?\d+,\s*(-?\d+),\s*(\d+),", text, re.MULTILINE)]
    return min(p for p, _ in rows) * num / den, max(p + d for p, d in rows) * num / den


def video_stream(path: Path) -> str:
    log = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
    return next(line for line in log.splitlines() if "Video:" in line)


def assert_same_times(got: list[float], want: list[float], fps: float) -> None:
    assert len(got) == len(want)
    worst = max(abs(a - b) for a, b in zip(got, want, strict=True))
    assert worst < 0.5 / fps, f"a frame moved by {worst:.4f} s"


@pytest.fixture(scope="module")
def clips(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Short real clips from single_face.mp4 (a face, 30 fps, MP3 audio), small so renders stay quick.

    - ``base``: the first 12 frames at 320x180 with 0.4 s of AAC audio;
    - ``offset``: ``base`` with its video starting 0.84 s after its audio (``-itsoffset``, stream copy);
    - ``offset1``: the same with a one-frame (0.033 s) offset;
    - ``vfr``: frames 0..7 at 30 fps, then every 3rd frame up to frame 25 (variable frame rate);
    - ``long_audio``: ``base`` with the sample's whole 2.4 s sound track under 0.4 s of video.
    """
    src = samples / "pyfeat" / "single_face.mp4"
    folder = tmp_path_factory.mktemp("timing")
    made = {name: folder / f"{name}.mp4" for name in ("base", "offset", "offset1", "vfr", "long_audio")}
    ffmpeg("-i", src, "-vf", "scale=320:180", "-frames:v", 12, "-t", 0.4, "-c:v", "libx264", "-crf", 16,
           "-c:a", "aac", made["base"])
    for name, offset in (("offset", 0.84), ("offset1", 0.033)):
        ffmpeg("-itsoffset", offset, "-i", made["base"], "-i", made["base"], "-map", "0:v", "-map", "1:a",
               "-c", "copy", made[name])
    ffmpeg("-i", src, "-vf", r"scale=320:180,select='lt(n\,8)+not(mod(n-8\,3))'", "-frames:v", 14,
           "-fps_mode", "passthrough", "-c:v", "libx264", "-crf", 16, "-c:a", "aac", made["vfr"])
    ffmpeg("-i", made["base"], "-i", src, "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac",
           made["long_audio"])
    return made


# --- the clips really are what the tests need ---------------------------------------------------------


def test_the_derived_clips_have_the_timing_they_claim(clips: dict[str, Path]) -> None:
    assert frame_times(clips["offset"])[0] == pytest.approx(0.84, abs=1e-3)
    assert audio_packets(clips["offset"])[0] == pytest.approx(0.0, abs=0.03)
    gaps = np.diff(frame_times(clips["vfr"]))
    assert gaps[:8] == pytest.approx(1 / 30, abs=1e-3) and gaps[8:] == pytest.approx(0.1, abs=1e-3)


# --- probe: every frame's presentation time -----------------------------------------------------------


@pytest.mark.parametrize("name", ["offset", "vfr"])
def test_probe_records_each_frames_presentation_time(clips: dict[str, Path], name: str) -> None:
    info = probe_video(clips[name])
    assert info.timing is not None
    assert info.timing.times == pytest.approx(frame_times(clips[name]), abs=1e-6)
    assert info.frame_count == len(info.timing.pts)
    assert info.start_time == pytest.approx(0.84 if name == "offset" else 0.0, abs=1e-3)


def test_probe_of_a_real_variable_rate_phone_video(samples: Path) -> None:
    """face_noface.mov: 30 fps, then 24 fps; its audio starts 2.4 s in."""
    path = samples / "pyfeat" / "face_noface.mov"
    info = probe_video(path)
    times = info.timing.times
    assert times == pytest.approx(frame_times(path), abs=1e-6)
    gaps = np.diff(times)
    assert gaps[0] == pytest.approx(1 / 30, abs=1e-4) and gaps[-1] == pytest.approx(1 / 24, abs=1e-4)
    assert info.color.space == "bt709" and info.color.range == "tv"


# --- writing: times, offsets, audio ----------------------------------------------------------------------


def _copy(src: Path, out: Path, **kwargs: object) -> VideoWriter:
    """Re-encode ``src`` frame by frame through VideoWriter with everything its probe says."""
    info = probe_video(src)
    with VideoWriter(out, info.fps, info.size, timing=info.timing, sar=info.sar, color=info.color,
                     audio_from=src if info.has_audio else None, **kwargs) as writer:
        for frame in iter_frames(src):
            writer.write(frame)
    return writer


@pytest.mark.parametrize("name", ["offset", "offset1", "vfr"])
def test_writer_keeps_every_frame_time_and_the_audio_offset(clips: dict[str, Path], tmp_path: Path,
                                                            name: str) -> None:
    src = clips[name]
    out = tmp_path / "out.mp4"
    _copy(src, out)
    assert_same_times(frame_times(out), frame_times(src), 30)
    assert audio_packets(out) == pytest.approx(audio_packets(src), abs=0.5 / 30)


def _raw_first(path: Path, stream: str) -> float:
    """The first timestamp of a stream exactly as the file holds it (``-copyts``: no shift to zero)."""
    text = subprocess.run([ffmpeg_exe(), "-v", "error", "-copyts", "-i", str(path), "-map", f"0:{stream}:0",
                           "-c", "copy", "-f", "framecrc", "-"], capture_output=True, text=True, check=True).stdout
    num, den = map(int, re.search(r"#tb 0: (\d+)/(\d+)", text).groups())
    return min(int(p) for p in re.findall(r"^0,\s*-?\d+,\s*(-?\d+),", text, re.MULTILINE)) * num / den


@pytest.mark.parametrize("audio_delay", [0.0, 1.2])
def test_mpegts_offsets_survive(clips: dict[str, Path], tmp_path: Path, audio_delay: float) -> None:
    """MPEG-TS starts its clock at 1.4 s, and ffmpeg, asked for the video alone, moves it to zero.

    Video 0.84 s after the audio, or audio 0.36 s after the video: the difference of the
    first timestamps is the same in the output, and so are all frame intervals.
    """
    src = tmp_path / "clip.ts"
    ffmpeg("-i", clips["offset"], "-itsoffset", audio_delay, "-i", clips["offset"], "-map", "0:v", "-map", "1:a",
           "-c:v", "copy", "-c:a", "aac", src)
    out = tmp_path / "out.mp4"
    _copy(src, out)
    want = _raw_first(src, "v") - _raw_first(src, "a")
    assert want == pytest.approx(0.84 - audio_delay, abs=0.03)
    assert _raw_first(out, "v") - _raw_first(out, "a") == pytest.approx(want, abs=0.5 / 30)
    assert probe_video(out).timing.times == pytest.approx(probe_video(src).timing.times, abs=1e-4)


def test_long_jittery_timing_goes_through_a_filter_script(tmp_path: Path) -> None:
    """6000 frames 32 to 35 ms apart, as phones record: too many runs for one command-line argument."""
    from fgfem.video import VideoTiming

    rng = np.random.default_rng(0)
    pts = np.concatenate([[0], np.cumsum(rng.choice([32, 33, 34, 35], size=5999))]).tolist()
    timing = VideoTiming(time_base=Fraction(1, 1000), pts=tuple(int(p) for p in pts), last_duration=33)
    out = tmp_path / "phone.mkv"
    writer = VideoWriter(out, 30, (16, 16), timing=timing, preset="ultrafast")
    assert len(writer._video_filter()) > 50_000
    frame = np.zeros((16, 16, 3), np.uint8)
    with writer:
        for _ in pts:
            writer.write(frame)
    assert frame_times(out) == pytest.approx([p / 1000 for p in pts], abs=1e-6)
    assert writer._script is not None and not writer._script.exists()  # the script went with the partials


def test_writer_without_timing_is_constant_rate_from_zero(tmp_path: Path) -> None:
    out = tmp_path / "cfr.mp4"
    with VideoWriter(out, 12.5, (32, 32)) as writer:
        for _ in range(5):
            writer.write(np.zeros((32, 32, 3), np.uint8))
    assert frame_times(out) == pytest.approx([0, 0.08, 0.16, 0.24, 0.32], abs=1e-4)


def test_audio_longer_than_the_video_is_cut_and_said(clips: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    writer = _copy(clips["long_audio"], out)
    start, end = audio_packets(out)
    assert end == pytest.approx(0.4, abs=0.05)  # cut at the video's end
    assert any(re.fullmatch(r"audio cut at the video's end: 0\.4\d s of its 2\.4\d s kept", n) for n in writer.notes)
    shorter = _copy(clips["base"], tmp_path / "base.mp4")
    assert not any("audio" in note for note in shorter.notes)


# --- geometry and colour -----------------------------------------------------------------------------------


def test_sample_aspect_ratio_and_colour_tags_survive(samples: Path, tmp_path: Path) -> None:
    """480x360 stored, SAR 4:3 (shown 16:9), tagged bt709: the output says the same."""
    src = tmp_path / "anamorphic.mp4"
    tags = "setparams=range=tv:colorspace=bt709:color_primaries=bt709:color_trc=bt709"
    ffmpeg("-i", samples / "pyfeat" / "single_face.mp4", "-vf",
           f"scale=480:360:out_color_matrix=bt709,setsar=4/3,{tags}", "-frames:v", 6, "-c:v", "libx264", "-an", src)
    assert "yuv420p(tv, bt709, progressive), 480x360 [SAR 4:3 DAR 16:9]" in video_stream(src)
    out = tmp_path / "out.mp4"
    _copy(src, out)
    line = video_stream(out)
    assert "480x360 [SAR 4:3 DAR 16:9]" in line
    assert "yuv420p(tv, bt709" in line and "unknown" not in line
    for a, b in zip(iter_frames(src), iter_frames(out), strict=True):  # the bt709 matrix both ways
        assert np.abs(a.astype(int) - b).mean() < 2.5


def test_odd_size_is_padded_for_h264_and_said_kept_for_vp9(samples: Path, tmp_path: Path) -> None:
    src = tmp_path / "odd.mkv"
    ffmpeg("-i", samples / "pyfeat" / "single_face.mp4", "-vf", "scale=641:361,format=yuv444p", "-frames:v", 4,
           "-c:v", "libx264", "-pix_fmt", "yuv444p", "-an", src)
    assert probe_video(src).size == (641, 361)
    h264 = _copy(src, tmp_path / "odd.mp4")
    assert probe_video(tmp_path / "odd.mp4").size == (642, 362)
    assert any("641x361 padded to 642x362" in note for note in h264.notes)
    vp9 = _copy(src, tmp_path / "odd.webm")
    assert probe_video(tmp_path / "odd.webm").size == (641, 361) and vp9.notes == []


# --- output formats ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", WRITABLE_SUFFIXES)
def test_every_writable_format_keeps_frames_and_times(clips: dict[str, Path], tmp_path: Path, suffix: str) -> None:
    src = clips["vfr"]
    out = tmp_path / f"out{suffix}"
    writer = _copy(src, out)
    want, got = frame_times(src), frame_times(out)
    assert len(got) == len(want)
    if suffix == ".gif":  # hundredths of a second, no sound
        assert got == pytest.approx(want, abs=0.006)
        assert "audio" not in "".join(video_stream(out)) and any("no sound" in n for n in writer.notes)
    elif suffix == ".avi":  # one tick per frame at the average rate
        assert_same_times(got, want, 30)
    else:
        assert got == pytest.approx(want, abs=1e-3)  # Matroska stores milliseconds
        assert probe_video(out).has_audio


def test_avi_says_it_cannot_delay_the_first_frame(clips: dict[str, Path], tmp_path: Path) -> None:
    writer = _copy(clips["offset"], tmp_path / "out.avi")
    assert any(".avi cannot start the picture later" in note for note in writer.notes)
    assert frame_times(tmp_path / "out.avi")[1:] == pytest.approx(frame_times(clips["offset"])[1:], abs=0.5 / 30)


def test_unsupported_output_is_one_line_listing_what_works(tmp_path: Path) -> None:
    with pytest.raises(FgfemError, match=r"name it \.mp4, \.m4v, \.mov, \.mkv, \.webm, \.avi or \.gif"):
        VideoWriter(tmp_path / "out.flv", 25, (32, 32))


# --- render: the whole pipeline on real clips -------------------------------------------------------------


@pytest.mark.parametrize("name", ["offset", "vfr"])
def test_render_keeps_offset_and_per_frame_times(editor: Editor, clips: dict[str, Path], tmp_path: Path,
                                                 name: str) -> None:
    src = clips[name]
    out = tmp_path / f"{name}_smile.mp4"
    stats = render_video(editor, src, out, parse_au_specs(["12=+1"]), batch=8)
    want, got = frame_times(src), frame_times(out)
    print(f"\n{name}: frame times in  {[round(t, 3) for t in want]}")
    print(f"{name}: frame times out {[round(t, 3) for t in got]}")
    print(f"{name}: audio in {audio_packets(src)}, out {audio_packets(out)}")
    assert stats.frames == len(want) and stats.edited > 0
    assert_same_times(got, want, 30)
    assert audio_packets(out) == pytest.approx(audio_packets(src), abs=0.5 / 30)


def test_aus_time_is_the_presentation_time(clips: dict[str, Path]) -> None:
    from fgfem.au_reading.measure import measure_video
    from fgfem.faces import get_backend

    src = clips["vfr"]
    records = list(measure_video(src, get_backend("dlib")))
    times = frame_times(src)
    assert len(records) > len(times) // 2
    for record in records:
        assert record.time_s == pytest.approx(times[record.frame], abs=1e-6)
    assert records[-1].time_s == pytest.approx(times[-1], abs=1e-6)  # 1.7 s, not the 0.43 s of index / fps


def test_cli_render_summary_says_what_changed(clips: dict[str, Path], tmp_path: Path, capsys) -> None:
    from fgfem.nets import Generator, NetConfig
    from fgfem.weights import save_generator

    cfg = NetConfig(name="tiny-test", conv_dim=8, critic_dim=8)
    weights = tmp_path / "tiny.safetensors"
    save_generator(weights, Generator(cfg), cfg)
    out = tmp_path / "cut.mp4"
    code = run(["render", str(clips["long_audio"]), "--au", "12=+1", "-o", str(out), "--weights", str(weights),
                "--device", "cpu", "--backend", "dlib"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "audio cut at the video's end: 0.4" in " ".join(captured.out.split())
    assert run(["render", str(clips["base"]), "--au", "12=+1", "-o", str(tmp_path / "x.flv"),
                "--weights", str(weights)]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "name the output .mp4, .m4v, .mov, .mkv, .webm, .avi or .gif" in err and "Traceback" not in err


# --- partial files --------------------------------------------------------------------------------------------


def _partials(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name)


def _wait_for_partial(process: subprocess.Popen[bytes], folder: Path, timeout: float = 90, *,
                      written: bool = False) -> None:
    """Until a partial file exists (and, with ``written``, ffmpeg has begun writing into it).

    ffmpeg opens its output at the first encoded packet: a partial killed before that would
    be recreated by the orphaned encoder after a cleanup, which is not what is tested here.
    """
    deadline = time.monotonic() + timeout
    while not _partials(folder) or (written and not any((folder / n).stat().st_size for n in _partials(folder))):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            out, err = process.communicate()
            pytest.fail(f"no partial file appeared (exit {process.returncode}): {err.decode()[-500:]}")
        time.sleep(0.05)


def test_sigterm_during_render_leaves_nothing(samples: Path, tmp_path: Path) -> None:
    from fgfem.nets import Generator, NetConfig
    from fgfem.weights import save_generator

    cfg = NetConfig(name="tiny-test", conv_dim=8, critic_dim=8)
    weights = tmp_path / "tiny.safetensors"
    save_generator(weights, Generator(cfg), cfg)
    folder = tmp_path / "out"
    folder.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "fgfem", "render", str(samples / "pyfeat" / "single_face.mp4"),
                                "--au", "12=+1", "-o", str(folder / "clip.mp4"), "--weights", str(weights),
                                "--device", "cpu", "--backend", "dlib"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    _wait_for_partial(process, folder)
    time.sleep(0.5)  # a few frames into the encoder
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in err.decode()
    assert list(folder.iterdir()) == []


_KILLED_WRITER = """
import sys, numpy as np
from fgfem.video import VideoWriter
with VideoWriter(sys.argv[1], 25, (64, 48)) as writer:
    while True:
        writer.write(np.zeros((48, 64, 3), np.uint8))
"""


def test_kill_9_partial_is_removed_by_the_next_run_and_said(tmp_path: Path) -> None:
    out = tmp_path / "clip.mp4"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(out)], stderr=subprocess.PIPE, env=env)
    _wait_for_partial(process, tmp_path, written=True)
    process.kill()
    process.wait()
    left = _partials(tmp_path)
    assert len(left) == 1 and re.fullmatch(rf"\.clip\.partial-video-{process.pid}-\w{{8}}\.mp4", left[0])
    old = tmp_path / ".clip.partial-video-abcd1234.mp4"  # an older fgfem's name, untouched for an hour
    old.write_bytes(b"x")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    recent = tmp_path / ".clip.partial-abcd1234.mp4"  # may still be written: kept
    recent.write_bytes(b"x")
    alive = tmp_path / f".clip.partial-video-{os.getpid()}-abcd1234.mp4"  # a running writer's: kept
    alive.write_bytes(b"x")
    other = tmp_path / ".other.partial-video-1-abcd1234.mp4"  # another output's: kept
    other.write_bytes(b"x")
    with VideoWriter(out, 25, (64, 48)) as writer:
        writer.write(np.zeros((48, 64, 3), np.uint8))
    assert any(note.startswith("removed 2 partial files of an interrupted earlier run") and left[0] in note
               for note in writer.notes)
    assert _partials(tmp_path) == sorted([recent.name, alive.name, other.name])
    assert remove_stale_partials(out) == []


def test_terminate_cleanly_restores_the_handlers() -> None:
    from fgfem.video import Terminated, terminate_cleanly

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated) as stop, terminate_cleanly():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
    assert stop.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


def test_fractional_sar_is_exact(tmp_path: Path) -> None:
    out = tmp_path / "sar.mkv"
    with VideoWriter(out, 25, (64, 48), sar=Fraction(186, 157)) as writer:
        writer.write(np.zeros((48, 64, 3), np.uint8))
    assert "SAR 186:157" in video_stream(out)
